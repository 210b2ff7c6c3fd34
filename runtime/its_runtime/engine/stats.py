"""What the engine reports about itself, as one typed snapshot.

``/ready`` and the scrape-time collector used to guess at the engine's attributes
(``getattr``/``hasattr`` on whatever object the executor was). Now the engine returns
an :class:`EngineStats` from ``stats()``; a lazy engine returns :meth:`EngineStats.loading`
until the engine exists, and a plain executor (a test model) is described by
:meth:`EngineStats.custom`. The collector in ``observability.collectors`` reads it
through a structural Protocol, so observability still imports nothing from the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class EngineStats:
    #: The backend that runs batches (``tensorrt``, ``eager``, ...), ``loading`` or ``custom``.
    backend: str
    #: (backend skipped or failed at load, cause) pairs, in order.
    fallbacks: tuple[tuple[str, str], ...] = ()
    #: Engine-cache counters: hits, misses, builds, evictions, corrupt_rebuilds, ...
    cache: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: CUDA caching-allocator bytes (allocated, reserved, peaks); empty off CUDA.
    memory: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def loading(cls) -> EngineStats:
        return cls(backend="loading")

    @classmethod
    def custom(cls) -> EngineStats:
        """An executor that is not this runtime's engine (a model in a test, a benchmark)."""
        return cls(backend="custom")


@dataclasses.dataclass(frozen=True)
class FixedStats:
    """A stats source that always reports the same snapshot."""

    snapshot: EngineStats

    def stats(self) -> EngineStats:
        return self.snapshot

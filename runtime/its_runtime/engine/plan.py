"""One plan for batch sizes, derived from the config once and shared by engine and batcher.

``batching.maxBatchSize``, the compiled buckets and the warm-up sizes used to be worked
out in three places (the lazy engine, the batcher's cap, the engine's input spec), so
they could drift: the batcher did not know that the engine pads a batch of 5 to its
bucket of 8. A :class:`BatchPlan` is a frozen value: ``its_runtime.main`` derives it
from the config with :func:`from_config` and hands the same object to the engine (which
builds its :class:`~its_runtime.engine.spec.InputSpec` from it) and to the batcher
(which caps, forms and predicts batches by it). It holds no torch objects, so the CPU
scheduler can import it without touching the device.
"""

from __future__ import annotations

import bisect
import dataclasses

from its_runtime import config


def batch_buckets(max_batch: int, extra: list[int] | tuple[int, ...] = ()) -> tuple[int, ...]:
    """Powers of two below ``max_batch``, ``max_batch`` itself and any ``extra`` sizes."""
    sizes = {max_batch}
    b = 1
    while b < max_batch:
        sizes.add(b)
        b *= 2
    sizes.update(s for s in extra if 1 <= s <= max_batch)
    return tuple(sorted(sizes))


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """The batch sizes the engine runs (its buckets) and the batcher may form."""

    max_batch_size: int
    opt_batch_size: int
    #: Sorted batch sizes the engine runs; a batch is padded up to the next one.
    buckets: tuple[int, ...]
    #: Triton's preferred batch sizes (each also a bucket), sorted.
    preferred_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"buckets must be sorted distinct sizes, got {self.buckets}")
        if self.buckets[0] < 1 or self.buckets[-1] != self.max_batch_size:
            raise ValueError(f"buckets {self.buckets} must lie in 1..{self.max_batch_size}")
        if any(not 1 <= s <= self.max_batch_size for s in self.preferred_sizes):
            raise ValueError(f"preferred sizes {self.preferred_sizes} exceed the maximum")

    @property
    def warmup_sizes(self) -> tuple[int, ...]:
        """Warm-up runs every bucket once, so no request pays for a compile."""
        return self.buckets

    def bucket_for(self, batch: int) -> int:
        """The smallest bucket that holds ``batch`` frames."""
        if batch < 1 or batch > self.max_batch_size:
            raise ValueError(f"batch size {batch} is outside 1..{self.max_batch_size}")
        return self.buckets[bisect.bisect_left(self.buckets, batch)]

    def capped(self, limit: int) -> BatchPlan:
        """This plan for an executor that takes at most ``limit`` frames a batch."""
        if limit >= self.max_batch_size:
            return self
        return BatchPlan(
            max_batch_size=limit,
            opt_batch_size=min(self.opt_batch_size, limit),
            buckets=(*(b for b in self.buckets if b < limit), limit),
            preferred_sizes=tuple(s for s in self.preferred_sizes if s <= limit),
        )


def from_config(batching: config.BatchingConfig) -> BatchPlan:
    """The plan for ``model.batching``: buckets are powers of two, opt and preferred sizes."""
    top = batching.max_batch_size
    return BatchPlan(
        max_batch_size=top,
        opt_batch_size=batching.opt_batch_size,
        buckets=batch_buckets(top, [batching.opt_batch_size, *batching.preferred_batch_sizes]),
        preferred_sizes=tuple(sorted({s for s in batching.preferred_batch_sizes if s <= top})),
    )

"""What the batch scheduler reports, as typed values, and who may listen.

The scheduler used to update Prometheus objects itself (a dozen ``metrics.X`` calls
spread over its queue and dispatch code), which tied a CPU scheduling policy to one
exporter and made its numbers awkward to test. Now it emits small frozen values to a
:class:`SchedulerObserver`: the exporter is one observer
(``observability.metrics.PrometheusSchedulerObserver``, wired by the serving app), a
test can collect the values in a list, and :class:`NullObserver` drops them. This
module imports nothing, so the scheduler can depend on it without reaching the
Prometheus registry (an import-linter contract keeps ``serving.batching`` off
``observability.metrics``).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    """Frames waiting in the queue now."""

    frames: int


@dataclasses.dataclass(frozen=True)
class BatchStarted:
    """A batch left the queue: how long each of its frames waited, in seconds."""

    queue_s: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class BatchDone:
    """A batch ran: its frame count and its compute time (stage + run), in seconds."""

    size: int
    compute_s: float


@dataclasses.dataclass(frozen=True)
class FrameDone:
    """One frame's outcome: answered (``ok``) or failed with ``reason`` (a metric label)."""

    latency_s: float
    ok: bool
    reason: str | None = None


SchedulerStat = QueueDepth | BatchStarted | BatchDone | FrameDone


class SchedulerObserver(Protocol):
    """Told every stat the scheduler emits, on the event loop; must not block."""

    def record(self, stat: SchedulerStat) -> None: ...


class NullObserver:
    """Drops every stat."""

    def record(self, stat: SchedulerStat) -> None:
        pass

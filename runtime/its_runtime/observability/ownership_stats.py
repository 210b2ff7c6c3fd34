"""What camera ownership (scale-out across replicas) reports, and its Prometheus form.

The data plane's ownership code (``dataplane/ownership.py``) calls the
:class:`OwnershipObserver` methods; :class:`PrometheusOwnership` turns them into the
metrics below. Kept apart from :mod:`.dataplane_stats` because it is one topic with
its own dashboards: how many cameras this replica runs, how many fit nowhere, and how
long each hand-off left a camera unanalysed.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from its_runtime.observability.metrics import REGISTRY

#: Seconds without analysis while a camera moved between replicas. A graceful
#: rebalance waits out the fence (about leaseDuration - renewPeriod); a failover after
#: kill -9 about leaseDuration + renewPeriod.
HANDOFF_BUCKETS: tuple[float, ...] = (
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

HANDOFF_GAP = Histogram(
    "its_camera_handoff_gap_seconds",
    "Seconds between the previous replica's last analysed frame of a camera and this "
    "replica's first, when this replica took the camera over.",
    ["camera"],
    buckets=HANDOFF_BUCKETS,
    registry=REGISTRY,
)
HANDOFF_FRAMES_LOST = Counter(
    "its_camera_handoff_frames_lost_total",
    "Frames not analysed during hand-offs (the gap times the camera's fps).",
    ["camera"],
    registry=REGISTRY,
)
CAMERAS = Gauge(
    "its_cameras",
    "Cameras of the pipeline by state, as this replica sees them: running (here), "
    "pending (assigned here, waiting for the previous holder to stop), unassigned "
    "(fit on no replica: capacity), total.",
    ["state"],
    registry=REGISTRY,
)
MEMBERS = Gauge(
    "its_ownership_members",
    "Live replicas of the pipeline (membership Leases) this replica sees.",
    registry=REGISTRY,
)
FENCED = Gauge(
    "its_ownership_fenced",
    "1 while this replica cannot renew its Lease and analyses nothing.",
    registry=REGISTRY,
)
TICK_FAILURES = Counter(
    "its_ownership_tick_failures_total",
    "Ownership rounds (renew and list of Leases) that failed.",
    registry=REGISTRY,
)


class OwnershipObserver(Protocol):
    def handoff(self, camera: str, gap_s: float, frames_lost: int) -> None: ...

    def cameras(self, *, running: int, pending: int, unassigned: int, total: int) -> None: ...

    def members(self, n: int, *, fenced: bool) -> None: ...

    def tick_failed(self) -> None: ...


class PrometheusOwnership:
    def handoff(self, camera: str, gap_s: float, frames_lost: int) -> None:
        HANDOFF_GAP.labels(camera).observe(gap_s)
        HANDOFF_FRAMES_LOST.labels(camera).inc(frames_lost)

    def cameras(self, *, running: int, pending: int, unassigned: int, total: int) -> None:
        for state, n in (
            ("running", running),
            ("pending", pending),
            ("unassigned", unassigned),
            ("total", total),
        ):
            CAMERAS.labels(state).set(n)

    def members(self, n: int, *, fenced: bool) -> None:
        MEMBERS.set(n)
        FENCED.set(1 if fenced else 0)

    def tick_failed(self) -> None:
        TICK_FAILURES.inc()


PROMETHEUS = PrometheusOwnership()

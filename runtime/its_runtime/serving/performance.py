"""The performance report: what ``GET /v1/performance`` answers and what alerts watch.

Prometheus histograms answer "how was it over the last five minutes" for dashboards;
this module answers "how is it now" from inside the process, so an operator (or the
``/v1/performance`` endpoint during a benchmark) reads exact percentiles without a
Prometheus server. It counts every frame into time buckets of a
latency histogram over a sliding window (``slo.windowS``) and derives p50/p95/p99 of
the answered frames, p99 and SLA compliance over ALL frames (a failed or shed frame is
a miss, so shedding can never read as compliance), throughput against the target FPS,
error rate, queue depth and GPU utilisation. Recording is O(1) and a report costs the
same at 10 fps as at 2,000 fps (buckets x bins), so polling it does not stall the
event loop the frames run on.

Alerts compare these to thresholds from :class:`~its_runtime.config.SloConfig`. An
alert is logged and counted once when it starts and once (logged) when it clears, not
at every evaluation, so a long breach does not flood the log. Degradation compares the
recent half of the window to the previous half (p95 latency ratio, error rate), which
catches a slow drift that a fixed threshold set with headroom would not.

It is fed by the batcher (one :meth:`PerformanceTracker.record` per frame) and runs on
the event loop thread only, so it needs no lock.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from its_runtime.config import SloConfig
from its_runtime.observability import metrics

log = logging.getLogger(__name__)

#: Fewer frames than this in a window (or half-window) give no latency alert or verdict.
MIN_FRAMES = 20
#: Degradation also needs the recent p95 to be this much worse in absolute terms (s),
#: so sub-millisecond jitter on a fast model is not called a degradation.
MIN_DEGRADATION_S = 0.005
#: The window is kept as this many time buckets (each at least MIN_BUCKET_S wide).
BUCKETS_PER_WINDOW = 60
MIN_BUCKET_S = 0.1
#: Latency histogram: log-spaced bins 1 % wide from 10 us to 120 s (1,638 bins). Each
#: bin also keeps the sum of its latencies, so a percentile reads the mean of the frames
#: in its bin: exact when they are alike, within 0.5 % otherwise.
_MIN_S, _MAX_S, _RATIO = 1e-5, 120.0, 1.01
_LOG_RATIO = math.log(_RATIO)
BINS = math.ceil(math.log(_MAX_S / _MIN_S) / _LOG_RATIO) + 1


def _bin(latency_s: float) -> int:
    if latency_s <= _MIN_S:
        return 0
    return min(BINS - 1, int(math.log(latency_s / _MIN_S) / _LOG_RATIO) + 1)


class _Bucket:
    """Frames of one time slice: counts, and a histogram of the answered ones."""

    __slots__ = ("counts", "failed", "start", "sums", "within_slo")

    def __init__(self, start: float) -> None:
        self.start = start
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.sums = np.zeros(BINS, dtype=np.float64)
        self.failed = 0
        self.within_slo = 0


@dataclasses.dataclass(frozen=True)
class WindowStats:
    #: Every frame: answered, failed and shed.
    frames: int
    errors: int
    #: Percentiles of the answered frames.
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    #: p99 with every failed or shed frame counted as a miss (None: over the SLO by
    #: more than 1 % of frames failing, or no frames).
    p99_all_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.frames if self.frames else 0.0


def _percentile(counts: np.ndarray[Any, Any], sums: np.ndarray[Any, Any], q: float) -> float:
    """Latency (s) at quantile ``q`` of the histogram (nearest rank, bin mean)."""
    total = int(counts.sum())
    rank = max(1, math.ceil(q * total))
    i = int(np.searchsorted(np.cumsum(counts), rank))
    return float(sums[i] / counts[i])


def _stats(buckets: Sequence[_Bucket]) -> WindowStats:
    if not buckets:
        return WindowStats(0, 0, None, None, None, None)
    counts = np.sum([b.counts for b in buckets], axis=0)
    sums = np.sum([b.sums for b in buckets], axis=0)
    failed = sum(b.failed for b in buckets)
    answered = int(counts.sum())
    frames = answered + failed
    if not answered:
        return WindowStats(frames, failed, None, None, None, None)
    p50, p95, p99 = (_percentile(counts, sums, q) * 1000.0 for q in (0.50, 0.95, 0.99))
    # Failed frames sort after every answered one: p99 over all frames lies among the
    # answered ones only while at most 1 % failed.
    rank_all = max(1, math.ceil(0.99 * frames))
    p99_all = (
        _percentile(counts, sums, rank_all / answered) * 1000.0 if rank_all <= answered else None
    )
    return WindowStats(frames, failed, p50, p95, p99, p99_all)


class PerformanceTracker:
    """Sliding-window latency, throughput and error statistics with alerting.

    Frames are counted into time buckets of a fixed latency histogram, so ``record``
    is O(1) and ``report`` is O(buckets x bins) whatever the frame rate: a scrape or a
    ``/v1/performance`` poll never walks every frame of the window on the event loop.
    """

    def __init__(
        self,
        slo: SloConfig,
        *,
        target_fps: float | None = None,
        queue_depth: Callable[[], int] | None = None,
        gpu_utilization: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slo = slo
        self.target_fps = slo.min_fps if slo.min_fps is not None else target_fps
        self._queue_depth = queue_depth
        self._gpu = gpu_utilization
        self._clock = clock
        #: When the first frame was recorded: throughput is frames over the time since
        #: then (at most the window), so a slow warm-up does not read as low throughput.
        self._since: float | None = None
        self._width = max(MIN_BUCKET_S, slo.window_s / BUCKETS_PER_WINDOW)
        self._slo_s = slo.p99_latency_ms / 1000.0
        self._buckets: collections.deque[_Bucket] = collections.deque()
        self._active: dict[str, str] = {}
        self.breaches: collections.Counter[str] = collections.Counter()

    def record(self, latency_s: float, ok: bool) -> None:
        """One frame's outcome; ``latency_s`` counts only for frames that were answered.

        A failed or shed frame is an SLO miss: it counts in ``frames`` and against
        compliance, never in the answered percentiles it would otherwise flatter.
        """
        now = self._clock()
        if self._since is None:
            self._since = now
        start = math.floor(now / self._width) * self._width
        if not self._buckets or self._buckets[-1].start < start:
            self._buckets.append(_Bucket(start))
        b = self._buckets[-1]
        if not ok:
            b.failed += 1
            return
        i = _bin(latency_s)
        b.counts[i] += 1
        b.sums[i] += latency_s
        if latency_s <= self._slo_s:
            b.within_slo += 1

    def _window(self, now: float) -> list[_Bucket]:
        horizon = now - self.slo.window_s
        while self._buckets and self._buckets[0].start + self._width <= horizon:
            self._buckets.popleft()
        return list(self._buckets)

    def report(self) -> dict[str, Any]:
        """The report as JSON-ready data; also evaluates the alerts."""
        now = self._clock()
        buckets = self._window(now)
        whole = _stats(buckets)
        since = now if self._since is None else self._since
        span = min(self.slo.window_s, max(now - since, 1e-9))
        answered = whole.frames - whole.errors
        fps = answered / span
        # Share of ALL frames answered within the SLO: a failed or shed frame is a miss.
        within = sum(b.within_slo for b in buckets)
        compliance = within / whole.frames if whole.frames else None
        half = now - self.slo.window_s / 2
        recent = _stats([b for b in buckets if b.start >= half])
        previous = _stats([b for b in buckets if b.start < half])
        degraded, degraded_why = self._degradation(recent, previous)
        depth = self._queue_depth() if self._queue_depth is not None else None
        gpu = self._gpu() if self._gpu is not None else None
        alerts = self._evaluate(whole, fps, span, depth)
        metrics.FRAMES_PER_SECOND.set(fps)
        if compliance is not None:
            metrics.SLA_COMPLIANCE.set(compliance)
        metrics.DEGRADED.set(1.0 if degraded else 0.0)
        return {
            "window_s": self.slo.window_s,
            "frames": whole.frames,
            "latency_ms": {"p50": whole.p50_ms, "p95": whole.p95_ms, "p99": whole.p99_ms},
            "sla": {
                "latency_ms": self.slo.p99_latency_ms,
                "compliance": compliance,
                # Over all frames: more than 1 % failed or shed is a p99 beyond the SLO.
                "p99_all_ms": whole.p99_all_ms,
                "p99_within_slo": None
                if whole.frames == 0
                else whole.p99_all_ms is not None and whole.p99_all_ms <= self.slo.p99_latency_ms,
            },
            "throughput": {
                "fps": fps,
                "target_fps": self.target_fps,
                "ratio_to_target": fps / self.target_fps if self.target_fps else None,
            },
            "errors": {"count": whole.errors, "rate": whole.error_rate},
            "queue_depth": depth,
            "gpu_utilization": gpu,
            "alerts": alerts,
            "breaches_total": dict(self.breaches),
            "degradation": {
                "degraded": degraded,
                "reason": degraded_why,
                "recent": dataclasses.asdict(recent),
                "previous": dataclasses.asdict(previous),
            },
        }

    def _degradation(self, recent: WindowStats, previous: WindowStats) -> tuple[bool, str | None]:
        if recent.frames < MIN_FRAMES or previous.frames < MIN_FRAMES:
            return False, None
        ratio = self.slo.degradation_ratio
        if recent.p95_ms is not None and previous.p95_ms is not None:
            worse = recent.p95_ms - previous.p95_ms
            if recent.p95_ms > ratio * previous.p95_ms and worse >= MIN_DEGRADATION_S * 1000:
                return True, (
                    f"p95 latency rose from {previous.p95_ms:.1f} ms to {recent.p95_ms:.1f} ms"
                )
        limit = max(ratio * previous.error_rate, previous.error_rate + self.slo.max_error_rate)
        if recent.error_rate > limit:
            return True, (
                f"error rate rose from {previous.error_rate:.3f} to {recent.error_rate:.3f}"
            )
        return False, None

    def _evaluate(
        self, whole: WindowStats, fps: float, span: float, depth: int | None
    ) -> dict[str, str]:
        """Current breaches {alert: message}; logs and counts each one when it starts."""
        breaches: dict[str, str] = {}
        slo = self.slo
        p99 = whole.p99_all_ms
        if whole.frames >= MIN_FRAMES and whole.frames > whole.errors:
            if p99 is None:
                breaches["p99_latency"] = (
                    f"p99 latency is above the SLO {slo.p99_latency_ms} ms: "
                    f"{whole.errors} of {whole.frames} frames failed or were shed"
                )
            elif p99 > slo.p99_latency_ms:
                breaches["p99_latency"] = (
                    f"p99 latency {p99:.1f} ms is above the SLO {slo.p99_latency_ms} ms"
                )
        if whole.frames >= MIN_FRAMES and whole.error_rate > slo.max_error_rate:
            breaches["error_rate"] = (
                f"error rate {whole.error_rate:.3f} is above {slo.max_error_rate}"
            )
        # Throughput is judged only once a whole window has been seen.
        if self.target_fps is not None and span >= slo.window_s and fps < self.target_fps:
            breaches["throughput"] = (
                f"throughput {fps:.1f} fps is below the target {self.target_fps} fps"
            )
        if slo.max_queue_depth is not None and depth is not None and depth > slo.max_queue_depth:
            breaches["queue_depth"] = f"queue depth {depth} is above {slo.max_queue_depth}"
        for name, message in breaches.items():
            if name not in self._active:
                log.warning("alert %s started: %s", name, message)
                self.breaches[name] += 1
                metrics.ALERT_BREACHES.labels(name).inc()
                metrics.ALERT_ACTIVE.labels(name).set(1)
        for name in list(self._active):
            if name not in breaches:
                log.info("alert %s cleared", name)
                metrics.ALERT_ACTIVE.labels(name).set(0)
        self._active = breaches
        return breaches

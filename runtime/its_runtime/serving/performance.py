"""The performance report: what ``GET /v1/performance`` answers and what alerts watch.

Prometheus histograms answer "how was it over the last five minutes" for dashboards;
this module answers "how is it now" from inside the process, so an operator (or the
``/v1/performance`` endpoint during a benchmark) reads exact percentiles without a
Prometheus server. It keeps every frame's (time, latency, ok) in a sliding window
(``slo.windowS``) and derives p50/p95/p99, SLA compliance (share of frames within the
SLO latency), throughput against the target FPS, error rate, queue depth and GPU
utilisation.

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
import time
from collections.abc import Callable
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
#: Hard cap on remembered frames (a window at 2,000 fps for 60 s fits).
MAX_FRAMES = 200_000


@dataclasses.dataclass(frozen=True)
class WindowStats:
    frames: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.frames if self.frames else 0.0


def _stats(lat: np.ndarray[Any, np.dtype[np.float64]], ok: np.ndarray[Any, Any]) -> WindowStats:
    good = lat[ok]
    if good.size:
        p50, p95, p99 = (float(v) * 1000.0 for v in np.percentile(good, [50, 95, 99]))
        return WindowStats(int(lat.size), int((~ok).sum()), p50, p95, p99)
    return WindowStats(int(lat.size), int((~ok).sum()), None, None, None)


class PerformanceTracker:
    """Sliding-window latency, throughput and error statistics with alerting."""

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
        self._frames: collections.deque[tuple[float, float, bool]] = collections.deque(
            maxlen=MAX_FRAMES
        )
        self._active: dict[str, str] = {}
        self.breaches: collections.Counter[str] = collections.Counter()

    def record(self, latency_s: float, ok: bool) -> None:
        """One frame's outcome; ``latency_s`` counts only for frames that were answered."""
        now = self._clock()
        if self._since is None:
            self._since = now
        self._frames.append((now, latency_s, ok))

    def _window(self, now: float) -> tuple[np.ndarray[Any, Any], ...]:
        horizon = now - self.slo.window_s
        while self._frames and self._frames[0][0] < horizon:
            self._frames.popleft()
        if not self._frames:
            empty = np.zeros(0)
            return empty, empty, np.zeros(0, dtype=bool)
        arr = np.array(self._frames, dtype=np.float64)
        return arr[:, 0], arr[:, 1], arr[:, 2].astype(bool)

    def report(self) -> dict[str, Any]:
        """The report as JSON-ready data; also evaluates the alerts."""
        now = self._clock()
        at, lat, ok = self._window(now)
        whole = _stats(lat, ok)
        since = now if self._since is None else self._since
        span = min(self.slo.window_s, max(now - since, 1e-9))
        answered = int(ok.sum())
        fps = answered / span
        slo_s = self.slo.p99_latency_ms / 1000.0
        compliance = float((lat[ok] <= slo_s).mean()) if answered else None
        half = now - self.slo.window_s / 2
        recent = _stats(lat[at >= half], ok[at >= half])
        previous = _stats(lat[at < half], ok[at < half])
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
                "p99_within_slo": None
                if whole.p99_ms is None
                else whole.p99_ms <= self.slo.p99_latency_ms,
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
        p99 = whole.p99_ms
        if p99 is not None and whole.frames >= MIN_FRAMES and p99 > slo.p99_latency_ms:
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

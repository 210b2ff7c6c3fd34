"""The runtime's Prometheus registry and the serving layer's metrics.

Names, help texts, buckets and labels are defined in the ``observability`` package and
nowhere else (prefix ``its_``): this module holds the registry and the serving metrics
(HTTP API, batcher, performance report), :mod:`.dataplane_metrics` the data plane's,
and :mod:`.collectors` the scrape-time collectors that read engine and GPU state.
:class:`PrometheusSchedulerObserver` turns the batch scheduler's typed stats
(:mod:`.serving_stats`) into the batcher's metrics, so the scheduler never touches them.
Metrics live in this module's own registry (``REGISTRY``) rather than
prometheus_client's global one, so ``GET /metrics`` shows exactly the runtime's
metrics plus the process collectors, and nothing a library registered.

Latency histograms use explicit buckets that are fine (10 ms apart) from 30 to 150 ms,
so a p99 near the default 100 ms SLO can be read from them, not guessed.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from its_runtime.observability import serving_stats

#: The runtime's registry; ``GET /metrics`` exposes exactly this.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

#: Seconds. Fine steps around the 100 ms SLO so p95/p99 can be read near it.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09,
    0.1, 0.11, 0.12, 0.13, 0.14, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
#: Seconds; compute and decode steps are shorter than whole requests.
STEP_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
    0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
)  # fmt: skip
#: Frames per batch; every size up to 8, then the usual powers and midpoints.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256,
)  # fmt: skip

# ---------------------------------------------------------------------------
# Serving: HTTP API
# ---------------------------------------------------------------------------

REQUEST_LATENCY = Histogram(
    "its_request_latency_seconds",
    "Wall time of an HTTP request, from arrival to response, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUESTS = Counter(
    "its_requests_total",
    "HTTP requests answered, by endpoint and status code.",
    ["endpoint", "code"],
    registry=REGISTRY,
)
REQUESTS_IN_FLIGHT = Gauge(
    "its_requests_in_flight",
    "HTTP requests being handled now.",
    registry=REGISTRY,
)
DECODE_TIME = Histogram(
    "its_decode_seconds",
    "Time to decode and preprocess one frame (image or array) into the model input.",
    ["kind"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
#: One series at 1: the ``server.jpegDecode`` asked for and the decoder in use (gpu|cpu).
JPEG_DECODE_INFO = Gauge(
    "its_jpeg_decode_info",
    "1 for the JPEG decoder HTTP frames use: requested (auto|cpu|gpu) and active (gpu|cpu).",
    ["requested", "active"],
    registry=REGISTRY,
)
#: reason is one of: unsupported (not a 3-component baseline JPEG), error (nvJPEG failed).
JPEG_GPU_FALLBACKS = Counter(
    "its_jpeg_gpu_fallbacks_total",
    "JPEG frames decoded on the CPU although nvJPEG was active, by reason.",
    ["reason"],
    registry=REGISTRY,
)
#: reason is one of: bad_image, bad_shape, bad_request, too_large, queue_full,
#: deadline_exceeded, draining, execution, internal.
ERRORS = Counter(
    "its_errors_total",
    "Frames or requests that failed, by reason.",
    ["reason"],
    registry=REGISTRY,
)
READY = Gauge(
    "its_ready",
    "1 when the runtime is warmed up, not draining and its required dependencies are healthy.",
    registry=REGISTRY,
)
DRAINING = Gauge(
    "its_draining",
    "1 while the runtime drains on SIGTERM (it takes no new work).",
    registry=REGISTRY,
)
WARMUP_TIME = Gauge(
    "its_warmup_seconds",
    "How long the warm-up took, from the start of the serving process's warm-up to ready.",
    registry=REGISTRY,
)

# ---------------------------------------------------------------------------
# Serving: dynamic batcher
# ---------------------------------------------------------------------------

FRAME_LATENCY = Histogram(
    "its_frame_latency_seconds",
    "Latency of one frame, from when its processing started (before decode) to its result.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_TIME = Histogram(
    "its_queue_time_seconds",
    "Time a frame waited in the batcher's queue before its batch started.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
COMPUTE_TIME = Histogram(
    "its_compute_time_seconds",
    "Time to run one batch: collate, model forward and post-processing.",
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "its_batch_size",
    "Frames per executed batch (count = batches run; sum = frames run).",
    buckets=BATCH_SIZE_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "its_queue_depth",
    "Frames waiting in the batcher's queue.",
    registry=REGISTRY,
)
FRAMES = Counter(
    "its_frames_total",
    "Frames answered with detections (rate() of this is frames per second).",
    registry=REGISTRY,
)

# ---------------------------------------------------------------------------
# Serving: performance report and alerts
# ---------------------------------------------------------------------------

FRAMES_PER_SECOND = Gauge(
    "its_frames_per_second",
    "Frames answered per second over the performance report's sliding window.",
    registry=REGISTRY,
)
SLA_COMPLIANCE = Gauge(
    "its_sla_compliance_ratio",
    "Share of frames in the sliding window answered within the latency SLO.",
    registry=REGISTRY,
)
ALERT_BREACHES = Counter(
    "its_alert_breaches_total",
    "Times an alert threshold was crossed (counted when the alert starts), by alert.",
    ["alert"],
    registry=REGISTRY,
)
ALERT_ACTIVE = Gauge(
    "its_alert_active",
    "1 while an alert's threshold is breached, by alert.",
    ["alert"],
    registry=REGISTRY,
)
DEGRADED = Gauge(
    "its_degraded",
    "1 while the recent window is markedly worse than the previous one.",
    registry=REGISTRY,
)


class PrometheusSchedulerObserver:
    """Publishes the batch scheduler's stats (``serving_stats``) as the metrics above.

    It lives next to the metrics it updates; the scheduler only knows its Protocol,
    ``serving_stats.SchedulerObserver``.
    """

    def record(self, stat: serving_stats.SchedulerStat) -> None:
        match stat:
            case serving_stats.QueueDepth(frames=frames):
                QUEUE_DEPTH.set(frames)
            case serving_stats.BatchStarted(queue_s=waits):
                for wait in waits:
                    QUEUE_TIME.observe(wait)
            case serving_stats.BatchDone(size=size, compute_s=compute_s):
                COMPUTE_TIME.observe(compute_s)
                BATCH_SIZE.observe(size)
            case serving_stats.FrameDone(latency_s=latency, ok=True):
                FRAMES.inc()
                FRAME_LATENCY.observe(latency)
            case serving_stats.FrameDone(reason=reason):
                ERRORS.labels(reason or "batcher").inc()

"""Every Prometheus metric of the runtime, defined here and nowhere else.

One module keeps names, help texts, buckets and labels consistent (prefix ``its_``)
and makes the whole set reviewable at a glance; the layers that produce numbers import
the metric objects from here. Metrics live in this module's own registry (``REGISTRY``)
rather than prometheus_client's global one, so ``GET /metrics`` shows exactly the
runtime's metrics plus the process collectors, and nothing a library registered.

Two kinds of metric sit here:

* direct instruments (counters, gauges, histograms) that code updates as things happen;
* scrape-time collectors (:class:`EngineCollector`, :class:`GpuCollector`) that read
  the state another component keeps (the engine's cache statistics, NVML) when
  Prometheus scrapes. The engine produces stats; exporters publish them. Their sources
  are Protocols, so this module depends on no engine or NVML code.

Latency histograms use explicit buckets that are fine (10 ms apart) from 30 to 150 ms,
so a p99 near the default 100 ms SLO can be read from them, not guessed.

Other layers append their definitions in the marked sections at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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

# ---------------------------------------------------------------------------
# Serving: scrape-time collectors for the engine and the GPU
# ---------------------------------------------------------------------------


class EngineStatsSource(Protocol):
    """What :class:`EngineCollector` reads; ``its_runtime.engine.Engine`` provides it."""

    @property
    def backend_name(self) -> str: ...

    def fallback_causes(self) -> Sequence[tuple[str, str]]:
        """(backend that was skipped or failed, cause) pairs, in order."""
        ...

    def cache_counts(self) -> Mapping[str, int]:
        """hits, misses, builds, evictions, corrupt_rebuilds."""
        ...

    def memory_bytes(self) -> Mapping[str, int]:
        """allocated, reserved, peak (device memory); empty off CUDA."""
        ...


class EngineCollector(Collector):
    """Publishes the engine's backend, fallbacks, cache counters and device memory."""

    def __init__(self, source: EngineStatsSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []  # collected lazily; the registry must not call collect() at register

    def collect(self) -> Iterator[Metric]:
        backend = GaugeMetricFamily(
            "its_backend_info",
            "The inference backend in use (value is always 1).",
            labels=["backend"],
        )
        backend.add_metric([self._source.backend_name], 1.0)
        yield backend
        fallbacks = GaugeMetricFamily(
            "its_backend_fallbacks",
            "Backends skipped or failed at load, with their cause (value is always 1).",
            labels=["backend", "cause"],
        )
        causes = list(self._source.fallback_causes())
        for skipped, cause in causes:
            fallbacks.add_metric([skipped, cause[:200]], 1.0)
        yield fallbacks
        count = GaugeMetricFamily(
            "its_backend_fallback_count", "Number of backend fallbacks taken at load."
        )
        count.add_metric([], float(len(causes)))
        yield count
        counts = self._source.cache_counts()
        for key, help_text in (
            ("hits", "Engine cache lookups that found a usable engine."),
            ("misses", "Engine cache lookups that found none."),
            ("builds", "Engines built (compiled) by this process."),
            ("evictions", "Engine cache entries evicted by the size cap (LRU)."),
            ("corrupt_rebuilds", "Corrupt or incompatible cache entries rebuilt."),
            ("build_failures", "Engine builds that failed (the engine fell back)."),
        ):
            family = CounterMetricFamily(f"its_engine_cache_{key}", help_text)
            family.add_metric([], float(counts.get(key, 0)))
            yield family
        memory = GaugeMetricFamily(
            "its_gpu_memory_bytes",
            "CUDA caching-allocator memory of this process: allocated, reserved, peak.",
            labels=["kind"],
        )
        for kind, value in self._source.memory_bytes().items():
            memory.add_metric([kind], float(value))
        yield memory


class GpuSample(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def utilization(self) -> float:
        """0..1"""
        ...

    @property
    def memory_used_bytes(self) -> int: ...
    @property
    def memory_total_bytes(self) -> int: ...
    @property
    def temperature_celsius(self) -> float: ...


class GpuStatsSource(Protocol):
    """What :class:`GpuCollector` reads (``observability.telemetry.GpuTelemetry`` provides it)."""

    @property
    def available(self) -> bool: ...

    def sample(self) -> Sequence[GpuSample]: ...


class GpuCollector(Collector):
    """NVML readings at scrape time; only ``its_gpu_telemetry_available 0`` without a GPU."""

    def __init__(self, source: GpuStatsSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            "its_gpu_telemetry_available", "1 when NVML telemetry is available, else 0."
        )
        samples = self._source.sample() if self._source.available else []
        available.add_metric([], 1.0 if self._source.available else 0.0)
        yield available
        if not samples:
            return
        labels = ["gpu", "name"]
        util = GaugeMetricFamily(
            "its_gpu_utilization_ratio", "GPU utilisation (0..1) from NVML.", labels=labels
        )
        used = GaugeMetricFamily(
            "its_gpu_memory_used_bytes", "Device memory in use (all processes).", labels=labels
        )
        total = GaugeMetricFamily(
            "its_gpu_memory_total_bytes", "Device memory in total.", labels=labels
        )
        temp = GaugeMetricFamily(
            "its_gpu_temperature_celsius", "GPU core temperature.", labels=labels
        )
        for s in samples:
            key = [str(s.index), s.name]
            util.add_metric(key, s.utilization)
            used.add_metric(key, float(s.memory_used_bytes))
            total.add_metric(key, float(s.memory_total_bytes))
            temp.add_metric(key, s.temperature_celsius)
        yield from (util, used, total, temp)


# ---------------------------------------------------------------------------
# Engine layer metrics (owned by the engine layer; append below, keep the prefix)
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Data-plane metrics: ingestion, analytics, cache, storage (owned by that layer)
# ---------------------------------------------------------------------------
# --- data plane ---
# Camera labels are the configured camera names (bounded by the config's 32-camera
# cap per runtime); no label ever carries a track id, key or URL.

#: Seconds from a frame's decode to a later step (analysis done, row committed).
DATAPLANE_LAG_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
    3.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Seconds; cache and pool operations are sub-millisecond when healthy.
DATAPLANE_FAST_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

INGEST_FRAMES = Counter(
    "its_ingest_frames_total",
    "Frames decoded from a camera (before any drop).",
    ["camera"],
    registry=REGISTRY,
)
#: reason: behind (replaced by a newer frame while inference was busy), fps_cap (above the
#: camera's configured fps), queue_full, deadline_exceeded, draining, execution (the
#: batcher refused or failed the frame).
INGEST_DROPPED = Counter(
    "its_ingest_frames_dropped_total",
    "Frames deliberately not analysed, by reason.",
    ["camera", "reason"],
    registry=REGISTRY,
)
INGEST_CORRUPT_SEGMENTS = Counter(
    "its_ingest_corrupt_segments_total",
    "Corrupt stream segments detected (bad packet, decode error or corrupt frame).",
    ["camera"],
    registry=REGISTRY,
)
INGEST_CORRUPT_FRAMES = Counter(
    "its_ingest_corrupt_frames_skipped_total",
    "Packets/frames skipped because they were corrupt or depended on corrupt data.",
    ["camera"],
    registry=REGISTRY,
)
INGEST_RECONNECTS = Counter(
    "its_ingest_reconnects_total",
    "Times a camera stream was reopened after a failure or an end of stream.",
    ["camera"],
    registry=REGISTRY,
)
INGEST_CONNECTED = Gauge(
    "its_ingest_connected",
    "1 while the camera stream is open and delivering frames.",
    ["camera"],
    registry=REGISTRY,
)
INGEST_FPS = Gauge(
    "its_ingest_fps",
    "Frames per second, by stage: decoded (from the stream) or analysed (tracked).",
    ["camera", "stage"],
    registry=REGISTRY,
)
INGEST_LAG = Histogram(
    "its_ingest_lag_seconds",
    "Seconds from a frame's decode to the end of its analysis (tracking and counting).",
    ["camera"],
    buckets=DATAPLANE_LAG_BUCKETS,
    registry=REGISTRY,
)
ANALYTICS_CROSSINGS = Counter(
    "its_analytics_line_crossings_total",
    "Objects that crossed a counting line, by line, direction (in/out) and class.",
    ["camera", "line", "direction", "class_name"],
    registry=REGISTRY,
)
ANALYTICS_OBJECTS = Counter(
    "its_analytics_objects_total",
    "New tracked objects (a track confirmed), by class.",
    ["camera", "class_name"],
    registry=REGISTRY,
)
ANALYTICS_ACTIVE_TRACKS = Gauge(
    "its_analytics_active_tracks",
    "Confirmed tracks on the camera's latest analysed frame.",
    ["camera"],
    registry=REGISTRY,
)
ANALYTICS_OCCUPANCY = Gauge(
    "its_analytics_region_occupancy",
    "Tracked objects whose bottom-centre is inside the region, on the latest frame.",
    ["camera", "region"],
    registry=REGISTRY,
)
CACHE_REQUESTS = Counter(
    "its_cache_requests_total",
    "Cache lookups by level (l1, l2) and result (hit, miss, error).",
    ["level", "result"],
    registry=REGISTRY,
)
CACHE_LATENCY = Histogram(
    "its_cache_latency_seconds",
    "Latency of cache operations by level (l1, l2) and operation (get, set).",
    ["level", "op"],
    buckets=DATAPLANE_FAST_BUCKETS,
    registry=REGISTRY,
)
CACHE_L1_ENTRIES = Gauge(
    "its_cache_l1_entries",
    "Entries held by the in-process L1 cache.",
    registry=REGISTRY,
)
CACHE_L1_EVICTIONS = Counter(
    "its_cache_l1_evictions_total",
    "L1 entries removed before use, by reason (capacity, expired).",
    ["reason"],
    registry=REGISTRY,
)
CACHE_L2_UP = Gauge(
    "its_cache_l2_up",
    "1 while Redis (L2) answers; 0 while it is degraded and L1 plus the database serve.",
    registry=REGISTRY,
)
CACHE_L2_ERRORS = Counter(
    "its_cache_l2_errors_total",
    "Redis operations that failed (connection, timeout or server error), by operation.",
    ["op"],
    registry=REGISTRY,
)
DB_UP = Gauge(
    "its_db_up",
    "1 while PostgreSQL accepts writes; 0 while events spool to the on-disk journal.",
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS = Gauge(
    "its_db_pool_connections",
    "asyncpg pool connections by state: open, idle, in_use, max.",
    ["state"],
    registry=REGISTRY,
)
DB_POOL_ACQUIRE = Histogram(
    "its_db_pool_acquire_seconds",
    "Time to acquire a connection from the asyncpg pool.",
    buckets=DATAPLANE_FAST_BUCKETS,
    registry=REGISTRY,
)
DB_WRITE_TIME = Histogram(
    "its_db_write_seconds",
    "Time to write one batch (binary COPY plus idempotent merge), in one transaction.",
    buckets=DATAPLANE_FAST_BUCKETS,
    registry=REGISTRY,
)
DB_ROWS_WRITTEN = Counter(
    "its_db_rows_written_total",
    "Rows newly inserted, by table (replayed duplicates are not counted).",
    ["table"],
    registry=REGISTRY,
)
DB_WRITE_ERRORS = Counter(
    "its_db_write_errors_total",
    "Batch writes that failed, by kind: unavailable (spooled and retried), rejected (bad "
    "data, dropped and logged).",
    ["kind"],
    registry=REGISTRY,
)
DB_ROWS_REJECTED = Counter(
    "its_db_rows_rejected_total",
    "Rows PostgreSQL refused as invalid data (never retried).",
    registry=REGISTRY,
)
FRAME_TO_ROW = Histogram(
    "its_frame_to_row_seconds",
    "Seconds from a frame's decode to the commit of the rows it produced.",
    buckets=DATAPLANE_LAG_BUCKETS,
    registry=REGISTRY,
)
JOURNAL_BYTES = Gauge(
    "its_journal_bytes",
    "Bytes held by the on-disk journal of rows waiting for the database.",
    registry=REGISTRY,
)
JOURNAL_ROWS = Gauge(
    "its_journal_rows",
    "Rows held by the on-disk journal, waiting for the database.",
    registry=REGISTRY,
)
JOURNAL_SPOOLED = Counter(
    "its_journal_spooled_rows_total",
    "Rows written to the on-disk journal because the database was unavailable.",
    registry=REGISTRY,
)
JOURNAL_REPLAYED = Counter(
    "its_journal_replayed_rows_total",
    "Journal rows replayed into the database after it recovered.",
    registry=REGISTRY,
)
JOURNAL_DROPPED = Counter(
    "its_journal_dropped_rows_total",
    "Rows dropped because the journal was full (the oldest go first) or unreadable.",
    ["reason"],
    registry=REGISTRY,
)

"""The data plane's metrics: ingestion, analytics, cache and storage.

Registered in the runtime's one registry (:data:`.metrics.REGISTRY`). Camera labels are
the configured camera names (bounded by the config's camera cap per runtime); no label
ever carries a track id, key or URL.
"""

from __future__ import annotations

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)

from its_runtime.observability.metrics import REGISTRY

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
#: requested: cameraDecode (auto, cpu, gpu); backend: where this camera decodes now.
CAMERA_ERRORS = Counter(
    "its_camera_errors_total",
    "Frames whose analysis raised, by exception type; the camera's loop backs off and goes on.",
    ["camera", "reason"],
    registry=REGISTRY,
)
CAMERA_DECODE_INFO = Gauge(
    "its_camera_decode_info",
    "1 for the decode path a camera uses now: requested mode and active backend (cpu, gpu).",
    ["camera", "requested", "backend"],
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
ANALYTICS_CONGESTION = Gauge(
    "its_analytics_congestion_level",
    "The camera's congestion level from its vehicles and their mean ground speed over "
    "the congestion window: 0 free, 1 heavy, 2 congested.",
    ["camera"],
    registry=REGISTRY,
)
ANALYTICS_QUEUE_VEHICLES = Gauge(
    "its_analytics_queue_vehicles",
    "Vehicles stopped in the region for at least its queue dwell, on the latest frame.",
    ["camera", "region"],
    registry=REGISTRY,
)
ANALYTICS_QUEUE_LENGTH = Gauge(
    "its_analytics_queue_length_meters",
    "Ground length spanned by the region's queued vehicles (needs a calibration).",
    ["camera", "region"],
    registry=REGISTRY,
)
ANALYTICS_INCIDENTS = Counter(
    "its_analytics_traffic_events_total",
    "Wrong-way crossings (wrong_way), stopped vehicles (stopped_vehicle) and turning "
    "movements (od), by kind.",
    ["camera", "kind"],
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
    "Journal rows replayed into the database after it recovered (adopted journals' too).",
    registry=REGISTRY,
)
JOURNAL_ADOPTED = Counter(
    "its_journal_adopted_total",
    "Journals of pods that are gone (orphans on the shared journal volume) adopted here.",
    registry=REGISTRY,
)
JOURNAL_ADOPTED_ROWS = Counter(
    "its_journal_adopted_rows_total",
    "Rows replayed from adopted journals (a subset of its_journal_replayed_rows_total).",
    registry=REGISTRY,
)
JOURNAL_DROPPED = Counter(
    "its_journal_dropped_rows_total",
    "Rows lost, by reason: journal_full (the oldest go first), journal_unwritable (disk "
    "full while the database was down), corrupt (unreadable), memory, "
    "dead_letter_unwritable.",
    ["reason"],
    registry=REGISTRY,
)
ROWS_DEAD_LETTERED = Counter(
    "its_rows_dead_lettered_total",
    "Rows the database refused as bad data, isolated from their batch and kept in the "
    "dead-letter file (reason: the error's type); the rest of the batch was written.",
    ["table", "reason"],
    registry=REGISTRY,
)
ROW_WRITER_ERRORS = Counter(
    "its_row_writer_errors_total",
    "Unexpected errors of the row writer (reason: the error's type; stopped: its task "
    "ended and was restarted). It logs them and goes on.",
    ["reason"],
    registry=REGISTRY,
)

"""What the data plane reports, as typed observer calls, and their Prometheus form.

The data plane's components (camera statistics, the pipeline's analytics, the two
cache levels, the database and the row writer) say *what happened* through the small
Protocols here (``frame_decoded(camera)``, ``cache_lookup(level, result)``,
``rows_written(table, n)``) and never touch a Prometheus object. Why:

* **One place turns stats into metrics.** Names, labels and buckets stay in
  :mod:`.dataplane_metrics`; the classes below are the only code that updates them,
  so a renamed label is one edit, and the dashboards' names are checked against
  exactly what is registered (``tests/deploy/test_monitoring.py``).
* **Components are testable without the registry.** A test (or a benchmark) hands
  a component its own observer and reads what it reported, instead of scraping
  process-global counters that other tests also bump.
* **The data plane stays a client of observability**, not of ``prometheus_client``:
  an import-linter contract forbids ``its_runtime.dataplane`` from importing the
  metric modules directly.

Each component takes its observer as an optional argument; the default is the
Prometheus one (:data:`PROMETHEUS`), so the runtime's ``/metrics`` is what it was.
The observers take only plain values (strings, numbers): observability sits below
the data plane and cannot know its types.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from its_runtime.observability import dataplane_metrics as m

# -- what the data plane reports -------------------------------------------------------


class IngestObserver(Protocol):
    """A camera's stream: connection, decoded, dropped and corrupt frames, lag."""

    def stream_connected(self, camera: str, connected: bool) -> None: ...

    def stream_reconnected(self, camera: str) -> None: ...

    def frame_decoded(self, camera: str) -> None: ...

    def frames_dropped(self, camera: str, reason: str, n: int) -> None: ...

    def corrupt_segment(self, camera: str) -> None: ...

    def corrupt_frames_skipped(self, camera: str, n: int) -> None: ...

    def frame_analysed(self, camera: str, lag_s: float) -> None: ...

    #: ``stage``: ``decoded`` or ``analysed``; called once per closed rate window.
    def frame_rate(self, camera: str, stage: str, fps: float) -> None: ...

    #: The camera's decode path changed: ``requested`` auto/cpu/gpu, ``backend`` cpu/gpu.
    def decode_chosen(self, camera: str, requested: str, backend: str) -> None: ...

    #: The analysis of a frame raised (``reason``: the exception's type); it restarts.
    def camera_error(self, camera: str, reason: str) -> None: ...


class AnalyticsObserver(Protocol):
    """What the analysis of a camera's frame found."""

    def line_crossed(self, camera: str, line: str, direction: str, class_name: str) -> None: ...

    def object_seen(self, camera: str, class_name: str) -> None: ...

    def active_tracks(self, camera: str, n: int) -> None: ...

    def region_occupancy(self, camera: str, region: str, n: int) -> None: ...

    #: ``value``: 0 free, 1 heavy, 2 congested.
    def congestion(self, camera: str, value: int) -> None: ...

    #: ``length_m`` is None without a calibration.
    def queue(self, camera: str, region: str, vehicles: int, length_m: float | None) -> None: ...

    #: A wrong_way, stopped_vehicle or od event.
    def traffic_event(self, camera: str, kind: str) -> None: ...


class CacheObserver(Protocol):
    """The two cache levels: lookups, latencies, L1 size and evictions, L2 health."""

    #: ``level``: ``l1`` or ``l2``; ``result``: ``hit``, ``miss`` or ``error``.
    def cache_lookup(self, level: str, result: str, n: int = 1) -> None: ...

    #: ``op``: ``get`` or ``set``.
    def cache_latency(self, level: str, op: str, seconds: float) -> None: ...

    def l1_entries(self, n: int) -> None: ...

    #: ``reason``: ``capacity`` or ``expired``.
    def l1_evicted(self, reason: str) -> None: ...

    def l2_available(self, up: bool) -> None: ...

    def l2_failed(self, op: str) -> None: ...


class StoreObserver(Protocol):
    """PostgreSQL (health, pool) and the row writer (writes, journal)."""

    def database_available(self, up: bool) -> None: ...

    def pool_acquired(self, seconds: float) -> None: ...

    #: Connections by state: ``open``, ``idle``, ``in_use``, ``max``.
    def pool_connections(self, by_state: Mapping[str, int]) -> None: ...

    def batch_written(self, seconds: float) -> None: ...

    #: ``table``: ``traffic_events`` or ``detections``; only newly inserted rows.
    def rows_written(self, table: str, n: int) -> None: ...

    #: ``kind``: ``unavailable`` (spooled, retried) or ``rejected`` (bad data, dropped).
    def write_failed(self, kind: str) -> None: ...

    def rows_rejected(self, n: int) -> None: ...

    def frame_committed(self, lag_s: float) -> None: ...

    def journal_size(self, size_bytes: int, rows: int) -> None: ...

    def rows_spooled(self, n: int) -> None: ...

    #: Every journal row replayed, the own journal's and adopted journals' alike.
    def rows_replayed(self, n: int) -> None: ...

    #: A dead pod's journal was adopted (locked) by this writer, to be replayed.
    def journal_adopted(self) -> None: ...

    #: Rows replayed from adopted journals (also reported by ``rows_replayed``).
    def rows_adopted(self, n: int) -> None: ...

    #: ``reason``: ``memory``, ``journal_full``, ``journal_unwritable`` (disk full: the
    #: rows could not be spooled), ``dead_letter_unwritable`` or ``corrupt``.
    def rows_dropped(self, reason: str, n: int) -> None: ...

    #: Rows refused as bad data, isolated from their batch into the dead-letter file;
    #: ``reason``: the error's type (``CheckViolationError``, ``DataError``, ...).
    def rows_dead_lettered(self, table: str, reason: str, n: int) -> None: ...

    #: The row writer hit an unexpected error (``reason``: its type) or its task
    #: stopped and was restarted (``stopped``); it goes on.
    def writer_error(self, reason: str) -> None: ...


# -- their Prometheus form -------------------------------------------------------------


class PrometheusIngest:
    def __init__(self) -> None:
        self._decode_labels: dict[str, tuple[str, str]] = {}
        self._decode_lock = threading.Lock()  # decode threads of several cameras report

    def stream_connected(self, camera: str, connected: bool) -> None:
        m.INGEST_CONNECTED.labels(camera).set(1 if connected else 0)

    def stream_reconnected(self, camera: str) -> None:
        m.INGEST_RECONNECTS.labels(camera).inc()

    def frame_decoded(self, camera: str) -> None:
        m.INGEST_FRAMES.labels(camera).inc()

    def frames_dropped(self, camera: str, reason: str, n: int) -> None:
        m.INGEST_DROPPED.labels(camera, reason).inc(n)

    def corrupt_segment(self, camera: str) -> None:
        m.INGEST_CORRUPT_SEGMENTS.labels(camera).inc()

    def corrupt_frames_skipped(self, camera: str, n: int) -> None:
        m.INGEST_CORRUPT_FRAMES.labels(camera).inc(n)

    def frame_analysed(self, camera: str, lag_s: float) -> None:
        m.INGEST_LAG.labels(camera).observe(lag_s)

    def frame_rate(self, camera: str, stage: str, fps: float) -> None:
        m.INGEST_FPS.labels(camera, stage).set(fps)

    def camera_error(self, camera: str, reason: str) -> None:
        m.CAMERA_ERRORS.labels(camera, reason).inc()

    def decode_chosen(self, camera: str, requested: str, backend: str) -> None:
        # An info metric: one series per camera, the one describing its current path.
        with self._decode_lock:
            previous = self._decode_labels.get(camera)
            if previous is not None and previous != (requested, backend):
                m.CAMERA_DECODE_INFO.remove(camera, *previous)
            self._decode_labels[camera] = (requested, backend)
            m.CAMERA_DECODE_INFO.labels(camera, requested, backend).set(1)


class PrometheusAnalytics:
    def line_crossed(self, camera: str, line: str, direction: str, class_name: str) -> None:
        m.ANALYTICS_CROSSINGS.labels(camera, line, direction, class_name).inc()

    def object_seen(self, camera: str, class_name: str) -> None:
        m.ANALYTICS_OBJECTS.labels(camera, class_name).inc()

    def active_tracks(self, camera: str, n: int) -> None:
        m.ANALYTICS_ACTIVE_TRACKS.labels(camera).set(n)

    def region_occupancy(self, camera: str, region: str, n: int) -> None:
        m.ANALYTICS_OCCUPANCY.labels(camera, region).set(n)

    def congestion(self, camera: str, value: int) -> None:
        m.ANALYTICS_CONGESTION.labels(camera).set(value)

    def queue(self, camera: str, region: str, vehicles: int, length_m: float | None) -> None:
        m.ANALYTICS_QUEUE_VEHICLES.labels(camera, region).set(vehicles)
        if length_m is not None:
            m.ANALYTICS_QUEUE_LENGTH.labels(camera, region).set(length_m)

    def traffic_event(self, camera: str, kind: str) -> None:
        m.ANALYTICS_INCIDENTS.labels(camera, kind).inc()


class PrometheusCache:
    def cache_lookup(self, level: str, result: str, n: int = 1) -> None:
        m.CACHE_REQUESTS.labels(level, result).inc(n)

    def cache_latency(self, level: str, op: str, seconds: float) -> None:
        m.CACHE_LATENCY.labels(level, op).observe(seconds)

    def l1_entries(self, n: int) -> None:
        m.CACHE_L1_ENTRIES.set(n)

    def l1_evicted(self, reason: str) -> None:
        m.CACHE_L1_EVICTIONS.labels(reason).inc()

    def l2_available(self, up: bool) -> None:
        m.CACHE_L2_UP.set(1 if up else 0)

    def l2_failed(self, op: str) -> None:
        m.CACHE_L2_ERRORS.labels(op).inc()


class PrometheusStore:
    def database_available(self, up: bool) -> None:
        m.DB_UP.set(1 if up else 0)

    def pool_acquired(self, seconds: float) -> None:
        m.DB_POOL_ACQUIRE.observe(seconds)

    def pool_connections(self, by_state: Mapping[str, int]) -> None:
        for state, n in by_state.items():
            m.DB_POOL_CONNECTIONS.labels(state).set(n)

    def batch_written(self, seconds: float) -> None:
        m.DB_WRITE_TIME.observe(seconds)

    def rows_written(self, table: str, n: int) -> None:
        m.DB_ROWS_WRITTEN.labels(table).inc(n)

    def write_failed(self, kind: str) -> None:
        m.DB_WRITE_ERRORS.labels(kind).inc()

    def rows_rejected(self, n: int) -> None:
        m.DB_ROWS_REJECTED.inc(n)

    def frame_committed(self, lag_s: float) -> None:
        m.FRAME_TO_ROW.observe(lag_s)

    def journal_size(self, size_bytes: int, rows: int) -> None:
        m.JOURNAL_BYTES.set(size_bytes)
        m.JOURNAL_ROWS.set(rows)

    def rows_spooled(self, n: int) -> None:
        m.JOURNAL_SPOOLED.inc(n)

    def rows_replayed(self, n: int) -> None:
        m.JOURNAL_REPLAYED.inc(n)

    def journal_adopted(self) -> None:
        m.JOURNAL_ADOPTED.inc()

    def rows_adopted(self, n: int) -> None:
        m.JOURNAL_ADOPTED_ROWS.inc(n)

    def rows_dropped(self, reason: str, n: int) -> None:
        m.JOURNAL_DROPPED.labels(reason).inc(n)

    def rows_dead_lettered(self, table: str, reason: str, n: int) -> None:
        m.ROWS_DEAD_LETTERED.labels(table, reason).inc(n)

    def writer_error(self, reason: str) -> None:
        m.ROW_WRITER_ERRORS.labels(reason).inc()


@dataclass(frozen=True)
class DataPlaneObservers:
    """One observer per concern, handed down by the data plane to its components."""

    ingest: IngestObserver
    analytics: AnalyticsObserver
    cache: CacheObserver
    store: StoreObserver


#: The runtime's observers: every report becomes the metric it always was.
PROMETHEUS = DataPlaneObservers(
    ingest=PrometheusIngest(),
    analytics=PrometheusAnalytics(),
    cache=PrometheusCache(),
    store=PrometheusStore(),
)

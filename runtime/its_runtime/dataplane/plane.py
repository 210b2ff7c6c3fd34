"""The camera data plane: camera -> frames -> batcher -> detections -> tracker -> events
-> PostgreSQL and cache.

Shape and reasons:

* **One task per camera, one frame in flight per camera.** A camera's frames must be
  tracked in order, and a live camera is best served by analysing its newest frame:
  while a frame is in inference, newer ones replace each other in the reader's slot
  (counted drops). The batcher still gets one frame from every camera at once, which
  is what it batches.
* **Decoupled from inference.** The pipeline takes any :class:`Detector`, an object
  with the batcher's async ``submit``; :class:`its_runtime.serving.batching.DynamicBatcher` is
  the real one. Refusals (queue full, deadline, draining) drop the frame with its
  reason; they never stop the camera.
* **Storage never blocks analysis.** Rows go to the :class:`~its_runtime.dataplane.store.writer.
  RowWriter`'s buffer (which batches, spools and replays on its own); the latest view
  goes to L1 at once and to Redis at most every ``latest_l2_interval_s``, in the
  background, skipping a publish while the previous one is still in flight.
* **Built from the runtime config.** :class:`DataPlane` reads cameras, cache and
  database settings from :class:`~its_runtime.config.RuntimeConfig`, takes secrets
  from the environment variables the config names, and mounts into the serving
  application as an extension (:func:`extension`): routes, readiness checks (Redis and
  PostgreSQL as *optional* dependencies: degraded, never unready), lifecycle, drain.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from its_runtime import health, submission
from its_runtime.config import CameraConfig, RuntimeConfig
from its_runtime.dataplane import queries
from its_runtime.dataplane.analytics.analyzer import CROSSING, CameraAnalyzer, FrameAnalysis
from its_runtime.dataplane.analytics.tracker import TrackerSettings
from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.l2 import RedisL2
from its_runtime.dataplane.cache.tiered import TieredCache
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.ingest.frames import Frame
from its_runtime.dataplane.ingest.slot import LatestSlot
from its_runtime.dataplane.ingest.stats import CameraStats
from its_runtime.dataplane.store import keys
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.journal import Journal
from its_runtime.detections import Detections
from its_runtime.observability import dataplane_metrics

if TYPE_CHECKING:
    from its_runtime.dataplane.ingest.reader import CameraReader
from its_runtime.dataplane.store.rows import DetectionRow, EventRow, FrameRows
from its_runtime.dataplane.store.writer import RowWriter

log = logging.getLogger(__name__)


class Detector(Protocol):
    """What the pipeline needs from inference: the batcher's ``submit``."""

    async def submit(
        self, item: torch.Tensor, *, deadline: float | None = None, priority: int = 0
    ) -> Detections: ...


@dataclass(frozen=True)
class PipelineOptions:
    #: Pace file cameras at their frame rate (None: files yes, network streams no).
    realtime: bool | None = None
    #: Never drop frames: the reader waits for the pipeline (offline analysis of files).
    lossless: bool = False
    #: Per-frame deadline for inference, in seconds from the frame's decode.
    deadline_s: float | None = None
    #: Store every tracked box (``detections`` table), not only events.
    store_detections: bool = True
    #: Throttles for publishing the latest view to L1 and to Redis.
    latest_l1_interval_s: float = 0.1
    latest_l2_interval_s: float = 0.5
    #: Width of the in-memory interval counts shown by ``/latest``.
    count_interval_s: float = 60.0
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    tracker: TrackerSettings | None = None


def latest_key(camera: str) -> str:
    return f"latest:{camera}"


def frame_to_tensor(frame: Frame, channels: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (C, H, W) float32 in 0..1, as the batcher takes it."""
    image = torch.from_numpy(frame.image).permute(2, 0, 1).to(torch.float32).div_(255.0)
    if channels == 1:
        image = image.mean(dim=0, keepdim=True)
    return image.contiguous()


class CameraPipeline:
    """Ingestion, inference, analytics and publishing for one camera."""

    def __init__(
        self,
        camera: CameraConfig,
        detector: Detector,
        *,
        input_shape: tuple[int, int, int],
        class_names: list[str],
        writer: RowWriter | None = None,
        cache: TieredCache | None = None,
        options: PipelineOptions | None = None,
        listener: Callable[[FrameAnalysis], None] | None = None,
    ) -> None:
        self.camera = camera
        self.options = options or PipelineOptions()
        self._detector = detector
        self._channels, height, width = input_shape
        self._size = (width, height)
        self.writer = writer
        self.cache = cache
        self._listener = listener
        self.stats = CameraStats(camera.name)
        self.analyzer = CameraAnalyzer(
            camera,
            class_names,
            tracker=self.options.tracker,
            count_interval_s=self.options.count_interval_s,
        )
        self.recent_events: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._last: FrameAnalysis | None = None
        self._l1_at = 0.0
        self._l2_at = 0.0
        self._l2_task: asyncio.Task[None] | None = None
        self._reader: CameraReader | None = None
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        slot: LatestSlot[Frame] = LatestSlot(loop, lossless=self.options.lossless)
        o = self.options
        # PyAV (FFmpeg) is imported only when a camera starts: a runtime serving
        # /v1/detect alone (or a GPU check machine without it) does not need it.
        from its_runtime.dataplane.ingest.reader import CameraReader

        self._reader = CameraReader(
            self.camera,
            slot,
            self.stats,
            size=self._size,
            open_timeout_s=o.open_timeout_s,
            read_timeout_s=o.read_timeout_s,
            backoff=Backoff(initial_s=o.reconnect_initial_s, max_s=o.reconnect_max_s),
            realtime=o.realtime,
        )
        self._reader.start()
        self._task = loop.create_task(self._run(slot), name=f"its-camera-{self.camera.name}")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._l2_task is not None:
            with contextlib.suppress(Exception):
                await self._l2_task
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 10.0)

    # -- the loop -------------------------------------------------------------------

    async def _run(self, slot: LatestSlot[Frame]) -> None:
        try:
            while (frame := await slot.get()) is not None:
                detections = await self._infer(frame)
                if detections is not None:
                    self._analyse(frame, detections)
            self._publish(force=True)
        finally:
            self.finished.set()

    async def _infer(self, frame: Frame) -> Detections | None:
        deadline = (
            frame.decoded_mono + self.options.deadline_s
            if self.options.deadline_s is not None
            else None
        )
        try:
            return await self._detector.submit(
                frame_to_tensor(frame, self._channels), deadline=deadline
            )
        except submission.SubmitError as exc:
            self.stats.on_dropped(exc.reason)
        except ValueError as exc:  # a frame the model cannot take: a config mistake
            self.stats.on_dropped("bad_input")
            log.error("camera %s: inference refused the frame: %s", self.camera.name, exc)
        except Exception:
            self.stats.on_dropped("execution")
            log.exception("camera %s: inference failed", self.camera.name)
        return None

    def _analyse(self, frame: Frame, detections: Detections) -> None:
        result = self.analyzer.process(
            detections,
            seq=frame.seq,
            media_time=frame.media_time,
            wall_time=frame.decoded_at,
            width_px=frame.source_width,
            height_px=frame.source_height,
        )
        self._last = result
        self._count(result)
        for ev in result.events:
            self.recent_events.append(
                {
                    "kind": ev.kind,
                    "ts": ev.wall_time,
                    "media_time": round(ev.media_time, 4),
                    "line": ev.line,
                    "direction": ev.direction,
                    "class": ev.class_name,
                    "track_id": ev.track_id,
                    "speed_kmh": None if ev.speed_kmh is None else round(ev.speed_kmh, 2),
                }
            )
        if self.writer is not None:
            self.writer.submit(self._rows(result, frame))
        if self._listener is not None:
            self._listener(result)
        self.stats.on_analysed(time.monotonic() - frame.decoded_mono)
        self._publish(force=False)

    def _count(self, result: FrameAnalysis) -> None:
        camera = self.camera.name
        for ev in result.events:
            if ev.kind == CROSSING:
                dataplane_metrics.ANALYTICS_CROSSINGS.labels(
                    camera, ev.line, ev.direction, ev.class_name
                ).inc()
            else:
                dataplane_metrics.ANALYTICS_OBJECTS.labels(camera, ev.class_name).inc()
        dataplane_metrics.ANALYTICS_ACTIVE_TRACKS.labels(camera).set(len(result.tracks))
        for region, per_class in result.occupancy.items():
            dataplane_metrics.ANALYTICS_OCCUPANCY.labels(camera, region).set(
                sum(per_class.values())
            )

    def _rows(self, result: FrameAnalysis, frame: Frame) -> FrameRows:
        camera = self.camera.name
        events: list[EventRow] = [
            (
                keys.new_key(ev.wall_time),
                camera,
                ev.wall_time,
                ev.media_time,
                ev.kind,
                ev.line,
                ev.direction,
                ev.class_name,
                ev.track_id,
                ev.speed_kmh,
                result.seq,
            )
            for ev in result.events
        ]
        detections: list[DetectionRow] = []
        if self.options.store_detections:
            detections = [
                (
                    keys.new_key(result.wall_time),
                    camera,
                    result.wall_time,
                    result.seq,
                    t.track_id,
                    t.class_name,
                    t.score,
                    *t.box,
                    t.speed_kmh,
                )
                for t in result.tracks
            ]
        return FrameRows(frame.decoded_at, events, detections)

    # -- the latest view ------------------------------------------------------------

    def latest(self) -> dict[str, Any]:
        last = self._last
        return {
            "camera": self.camera.name,
            "source": "live",
            "updated_at": None if last is None else last.wall_time,
            "frame_seq": None if last is None else last.seq,
            "media_time": None if last is None else round(last.media_time, 4),
            "tracks": [] if last is None else [t.to_json() for t in last.tracks],
            "occupancy": {} if last is None else last.occupancy,
            "counts": self.analyzer.counts.to_json(),
            "recent_events": list(self.recent_events),
            "stream": self.stats.snapshot(),
        }

    def _publish(self, *, force: bool) -> None:
        if self.cache is None:
            return
        now = time.monotonic()
        to_l1 = force or now - self._l1_at >= self.options.latest_l1_interval_s
        to_l2 = force or now - self._l2_at >= self.options.latest_l2_interval_s
        if not to_l1 and not to_l2:
            return
        body = json.dumps(self.latest(), separators=(",", ":")).encode()
        key = latest_key(self.camera.name)
        self._l1_at = now
        self.cache.l1.set(key, body)
        if to_l2 and self.cache.l2 is not None:
            if self._l2_task is not None and not self._l2_task.done():
                return  # the previous publish is still in flight: newest wins next time
            self._l2_at = now
            self._l2_task = asyncio.get_running_loop().create_task(
                self.cache.set_many({key: body}), name=f"its-latest-{self.camera.name}"
            )


class DataPlane:
    """All cameras of one runtime, with their cache, database, journal and query API."""

    def __init__(
        self,
        config: RuntimeConfig,
        detector: Detector,
        *,
        options: PipelineOptions | None = None,
        env: Mapping[str, str] | None = None,
        listener: Callable[[FrameAnalysis], None] | None = None,
    ) -> None:
        self.config = config
        self.options = options or PipelineOptions()
        self._camera_start: asyncio.Task[None] | None = None
        environ = os.environ if env is None else env
        self.cache = TieredCache(
            L1Cache(config.cache.l1_max_entries, config.cache.ttl_seconds),
            _redis(config, environ),
        )
        self.database: Database | None = None
        self.journal: Journal | None = None
        self.writer: RowWriter | None = None
        db = config.database
        dsn = environ.get(db.dsn_env) if db.dsn_env else None
        if db.dsn_env and not dsn:
            log.warning("database disabled: environment variable %s is not set", db.dsn_env)
        if dsn:
            self.database = Database(dsn, db)
            self.journal = Journal(pathlib.Path(db.journal_dir), db.journal_max_bytes)
            self.writer = RowWriter(self.database, self.journal, db)
        shape = config.model.input_shape
        self.pipelines = {
            cam.name: CameraPipeline(
                cam,
                detector,
                input_shape=(shape[0], shape[1], shape[2]),
                class_names=list(config.model.class_names),
                writer=self.writer,
                cache=self.cache,
                options=self.options,
                listener=listener,
            )
            for cam in config.cameras
        }
        self.queries = queries.CameraQueries(
            cameras=list(self.pipelines),
            cache=self.cache,
            database=self.database,
        )
        self._started = False

    async def start(self, engine_warm: asyncio.Event | None = None) -> None:
        """Connect what can be connected (nothing here may fail the start), then run.

        Cameras start once ``engine_warm`` is set: a first engine build can take
        minutes, and frames read before the engine can run them would only be dropped
        (and a camera's first seconds lost).
        """
        if self.cache.l2 is not None:
            self.cache.l2.start()
        if self.database is not None and self.writer is not None:
            try:
                await asyncio.wait_for(
                    self.database.connect(), self.config.database.acquire_timeout_s
                )
            except Exception as exc:
                self.database.mark_down(exc)
                log.warning("database unavailable at start; journalling until it is back")
            self.writer.start()
        if engine_warm is not None and not engine_warm.is_set():
            self._camera_start = asyncio.create_task(
                self._start_cameras_when(engine_warm), name="its-cameras-start"
            )
        else:
            self._start_cameras()
        self._started = True

    async def _start_cameras_when(self, engine_warm: asyncio.Event) -> None:
        await engine_warm.wait()
        self._start_cameras()

    def _start_cameras(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.start()

    async def stop_cameras(self) -> None:
        if self._camera_start is not None:
            self._camera_start.cancel()
        await asyncio.gather(*(p.stop() for p in self.pipelines.values()))

    async def stop(self) -> None:
        await self.stop_cameras()
        if self.writer is not None:
            await self.writer.close()
        if self.database is not None:
            await self.database.close()
        if self.journal is not None:
            self.journal.close()
        if self.cache.l2 is not None:
            await self.cache.l2.close()

    # -- health ---------------------------------------------------------------------

    def redis_health(self) -> health.DependencyHealth:
        l2 = self.cache.l2
        if l2 is None:
            return health.DependencyHealth(True, "disabled")
        if l2.up:
            return health.DependencyHealth(True, "ok")
        return health.DependencyHealth(
            False, f"degraded, serving from L1 and the database: {l2.last_error}"
        )

    def database_health(self) -> health.DependencyHealth:
        if self.database is None or self.writer is None:
            return health.DependencyHealth(True, "disabled")
        if self.database.up:
            return health.DependencyHealth(True, "ok")
        return health.DependencyHealth(
            False,
            f"degraded, journalling ({self.writer.journal.rows} rows spooled): "
            f"{self.database.last_error}",
        )

    def cameras_health(self) -> health.DependencyHealth:
        down = [n for n, p in self.pipelines.items() if not p.stats.connected]
        if not down:
            return health.DependencyHealth(True, "all connected")
        return health.DependencyHealth(False, f"not connected: {', '.join(sorted(down))}")

    def details(self) -> dict[str, Any]:
        return {
            "cache": self.cache.details(),
            "database": None if self.database is None else self.database.details(),
            "writer": None if self.writer is None else self.writer.details(),
            "cameras": {n: p.stats.snapshot() for n, p in self.pipelines.items()},
        }


def _redis(config: RuntimeConfig, env: Mapping[str, str]) -> RedisL2 | None:
    name = config.cache.redis_url_env
    if not name:
        return None
    url = env.get(name)
    if not url:
        log.warning("redis L2 disabled: environment variable %s is not set", name)
        return None
    return RedisL2(url)

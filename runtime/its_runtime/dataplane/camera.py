"""One camera's pipeline: camera -> frames -> batcher -> detections -> tracker -> events
-> rows and the latest view.

Shape and reasons:

* **One task per camera, one frame in flight per camera.** A camera's frames must be
  tracked in order, and a live camera is best served by analysing its newest frame:
  while a frame is in inference, newer ones replace each other in the reader's slot
  (counted drops). The batcher still gets one frame from every camera at once, which
  is what it batches.
* **Decoupled from inference.** The pipeline takes any :class:`Detector`, an object
  with the batcher's async ``submit``; serving's ``DynamicBatcher`` is the real one,
  handed in by ``its_runtime.main`` (the data plane never imports serving). Failures
  are mapped to drop reasons here, in one place (:meth:`CameraPipeline._infer`):
  refusals (queue full, deadline, draining) keep their reason, a frame the model
  cannot take is ``bad_input``, anything else ``execution``; none stops the camera.
* **The reader's lifecycle is the pipeline's.** The PyAV reader thread is created on
  :meth:`CameraPipeline.start` and joined on :meth:`~CameraPipeline.stop`, after the
  loop has drained its last frame and the last publish has landed.
* **Storage and caching never block analysis.** Rows (built by keyword through the
  row classes' named constructors, in :mod:`~its_runtime.dataplane.analysis_rows`) go to the
  :class:`~its_runtime.dataplane.store.writer.RowWriter`'s buffer; the latest view
  goes through a throttled :class:`~its_runtime.dataplane.publish.LatestPublisher`.
* **Owned, or not analysed.** With scale-out, ``may_analyse`` is asked for every
  frame (the pod still holds the camera and is not fenced); a frame it refuses is
  dropped as ``not_owner``. Rows and the latest view name the ``replica``.
* **Frames as the model takes them, boxes as the frame has them.** The reader fits
  frames to the input (``model.resize``: stretch or letterbox) on the host or, decoded
  by NVDEC, on the GPU (``cameraDecode``); detections are mapped back onto the frame
  (:meth:`~.ingest.frames.Frame.to_source`) before tracking, rows and the latest view.
* **Stats, not metrics.** What the camera and its analysis did is reported to typed
  observers (:mod:`its_runtime.observability.dataplane_stats`), which the runtime
  turns into Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from its_runtime import submission
from its_runtime.config import CameraConfig, ResizeMode
from its_runtime.dataplane import publish
from its_runtime.dataplane.analysis_rows import frame_rows
from its_runtime.dataplane.analytics import analyzer
from its_runtime.dataplane.analytics import events as traffic_events
from its_runtime.dataplane.analytics import tracker as tracking
from its_runtime.dataplane.cache import tiered
from its_runtime.dataplane.ingest import backoff, frames, slot, stats
from its_runtime.dataplane.store import writer as store_writer
from its_runtime.detections import Detections
from its_runtime.observability import dataplane_stats

if TYPE_CHECKING:
    from its_runtime.dataplane.ingest.reader import CameraReader

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
    tracker: tracking.TrackerSettings | None = None


def frame_to_tensor(frame: frames.Frame, channels: int) -> torch.Tensor:
    """uint8 RGB -> (C, H, W) float32 in 0..1, as the batcher takes it.

    A host frame ((H, W, 3)) stays on the host (the engine's staging copies batches to
    the device); a device frame ((3, H, W), NVDEC) is normalised on its device, on the
    default stream, which the engine's staging waits for before it stacks the batch.
    """
    if frame.device_image is not None:
        image = frame.device_image.to(torch.float32).div_(255.0)
    else:
        image = torch.from_numpy(frame.image).permute(2, 0, 1).to(torch.float32).div_(255.0)
    if channels == 1:
        image = image.mean(dim=0, keepdim=True)
    return image.contiguous()


def report(
    analytics: dataplane_stats.AnalyticsObserver,
    camera: str,
    result: analyzer.FrameAnalysis,
) -> None:
    """One analysed frame's crossings, objects, incidents, tracks and occupancy, onto
    the analytics metrics."""
    for ev in result.events:
        if ev.kind == analyzer.CROSSING:
            analytics.line_crossed(camera, ev.line, ev.direction, ev.class_name)
        elif ev.kind == analyzer.OBJECT:
            analytics.object_seen(camera, ev.class_name)
        elif ev.kind in traffic_events.INCIDENT_KINDS:
            analytics.traffic_event(camera, ev.kind)
    analytics.active_tracks(camera, len(result.tracks))
    for region, per_class in result.occupancy.items():
        analytics.region_occupancy(camera, region, sum(per_class.values()))
    if result.traffic is not None:
        result.traffic.report(camera, analytics)


class CameraPipeline:
    """Ingestion, inference, analytics and publishing for one camera."""

    def __init__(
        self,
        camera: CameraConfig,
        detector: Detector,
        *,
        input_shape: tuple[int, int, int],
        class_names: list[str],
        writer: store_writer.RowWriter | None = None,
        cache: tiered.TieredCache | None = None,
        options: PipelineOptions | None = None,
        listener: Callable[[analyzer.FrameAnalysis], None] | None = None,
        observers: dataplane_stats.DataPlaneObservers | None = None,
        replica: str = "",
        may_analyse: Callable[[str], bool] | None = None,
        on_first_frame: Callable[[str, float], None] | None = None,
        resize: ResizeMode | str = ResizeMode.STRETCH,
        decode: str = "auto",
        device_frames: Callable[[], bool] | None = None,
    ) -> None:
        """``resize`` is ``model.resize``; ``decode`` is ``cameraDecode``, and
        ``device_frames`` says whether ``detector`` takes CUDA frames (None: no, so the
        camera decodes on the CPU; see ``ingest/decode.py``)."""
        self.camera = camera
        self._resize = ResizeMode(resize)
        self._decode = decode
        self._device_frames = device_frames
        #: The pod analysing this camera: recorded on every row and in the latest view.
        self.replica = replica
        self._may_analyse = may_analyse
        self._on_first_frame = on_first_frame
        self.options = options or PipelineOptions()
        observers = observers or dataplane_stats.PROMETHEUS
        self._analytics = observers.analytics
        self._detector = detector
        self._channels, height, width = input_shape
        self._size = (width, height)
        self.writer = writer
        self.cache = cache
        self._listener = listener
        self.stats = stats.CameraStats(camera.name, observers.ingest)
        self.analyzer = analyzer.CameraAnalyzer(
            camera,
            class_names,
            tracker=self.options.tracker,
            count_interval_s=self.options.count_interval_s,
        )
        self.recent_events: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._last: analyzer.FrameAnalysis | None = None
        self._publisher = (
            None
            if cache is None
            else publish.LatestPublisher(
                camera.name,
                cache,
                l1_interval_s=self.options.latest_l1_interval_s,
                l2_interval_s=self.options.latest_l2_interval_s,
                replica=replica,
            )
        )
        self._reader: CameraReader | None = None
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        latest: slot.LatestSlot[frames.Frame] = slot.LatestSlot(
            loop, lossless=self.options.lossless
        )
        o = self.options
        # PyAV (FFmpeg) is imported only when a camera starts: a runtime serving
        # /v1/detect alone (or a GPU check machine without it) does not need it.
        from its_runtime.dataplane.ingest import reader

        self._reader = reader.CameraReader(
            self.camera,
            latest,
            self.stats,
            size=self._size,
            open_timeout_s=o.open_timeout_s,
            read_timeout_s=o.read_timeout_s,
            backoff=backoff.Backoff(initial_s=o.reconnect_initial_s, max_s=o.reconnect_max_s),
            realtime=o.realtime,
            resize=self._resize,
            decode_mode=self._decode,
            device_frames=self._device_frames,
        )
        self._reader.start()
        self._task = loop.create_task(self._run(latest), name=f"its-camera-{self.camera.name}")

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
        if self._publisher is not None:
            await self._publisher.close()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 10.0)

    # -- the loop -------------------------------------------------------------------

    async def _run(self, latest: slot.LatestSlot[frames.Frame]) -> None:
        failures = 0
        try:
            while (frame := await latest.get()) is not None:
                if self._refused():
                    continue
                detections = await self._infer(frame)
                # Checked again: lost (or fenced) while the frame was in inference, e.g.
                # frozen by SIGSTOP mid-batch, its results are not this pod's to emit.
                if detections is None or self._refused():
                    continue
                try:
                    # Boxes come back in input coordinates: onto the frame (letterbox).
                    self._analyse(frame, frame.to_source(detections))
                except Exception as exc:  # supervised: one bad frame never ends the camera
                    failures += 1
                    await self._back_off(exc, failures)
                    continue
                if failures:
                    failures = 0
                    self.stats.on_analysis_resumed()
            self._finish()
            self._publish(force=True)
        finally:
            self.finished.set()

    def _refused(self) -> bool:
        """Not (or no longer) provably this pod's camera: a fenced pod, or one that
        lost it at the last ownership tick. The frame is dropped as ``not_owner``."""
        if self._may_analyse is None or self._may_analyse(self.camera.name):
            return False
        self.stats.on_dropped("not_owner")
        return True

    async def _back_off(self, exc: Exception, failures: int) -> None:
        """Count and show a failed analysis, then wait (0.5 s doubling to 30 s); frames
        arriving meanwhile replace each other in the slot (counted drops)."""
        error = f"{type(exc).__name__}: {exc}"[:300]
        self.stats.on_analysis_failed(type(exc).__name__, error)
        delay = min(30.0, 0.5 * 2 ** min(failures - 1, 6))
        log.exception(
            "camera %s: analysis failed (%d in a row); retrying in %.1fs",
            self.camera.name,
            failures,
            delay,
        )
        await asyncio.sleep(delay)

    async def _infer(self, frame: frames.Frame) -> Detections | None:
        """The frame's detections, or None with the drop counted under its reason."""
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

    def _analyse(self, frame: frames.Frame, detections: Detections) -> None:
        result = self.analyzer.process(
            detections,
            seq=frame.seq,
            media_time=frame.media_time,
            wall_time=frame.decoded_at,
            width_px=frame.source_width,
            height_px=frame.source_height,
        )
        if self._last is None and self._on_first_frame is not None:
            self._on_first_frame(self.camera.name, frame.decoded_at)
        self._last = result
        self._deliver(result, frame.decoded_at)
        self.stats.on_analysed(time.monotonic() - frame.decoded_mono)
        self._publish(force=False)

    def _deliver(self, result: analyzer.FrameAnalysis, decoded_at: float) -> None:
        report(self._analytics, self.camera.name, result)
        self.recent_events.extend(ev.to_json() for ev in result.events if not ev.is_sample)
        if self.writer is not None:
            self.writer.submit(
                frame_rows(
                    result,
                    decoded_at,
                    detections=self.options.store_detections,
                    replica=self.replica,
                )
            )
        if self._listener is not None:
            self._listener(result)

    def _finish(self) -> None:
        """The stream ended: crossings only the band still held back are counted."""
        if (last := self._last) is not None and (
            end := self.analyzer.finish(
                seq=last.seq, media_time=last.media_time, wall_time=last.wall_time
            )
        ).events:
            self._deliver(end, last.wall_time)

    # -- the latest view ------------------------------------------------------------

    def latest(self) -> dict[str, Any]:
        last = self._last
        return {
            "camera": self.camera.name,
            "source": "live",
            "replica": self.replica,
            "updated_at": None if last is None else last.wall_time,
            "frame_seq": None if last is None else last.seq,
            "media_time": None if last is None else round(last.media_time, 4),
            "tracks": [] if last is None else [t.to_json() for t in last.tracks],
            "occupancy": {} if last is None else last.occupancy,
            "traffic": {} if last is None or last.traffic is None else last.traffic.to_json(),
            "counts": self.analyzer.counts.to_json(),
            "recent_events": list(self.recent_events),
            "stream": self.stats.snapshot(),
        }

    def _publish(self, *, force: bool) -> None:
        if self._publisher is not None:
            self._publisher.publish(self.latest, force=force)

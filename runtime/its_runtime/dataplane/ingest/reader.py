"""The decode loop of one camera: open, decode, hand over, reconnect.

One thread per camera, because PyAV's demux/decode calls block (FFmpeg releases the
GIL while decoding and scaling, so cameras decode in parallel with the event loop).
The loop's rules, in the order a frame meets them:

* **Corrupt data is skipped, not analysed.** A packet the demuxer flags corrupt, a
  decoder error or a frame the decoder flags corrupt starts a *corrupt segment*: it
  is counted once, and every frame until the next key frame is skipped and counted,
  because inter frames predicted from damaged references are smeared and would make
  the tracker invent or lose objects. A key frame right after damage that lost its
  timestamp is itself a fragment and does not end the segment. (A stream without key
  frames resumes after ``MAX_SKIP_S`` seconds anyway.)
* **The camera's fps caps analysis.** Frames closer than ``1 / fps`` on the stream's
  clock are dropped (reason ``fps_cap``) before any conversion work.
* **Newest wins.** Frames go into a :class:`~its_runtime.dataplane.ingest.slot.LatestSlot`;
  one the pipeline had no time for is replaced and counted (reason ``behind``).
* **Files play like cameras.** A ``file://`` camera is paced at its own frame rate
  (``realtime``) unless told otherwise, and ends at its end instead of reconnecting.
* **Everything else reconnects** with jittered exponential backoff; a connection that
  delivered frames resets the backoff.
* **Each connection picks its decoder** (:mod:`.decode`: NVDEC or the CPU, with the
  reason, reported to the stats and logged when it changes) and its
  :class:`~.convert.FrameConverter`, which fits frames to the model input (stretch or
  letterbox, from the source size the stream reports) on that path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import av
import av.container
import av.video.frame

from its_runtime.config import CameraConfig, ResizeMode
from its_runtime.dataplane.ingest import decode, source
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.ingest.convert import FrameConverter
from its_runtime.dataplane.ingest.decision import DecodeDecision
from its_runtime.dataplane.ingest.frames import Frame
from its_runtime.dataplane.ingest.slot import LatestSlot
from its_runtime.dataplane.ingest.stats import CameraStats

log = logging.getLogger(__name__)

#: Longest run of frames skipped while waiting for a key frame after corruption.
MAX_SKIP_S = 10.0


class CameraReader:
    """Decodes one camera in a daemon thread into a :class:`LatestSlot`."""

    def __init__(
        self,
        camera: CameraConfig,
        slot: LatestSlot[Frame],
        stats: CameraStats,
        *,
        size: tuple[int, int] | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        realtime: bool | None = None,
        loop_file: bool = False,
        resize: ResizeMode | str = ResizeMode.STRETCH,
        decode_mode: str = "auto",
        device_frames: Callable[[], bool] | None = None,
    ) -> None:
        """``size`` is the (width, height) frames are fitted to (``resize``: stretch or
        letterbox); None keeps the source's. ``decode_mode`` is ``cameraDecode``;
        ``device_frames`` says whether the consumer takes CUDA frames (None: it does not,
        so frames are decoded on the CPU)."""
        self.camera = camera
        self._slot = slot
        self.stats = stats
        self._size = size
        self._resize = ResizeMode(resize)
        self._decode_mode = decode_mode
        self._device_frames = device_frames
        self._open_timeout = open_timeout_s
        self._read_timeout = read_timeout_s
        self.backoff = backoff or Backoff()
        self._is_file = camera.url is not None and source.is_file_url(camera.url)
        self._realtime = self._is_file if realtime is None else realtime
        self._loop_file = loop_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._connection = 0

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("reader already started")
        self._thread = threading.Thread(
            target=self._run, name=f"its-ingest-{self.camera.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it notices between frames or at the next timeout)."""
        self._stop.set()
        self._slot.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.camera.url is None:  # urlEnv (from urlSecretRef) not set
                    self._no_url()
                    continue
                try:
                    container, decision = decode.open_camera(
                        self.camera.url,
                        requested=self._decode_mode,
                        device_frames=self._device_frames,
                        open_timeout_s=self._open_timeout,
                        read_timeout_s=self._read_timeout,
                    )
                except (av.error.FFmpegError, OSError, ValueError) as exc:
                    self.stats.on_open_failed(decode.describe(exc))
                    delay = self.backoff.next_delay()
                    log.warning(
                        "camera %s: open failed (%s); retrying in %.1fs",
                        self.camera.name,
                        decode.describe(exc),
                        delay,
                    )
                    self._stop.wait(delay)
                    continue
                self._connection += 1
                self.stats.on_connected()
                self._decided(decision)
                converter = FrameConverter(self._size, self._resize, decision, self._decided)
                error: str | None = None
                ended = False
                delivered_before = self._seq
                try:
                    ended = self._decode(container, converter)
                    if ended and not self._is_file:
                        error = "the stream ended (the camera closed it)"
                        log.warning("camera %s: %s", self.camera.name, error)
                except Exception as exc:  # network errors, timeouts, demuxer failures
                    error = decode.describe(exc)
                    log.warning("camera %s: stream failed: %s", self.camera.name, error)
                finally:
                    container.close()
                    self.stats.on_disconnected(error)
                if ended and self._is_file and not self._loop_file:
                    break
                if self._seq > delivered_before:
                    self.backoff.reset()
                if not self._stop.is_set():
                    self._stop.wait(self.backoff.next_delay())
        finally:
            self._slot.close()

    def _no_url(self) -> None:
        error = f"no URL: environment variable {self.camera.url_env} is not set"
        self.stats.on_open_failed(error)
        delay = self.backoff.next_delay()
        log.warning("camera %s: %s; retrying in %.1fs", self.camera.name, error, delay)
        self._stop.wait(delay)

    def _decided(self, decision: DecodeDecision) -> None:
        """Record the connection's decode path; log it when it changed (once, not per
        reconnect), as a warning when ``gpu`` was asked for and the CPU decodes."""
        if not self.stats.on_decode(decision):
            return
        log.log(
            logging.WARNING if decision.fell_back else logging.INFO,
            "camera %s: decoding on the %s (cameraDecode %s): %s",
            self.camera.name,
            decision.backend.upper(),
            decision.requested,
            decision.reason,
        )

    def _decode(self, container: av.container.InputContainer, converter: FrameConverter) -> bool:
        """Decode until the stream ends (True) or ``stop`` (False); errors propagate."""
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or self.camera.fps or 30.0)
        frame_step = 1.0 / rate if rate > 0 else 1.0 / 30.0
        min_interval = 1.0 / self.camera.fps
        next_due: float | None = None
        skipping_since: float | None = None  # media time when the corrupt segment began
        last_media: float | None = None
        anchor: tuple[float, float] | None = None  # (media time, monotonic) for pacing

        def corrupt() -> None:
            nonlocal skipping_since
            if skipping_since is None:
                self.stats.on_corrupt_segment()
                skipping_since = last_media if last_media is not None else 0.0

        for packet in container.demux(stream):
            if self._stop.is_set():
                return False
            if packet.size and packet.is_corrupt:
                corrupt()
                self.stats.on_corrupt_skipped()
                continue
            try:
                frames = packet.decode()
            except av.error.EOFError:
                break
            except (av.error.InvalidDataError, av.error.UndefinedError, av.error.BugError):
                corrupt()
                self.stats.on_corrupt_skipped()
                continue
            for frame in frames:
                if not isinstance(frame, av.video.frame.VideoFrame):
                    continue
                media = frame.time
                if media is None:
                    media = 0.0 if last_media is None else last_media + frame_step
                last_media = media
                if frame.is_corrupt:
                    corrupt()
                if skipping_since is not None:
                    # A key frame that lost its timestamp lost its packet's start too
                    # (the PES header): it is damaged, so wait for the next one.
                    resumed = frame.key_frame and not frame.is_corrupt and frame.time is not None
                    if resumed or media - skipping_since > MAX_SKIP_S:
                        skipping_since = None
                    else:
                        self.stats.on_corrupt_skipped()
                        continue
                self.stats.on_decoded()
                if next_due is not None and media < next_due - 0.25 * min_interval:
                    self.stats.on_dropped("fps_cap")
                    continue
                next_due = (
                    media + min_interval
                    if next_due is None or media - next_due > min_interval
                    else next_due + min_interval
                )
                if self._realtime:
                    anchor = self._pace(media, anchor)
                    if self._stop.is_set():
                        return False
                self._deliver(frame, media, converter)
        return True

    def _pace(self, media: float, anchor: tuple[float, float] | None) -> tuple[float, float]:
        now = time.monotonic()
        if anchor is None:
            return (media, now)
        due = anchor[1] + (media - anchor[0])
        if due - now > 1.0 or now - due > 1.0:  # a jump in the stream clock: re-anchor
            return (media, now)
        if due > now:
            self._stop.wait(due - now)
        return anchor

    def _deliver(
        self, frame: av.video.frame.VideoFrame, media: float, converter: FrameConverter
    ) -> None:
        image, device_image, fit = converter.convert(frame)
        self._seq += 1
        item = Frame(
            camera=self.camera.name,
            seq=self._seq,
            connection=self._connection,
            media_time=media,
            decoded_at=time.time(),
            decoded_mono=time.monotonic(),
            image=image,
            source_width=frame.width,
            source_height=frame.height,
            fit=fit,
            device_image=device_image,
        )
        if self._slot.put(item):
            self.stats.on_dropped("behind")

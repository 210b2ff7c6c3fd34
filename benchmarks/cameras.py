"""Cameras per replica at frame latency p99 < 100 ms: this runtime vs the seed's per-camera loop.

The product's real load is cameras, so this benchmark runs the whole camera path in one
process, as ``its-runtime`` does, against real RTSP cameras, and searches for the most
cameras one replica carries while frame latency p99 stays under 100 ms and under 1 % of
the frames the cameras produce go unanalysed.

**Cameras.** Generated two-lane traffic (``its_runtime.kits.synth``: ``two_lane_scene``,
``encode_h264``; H.264 in MPEG-TS, 30 fps, no B-frames) at 960x544 and 1920x1080, long
enough to cover a whole step, cached under ``~/.cache/its-bench-cameras``. They are served
by the devenv RTSP server (``its_devenv.rtsp.RtspServer``, GStreamer): **one server
process per step, N client connections** to it. Every connection gets its own GStreamer
pipeline playing the file from its start in real time, so N connections are N cameras;
one process is cheaper for the CPU than N (one interpreter and GLib main loop instead of
N), and its CPU is measured and reported with the rest.

**The path** (both approaches): the runtime's ``DataPlane`` with its ``CameraPipeline``
per camera: RTSP demux + decode + scale to the model input (the runtime's
``CameraReader``, one thread per camera, newest-wins slot), preprocess
(``frame_to_tensor``), inference, tracking and counting (``CameraAnalyzer``), rows to
PostgreSQL through the runtime's ``RowWriter`` (binary COPY + merge; the devenv
PostgreSQL, settings recorded) and the latest view to L1 and Redis.

* **ours**: the real ``DynamicBatcher`` (``its_runtime.serving.batching``) in front of
  the detector, batching frames across cameras (settings recorded).
* **seed_loop**: the seed's approach: no batcher, one thread per camera (a pool of N
  threads, one frame in flight per camera) that runs the model on each frame at batch 1
  (``executor.run_batch(x[None])``). Everything else is the same objects, so only
  batching and scheduling differ. The engine's calls are serialised by a lock (it owns
  one set of staging buffers; on CPU its AOTInductor container runs one call at a time
  anyway); the colour-box detector is stateless and runs unlocked. The seed loop gets
  the runtime's newest-wins slot too: without it a slow loop would fall ever further
  behind instead of dropping, so this is the kinder comparison for the seed.

**Threads.** As ``its-runtime`` does first thing (``its_runtime.engine.intra_op``), the
process keeps torch's parallel kernels for the batcher's compute thread and runs torch
single-threaded on every other thread, the seed's camera threads included (for the seed
on 2 cores that is faster than torch's default, where each camera thread opens its own
OpenMP team and libgomp throttles them all).

**Detectors.** (1) ``ssdlite``: SSDlite320-MobileNetV3 with random weights, exported
with ``torch.export`` (``its_runtime.kits.models``) and loaded through
``its_runtime.engine.Engine`` with backend ``auto`` (AOTInductor on CPU; TensorRT or
AOTInductor on CUDA, fp16). Random weights score every anchor 1/6, under the 0.3
threshold, so it finds nothing: its runs load decode, preprocess, batching and the
network, while tracking and storage stay light and its counts mean nothing.
(2) ``colourbox``: the hand-weighted torch detector of ``kits/synth_detector.py`` (CPU),
which finds the generated vehicles, so its runs also check counting against the
video's ground truth (the ``counted / truth`` column).

**Search.** For each detector x resolution x approach, N = 1, 2, 4, ... until a step
fails, then bisection between the last pass and the first failure (``--max-cameras``
caps it). A step: start the RTSP server and the data plane with N cameras, wait until
every camera has analysed a frame, warm up (not recorded), then a measurement window
(``--seconds``); only frames whose analysis finished inside the window count. The two
approaches' searches of one config **take turns step by step** (ours, seed, ours, ...),
so a drift in the host's speed (it moves by tens of per cent within minutes on a shared
machine) lands on both sides alike. Each search begins with a **warm-up step** (N = 1,
recorded as ``warmup: true``, never counted): the first step after loading met one-time
costs later steps did not (a p99 of 222 ms where its repeats measured 31-88 ms). A
failing step is **run once more** (after the other side's next step) and N passes if
either run passed, both recorded (``retry: true``): the p99 of 300 frames is decided by
its 3 worst, so one stall of the host would otherwise end a search. ``--no-retry`` and
``--no-warmup-step`` turn these off.

**Definitions** (also written into the JSON):

* *Capture time* of a frame. The server streams in real time, so a frame is captured
  when the camera would have produced it: ``anchor + media_time``, with one anchor per
  camera connection: ``min over its analysed frames of (decoded_at - media_time)`` minus
  the decode + scale time of one frame (median, measured offline on the same file with
  the same PyAV calls). The minimum is the frame that met the least delay (loopback
  transport is ~0); a connection whose every frame was delayed would make latencies
  look smaller, but a decoder that cannot keep up also loses frames, which the drop
  criterion catches.
* *Frame latency* = capture -> analysis done (tracking and counting finished and the
  rows handed to the writer: the pipeline's listener call). The commit to PostgreSQL is
  asynchronous (``flushIntervalS``) and reported separately as ``commit_lag_ms``
  (decode -> commit, from the writer's own ``frame_committed`` report).
* *Dropped* = 1 - frames analysed in the window / frames the cameras produced in it
  (30 x N x window); it covers every cause: newest-wins ``behind`` drops, deadline and
  batcher refusals, a decoder that falls behind. Drops by reason (the runtime's
  ``CameraStats``) are recorded too.
* *Stages* per frame (ms, mean and p99), which add up to the latency: ``ingest``
  (capture -> out of the decoder, scaled: decode, scale, transport, waiting for the
  CPU), ``slot`` (newest-wins slot and event loop), ``preprocess`` (``frame_to_tensor``),
  ``queue`` (batcher wait; seed: waiting for the engine lock), ``compute`` (collate /
  staging + forward), ``postprocess`` (decoding boxes, NMS), ``return`` (result back on
  the camera's task), ``tracking`` (``CameraAnalyzer.process``: tracking + counting),
  ``store`` (rows built and handed to the ``RowWriter``). How: timing wrappers installed
  by this script, never edits of product code: ``camera.frame_to_tensor`` and
  ``CameraAnalyzer.process`` are wrapped in place, the executor is wrapped (``stage``,
  ``run_batch``; the batched frames are matched to the submitted tensors), the engine's
  post-processing (``engine.postprocess.to_detections``, after a CUDA synchronise so
  ``compute`` holds the GPU time) and the colour-box detector's box step are timed.
  ``decode_offline_ms`` is decode + scale of one frame on an idle thread (PyAV, same
  file, same size).
* *CPU per camera* = (this process's CPU seconds, all threads + the RTSP server
  process's) / N / window seconds, i.e. cores per camera. PostgreSQL's and Redis's CPU
  are not included (shared services).

Writes ``benchmarks/results/cameras.json`` and ``cameras.png`` (cameras vs p99 latency
and vs dropped frames, one line per approach x config) and prints a table.

Usage: ``python benchmarks/cameras.py [--quick] [--out PATH] [--resolutions 960x544,...]
[--detectors ssdlite,colourbox] [--approaches ours,seed_loop] [--max-cameras N] [--seconds S]
[--warmup S] [--decode cpu|gpu|auto] [--device cuda:0] [--backend auto]``;
``make bench-cameras``. ``--quick``: 960x544 only, up to 3 cameras, 1.5 s warm-up and 3 s
windows (a smoke run, not numbers). ``--decode`` is the runtime's ``cameraDecode``
(``RuntimeConfig.camera_decode``; refused if this runtime has none) and ``--device`` the
engine's device: on a CUDA machine the engine runs there, and with ``--decode auto|gpu``
the cameras may decode with NVDEC into it (the colour-box detector stays on the CPU, and
its cameras decode on the CPU). The capture anchor's decode correction is always the
CPU decode time.
"""

# ruff: noqa: E402  (its_runtime.openmp_env must come before torch is imported)
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime
import functools
import inspect
import json
import logging
import os
import pathlib
import platform
import resource
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from its_runtime import openmp_env  # first, as in its-runtime's main: before torch loads

OPENMP = openmp_env.effective()

import asyncpg
import av
import numpy as np
import torch

from its_devenv import rtsp
from its_devenv import services as devservices
from its_runtime import config
from its_runtime.config import (
    BatchingConfig,
    CacheConfig,
    CameraConfig,
    CountingLine,
    DatabaseConfig,
    ModelConfig,
    Point,
    RuntimeConfig,
)
from its_runtime.dataplane import camera as camera_mod
from its_runtime.dataplane.analytics import analyzer
from its_runtime.dataplane.plane import DataPlane
from its_runtime.detections import Detections
from its_runtime.engine import Engine, intra_op
from its_runtime.engine import postprocess as postprocess_mod
from its_runtime.kits import synth
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.observability import dataplane_stats, gc_settle
from its_runtime.observability.metrics import PrometheusSchedulerObserver
from its_runtime.serving import app as app_mod
from its_runtime.serving.batching import BatchExecutor, DynamicBatcher

log = logging.getLogger("bench-cameras")
ROOT = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "cameras.json"
CACHE = pathlib.Path(os.environ.get("ITS_BENCH_CACHE", pathlib.Path.home() / ".cache")) / (
    "its-bench-cameras"
)

FPS = 30
P99_LIMIT_MS = 100.0
DROP_LIMIT_PCT = 1.0
RESOLUTIONS: dict[str, tuple[int, int]] = {"960x544": (960, 544), "1920x1080": (1920, 1080)}
DETECTORS = ("ssdlite", "colourbox")
APPROACHES = ("ours", "seed_loop")
HEADLINE = ("ssdlite", "960x544")
#: SSDlite as ``benchmarks/serving.py`` exports it: 320x320, six classes, raw yolo output.
SSD_INPUT = (3, 320, 320)
SSD_CLASSES = 6
#: The colour-box detector at the input size the data-plane benchmark and the demo use.
COLOUR_INPUT = (3, 96, 160)
MAX_BATCH = 16
BATCHING = BatchingConfig(max_batch_size=MAX_BATCH, opt_batch_size=8, max_queue_delay_ms=2)
#: A vertical counting line across both lanes, as in ``benchmarks/data_plane.py``.
LINE = CountingLine(name="mid", start=Point(x=0.5, y=1.0), end=Point(x=0.5, y=0.0))
VEHICLE_EVERY_S = 1.6
#: Largest gap between a counted crossing's media time and the true one it matches.
MATCH_S = 0.3
STAGES = (
    "ingest",
    "slot",
    "preprocess",
    "queue",
    "compute",
    "postprocess",
    "return",
    "tracking",
    "store",
)


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# -- instrumentation: timing wrappers installed from outside the product code -----------------


@dataclasses.dataclass
class BatchRecord:
    """One model call: the batch size and wall-clock times (``time.time()``)."""

    size: int
    start: float
    post_start: float | None = None
    end: float = 0.0


@dataclasses.dataclass
class Trace:
    """The frame a camera's task is working on (one in flight per camera)."""

    seq: int = -1
    pre0: float | None = None
    pre1: float | None = None
    submit: float | None = None
    batch: BatchRecord | None = None
    track0: float | None = None
    track1: float | None = None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One analysed frame, with the times of each stage."""

    camera: str
    media: float
    decoded_at: float
    done: float
    pre0: float | None
    pre1: float | None
    submit: float | None
    batch: BatchRecord | None
    track0: float | None
    track1: float | None


class Recorder:
    """What the current step's wrappers and observers saw."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.crossings: dict[str, list[tuple[float, str, str]]] = {}
        self.batches: list[BatchRecord] = []
        self.commits: list[tuple[float, float]] = []  # (when, lag s)

    def reset(self) -> None:
        self.samples, self.crossings, self.batches, self.commits = [], {}, [], []


REC = Recorder()
_TRACE: contextvars.ContextVar[tuple[object, Trace] | None] = contextvars.ContextVar(
    "bench_trace", default=None
)
_IN_CALL = threading.local()  # the BatchRecord of the model call running on this thread
#: Untyped in torch's stubs; a typed alias keeps strict mypy content.
_cuda_initialized: Callable[[], bool] = torch.cuda.is_initialized


def trace() -> Trace:
    """This camera task's trace (each camera's pipeline runs in its own asyncio task).

    Kept in a context variable, checked against the task: a task inherits its creator's
    context, and must not inherit its creator's trace."""
    task = asyncio.current_task()
    current = _TRACE.get()
    if current is None or current[0] is not task:
        current = (task, Trace())
        _TRACE.set(current)
    return current[1]


def post_started() -> None:
    """Mark the start of post-processing in the model call running on this thread."""
    rec: BatchRecord | None = getattr(_IN_CALL, "rec", None)
    if rec is not None and rec.post_start is None:
        if torch.cuda.is_available() and _cuda_initialized():
            torch.cuda.synchronize()  # the forward's GPU time belongs to compute
        rec.post_start = time.time()


def install_wrappers() -> dict[str, str]:
    """Wrap the measured functions in place (once); returns how each stage is measured."""
    how: dict[str, str] = {}
    to_tensor = getattr(camera_mod, "frame_to_tensor", None)
    if callable(to_tensor):

        @functools.wraps(to_tensor)
        def timed_to_tensor(frame: Any, *args: Any, **kw: Any) -> Any:
            tr = trace()
            tr.seq = int(getattr(frame, "seq", -1))
            tr.pre0 = time.time()
            out = to_tensor(frame, *args, **kw)
            tr.pre1 = time.time()
            return out

        camera_mod.frame_to_tensor = timed_to_tensor
        how["preprocess"] = "wrapper around its_runtime.dataplane.camera.frame_to_tensor"
    else:
        how["preprocess"] = "not separable (frame_to_tensor not found): inside 'slot'"

    process = analyzer.CameraAnalyzer.process

    @functools.wraps(process)
    def timed_process(self: analyzer.CameraAnalyzer, *args: Any, **kw: Any) -> Any:
        t0 = time.time()
        out = process(self, *args, **kw)
        tr = trace()
        tr.track0, tr.track1 = t0, time.time()
        return out

    setattr(analyzer.CameraAnalyzer, "process", timed_process)  # noqa: B010
    how["tracking"] = "wrapper around CameraAnalyzer.process (tracking + line counting)"

    to_detections = postprocess_mod.to_detections

    @functools.wraps(to_detections)
    def timed_to_detections(*args: Any, **kw: Any) -> Any:
        post_started()
        return to_detections(*args, **kw)

    setattr(postprocess_mod, "to_detections", timed_to_detections)  # noqa: B010
    how["compute"] = (
        "executor wrapper: batch collate/staging + forward, up to post-processing "
        "(after a CUDA synchronise)"
    )
    how["postprocess"] = (
        "engine: wrapper around engine.postprocess.to_detections; colour box: its box step"
    )
    how["queue"] = "submit -> the executor starts the frame's batch (seed: engine lock wait)"
    how["ingest"] = "capture (see definition) -> decoded_at (the runtime's Frame)"
    how["slot"] = "decoded_at -> frame_to_tensor starts (newest-wins slot, event loop)"
    how["return"] = "model call done -> CameraAnalyzer.process starts (result back on the loop)"
    how["store"] = "CameraAnalyzer.process done -> rows handed to the RowWriter (listener)"
    return how


class TimedExecutor:
    """A ``BatchExecutor`` that times its inner one and remembers each frame's batch."""

    def __init__(self, inner: BatchExecutor) -> None:
        self.inner = inner
        self._by_frame: dict[int, BatchRecord] = {}
        self._staged: dict[int, BatchRecord] = {}

    @property
    def max_batch_size(self) -> int:
        return self.inner.max_batch_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.inner.input_shape

    @property
    def pipeline_depth(self) -> int:
        return self.inner.pipeline_depth

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        rec = BatchRecord(size=len(frames), start=time.time())
        for f in frames:
            self._by_frame[id(f)] = rec
        out = self.inner.stage(frames)
        self._staged[id(out)] = rec
        return out

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        rec = self._staged.pop(id(batch), None)
        if rec is None:
            rec = BatchRecord(size=int(batch.shape[0]), start=time.time())
        return self.timed(batch, rec)

    def timed(self, batch: torch.Tensor, rec: BatchRecord) -> list[Detections]:
        _IN_CALL.rec = rec
        try:
            out = self.inner.run_batch(batch)
        finally:
            _IN_CALL.rec = None
        rec.end = time.time()
        REC.batches.append(rec)
        return out

    def record_for(self, frame: torch.Tensor) -> BatchRecord | None:
        return self._by_frame.pop(id(frame), None)

    def forget(self) -> None:
        self._by_frame.clear()
        self._staged.clear()


class TimedColourBox(ColourBoxDetector):
    """The colour-box detector with its box step (its post-processing) timed apart."""

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        with torch.inference_mode():
            scores, labels = self.net(batch)
            post_started()
            out = [self._boxes(scores[i], labels[i]) for i in range(batch.shape[0])]
        self.frames_run += int(batch.shape[0])
        return out


class Batched:
    """Ours: the pipeline's detector is the real batcher (this only notes the times)."""

    def __init__(self, batcher: DynamicBatcher, timed: TimedExecutor) -> None:
        self.batcher = batcher
        self.timed = timed

    async def submit(
        self, item: torch.Tensor, *, deadline: float | None = None, priority: int = 0
    ) -> Detections:
        tr = trace()
        tr.submit, tr.batch = time.time(), None
        try:
            return await self.batcher.submit(item, deadline=deadline, priority=priority)
        finally:
            tr.batch = self.timed.record_for(item)


class SeedLoop:
    """The seed's approach: each camera's frame runs alone (batch 1) on its own thread."""

    def __init__(self, timed: TimedExecutor, cameras: int, *, serialise: bool) -> None:
        self.timed = timed
        self._pool = concurrent.futures.ThreadPoolExecutor(cameras, "seed-camera")
        self._lock = threading.Lock() if serialise else None

    async def submit(
        self, item: torch.Tensor, *, deadline: float | None = None, priority: int = 0
    ) -> Detections:
        tr = trace()
        tr.submit, tr.batch = time.time(), None
        loop = asyncio.get_running_loop()
        detections, rec = await loop.run_in_executor(self._pool, self._one, item)
        tr.batch = rec
        return detections

    def _one(self, item: torch.Tensor) -> tuple[Detections, BatchRecord]:
        with self._lock if self._lock is not None else contextlib.nullcontext():
            rec = BatchRecord(size=1, start=time.time())
            with torch.inference_mode():
                out = self.timed.timed(item[None], rec)
        return out[0], rec

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RecordingStore(dataplane_stats.PrometheusStore):
    """The runtime's Prometheus store observer, also keeping commit lags."""

    def frame_committed(self, lag_s: float) -> None:
        super().frame_committed(lag_s)
        REC.commits.append((time.time(), lag_s))


def on_frame(result: analyzer.FrameAnalysis) -> None:
    """The pipeline's listener: the frame's analysis is done (rows handed to the writer)."""
    done = time.time()
    tr = trace()
    fresh = tr.seq == result.seq
    REC.samples.append(
        Sample(
            camera=result.camera,
            media=result.media_time,
            decoded_at=result.wall_time,
            done=done,
            pre0=tr.pre0 if fresh else None,
            pre1=tr.pre1 if fresh else None,
            submit=tr.submit,
            batch=tr.batch,
            track0=tr.track0,
            track1=tr.track1,
        )
    )
    for ev in result.events:
        if ev.kind == analyzer.CROSSING:
            REC.crossings.setdefault(result.camera, []).append(
                (ev.media_time, ev.direction, ev.class_name)
            )
    tr.seq, tr.submit, tr.batch, tr.track0, tr.track1 = -1, None, None, None, None


# -- inputs: videos, decode cost, detectors ------------------------------------------------


def video_for(resolution: str, duration_s: float) -> tuple[pathlib.Path, synth.Scene]:
    width, height = RESOLUTIONS[resolution]
    scene = synth.two_lane_scene(
        duration_s, every_s=VEHICLE_EVERY_S, width=width, height=height, fps=FPS
    )
    path = CACHE / "videos" / f"two-lane-{resolution}-{FPS}fps-{duration_s:.0f}s.ts"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {path.name} ...", flush=True)
        started = time.monotonic()
        tmp = path.with_suffix(".tmp.ts")
        synth.encode_h264(scene, tmp)
        tmp.rename(path)
        print(f"  {time.monotonic() - started:.1f}s", flush=True)
    return path, scene


def decode_cost(path: pathlib.Path, size: tuple[int, int], frames: int = 150) -> dict[str, float]:
    """Decode + scale of one frame (ms), PyAV as the reader calls it, on an idle thread."""
    times: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            start = time.perf_counter()
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                    now = time.perf_counter()
                    times.append(now - start)
                    start = now
            if len(times) >= frames:
                break
    ms = [t * 1000 for t in times[5:]] or [t * 1000 for t in times]
    return {"p50": round(statistics.median(ms), 2), "p99": round(pct(ms, 99) or 0.0, 2)}


def ssd_model_config(device: torch.device, backend: str) -> ModelConfig:
    path = CACHE / f"ssdlite320-c{SSD_CLASSES}-b{MAX_BATCH}.pt2"
    if not path.exists():
        from its_runtime.kits.models import export, ssdlite

        print(f"exporting SSDlite320-MobileNetV3 (random weights) to {path} ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        net = ssdlite.build_ssdlite_raw(SSD_CLASSES, (SSD_INPUT[1], SSD_INPUT[2]))
        export.save_exported_program(net, path, SSD_INPUT, max_batch=MAX_BATCH)
    return ModelConfig.model_validate(
        {
            "path": str(path),
            "inputShape": list(SSD_INPUT),
            "outputFormat": "yolo",
            "backend": backend,
            "precision": "fp16" if device.type == "cuda" else "fp32",
            "batching": BATCHING.model_dump(by_alias=True),
        }
    )


def colour_model_config() -> ModelConfig:
    return ModelConfig(
        path="/models/colour-boxes.pt2",  # in process: the config only gives shape and names
        input_shape=list(COLOUR_INPUT),
        batching=BATCHING,
    )


@dataclasses.dataclass
class DetectorSetup:
    name: str
    model: ModelConfig
    executor: BatchExecutor
    #: The engine's calls must be serialised when called from several threads.
    serialise: bool
    on_cuda: bool
    describe: dict[str, Any]


def load_ssdlite(device_arg: str | None, backend: str) -> DetectorSetup:
    device = torch.device(device_arg or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    model = ssd_model_config(device, backend)
    print(f"loading the engine ({backend}) on {device} ...", flush=True)
    started = time.monotonic()
    engine = Engine.load(
        model,
        config.EngineCacheConfig(dir=str(CACHE / "engines")),
        config.GpuConfig(),
        device_arg,
    )
    engine.warmup()
    info = dict(engine.describe())
    info["load_and_warmup_s"] = round(time.monotonic() - started, 1)
    print(
        f"  {info['backend']} ({info['precision']}, {info['origin']}) in "
        f"{info['load_and_warmup_s']}s",
        flush=True,
    )
    return DetectorSetup(
        name="ssdlite",
        model=model,
        executor=engine,
        serialise=True,
        on_cuda=bool(getattr(engine, "accepts_device_batches", False)),
        describe=info,
    )


def load_colourbox() -> DetectorSetup:
    return DetectorSetup(
        name="colourbox",
        model=colour_model_config(),
        executor=TimedColourBox(COLOUR_INPUT, max_batch_size=MAX_BATCH),
        serialise=False,
        on_cuda=False,
        describe={
            "kind": "ColourBoxDetector (kits/synth_detector.py), in process, CPU, float32",
            "input_shape": list(COLOUR_INPUT),
            "max_batch_size": MAX_BATCH,
        },
    )


# -- one step: N cameras, one approach ----------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    if pid == 0:  # no server process (file cameras)
        return 0.0
    """utime + stime (+ waited-for children) of a process, in seconds."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Context:
    dsn: str | None  # None: no database (``--no-store``: rows are counted, not written)
    redis_url: str | None
    source: str  # rtsp (a GStreamer RTSP server) or file (file:// cameras paced in real time)
    deadline: float | None  # time.monotonic() after which no new step starts (--budget-s)
    seconds: float
    warmup_s: float
    video_s: float
    decode: str
    decode_exposed: bool
    decode_costs: dict[str, dict[str, float]]
    videos: dict[str, tuple[pathlib.Path, synth.Scene]]
    #: Run a failing step once more (N passes if either run passed); see ``search``.
    retries: bool = True
    #: Precede each search with a warm-up step that is recorded but never counted.
    warm_up_step: bool = True


def runtime_config(
    ctx: Context, det: DetectorSetup, url: str, n: int, journal: str
) -> RuntimeConfig:
    extra: dict[str, Any] = {"camera_decode": ctx.decode} if ctx.decode_exposed else {}
    if ctx.dsn is not None:
        extra["database"] = DatabaseConfig(dsn_env="DSN", journal_dir=journal)
        extra["cache"] = CacheConfig(redis_url_env="REDIS")
    return RuntimeConfig(
        model=det.model,
        cameras=[
            CameraConfig(name=f"cam-{i}", url=url, fps=FPS, lines=[LINE], meters_per_pixel=0.05)
            for i in range(n)
        ],
        **extra,
    )


async def run_step(
    ctx: Context, det: DetectorSetup, approach: str, resolution: str, n: int
) -> dict[str, Any]:
    step_started = time.monotonic()
    started_at = time.time()
    choice: intra_op.Choice | None = None
    video, scene = ctx.videos[resolution]
    REC.reset()
    timed = TimedExecutor(det.executor)
    batcher: DynamicBatcher | None = None
    seed: SeedLoop | None = None
    detector: Batched | SeedLoop
    if approach == "ours":
        plan = getattr(det.executor, "plan", None)
        batcher = DynamicBatcher(timed, BATCHING, plan=plan, observer=PrometheusSchedulerObserver())
        batcher.start()
        # What its-runtime does after its warm-up: keep the compute thread's intra-op
        # threads only if they make the forward faster (engine.intra_op.choose).
        choice = await batcher.call_in_worker(
            lambda: intra_op.choose(app_mod.probe_forward(det.executor))
        )
        detector = Batched(batcher, timed)
    else:
        seed = SeedLoop(timed, n, serialise=det.serialise)
        detector = seed
    observers = dataplane_stats.DataPlaneObservers(
        ingest=dataplane_stats.PROMETHEUS.ingest,
        analytics=dataplane_stats.PROMETHEUS.analytics,
        cache=dataplane_stats.PROMETHEUS.cache,
        store=RecordingStore(),
    )
    plane_kw: dict[str, Any] = {}
    if "device_frames" in inspect.signature(DataPlane).parameters and det.on_cuda:
        plane_kw["device_frames"] = lambda: True
    server = rtsp.RtspServer(video) if ctx.source == "rtsp" else contextlib.nullcontext()
    decode_state: Any = None
    with tempfile.TemporaryDirectory() as journal, server:
        url = server.url if isinstance(server, rtsp.RtspServer) else video.resolve().as_uri()
        cfg = runtime_config(ctx, det, url, n, journal)
        env = {} if ctx.dsn is None else {"DSN": ctx.dsn, "REDIS": ctx.redis_url or ""}
        plane = DataPlane(
            cfg, detector, env=env, listener=on_frame, observers=observers, **plane_kw
        )
        server_pid = server.proc.pid if isinstance(server, rtsp.RtspServer) and server.proc else 0
        try:
            await plane.start()
            started = time.monotonic()
            while time.monotonic() - started < 20.0:
                pipes = list(plane.pipelines.values())
                if len(pipes) == n and all(p.stats.frames_analysed > 0 for p in pipes):
                    break
                await asyncio.sleep(0.1)
            open_s = time.monotonic() - started
            await asyncio.sleep(ctx.warmup_s)
            stats0 = {c: p.stats.snapshot() for c, p in plane.pipelines.items()}
            t0, cpu0, srv0 = time.time(), own_cpu_s(), proc_cpu_s(server_pid)
            load0 = os.getloadavg()[0]
            await asyncio.sleep(ctx.seconds)
            t1, cpu1, srv1 = time.time(), own_cpu_s(), proc_cpu_s(server_pid)
            stats1 = {c: p.stats.snapshot() for c, p in plane.pipelines.items()}
            await asyncio.sleep(0.5)  # crossings confirmed just after the window still count
            if hasattr(plane, "decode_state"):
                decode_state = plane.decode_state()
            await plane.stop_cameras()
            if plane.writer is not None:
                await plane.writer.flush()
            writer = None if plane.writer is None else plane.writer.details()
        finally:
            await plane.stop()
            if batcher is not None:
                await batcher.close()
            if seed is not None:
                seed.close()
            timed.forget()
    run = summarise(
        ctx,
        det,
        approach,
        resolution,
        n,
        scene,
        window=(t0, t1),
        cpu=(cpu1 - cpu0, srv1 - srv0),
        stats=(stats0, stats1),
    )
    run["open_s"] = round(open_s, 2)
    run["load_average_1m"] = round(load0, 2)
    run["rows_written"] = None if writer is None else writer["rows_written"]
    if decode_state is not None:
        run["decode"] = {k: decode_state.get(k) for k in ("requested", "gpu", "cpu")}
    if ctx.dsn is not None:
        await truncate(ctx.dsn)
    run["step_s"] = round(time.monotonic() - step_started, 1)
    run["started_at"] = round(started_at, 2)
    if choice is not None:
        run["compute_threads"] = {
            "chosen": choice.threads,
            "probe_ms": {str(n): round(t * 1000, 2) for n, t in sorted(choice.seconds.items())},
        }
    return run


async def truncate(dsn: str) -> None:
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("TRUNCATE detections, traffic_events, interval_counts")
        finally:
            await conn.close()


def anchors(samples: list[Sample], decode_s: float) -> dict[int, float]:
    """Capture anchor per sample index: one per camera connection (media time restarts)."""
    out: dict[int, float] = {}
    by_cam: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_cam.setdefault(s.camera, []).append(i)
    for idx in by_cam.values():
        idx.sort(key=lambda i: samples[i].decoded_at)
        epochs: list[list[int]] = [[]]
        last = None
        for i in idx:
            if last is not None and samples[i].media < last - 1.0:
                epochs.append([])
            epochs[-1].append(i)
            last = samples[i].media
        for epoch in epochs:
            if not epoch:
                continue
            anchor = min(samples[i].decoded_at - samples[i].media for i in epoch) - decode_s
            out.update(dict.fromkeys(epoch, anchor))
    return out


def stage_times(s: Sample, capture: float) -> dict[str, float]:
    """Milliseconds per stage of one frame (stages that could not be timed are left out)."""
    ms: dict[str, float] = {"ingest": s.decoded_at - capture}
    before_queue = s.pre1 if s.pre1 is not None else s.submit
    if s.pre0 is not None and s.pre1 is not None:
        ms["slot"] = s.pre0 - s.decoded_at
        ms["preprocess"] = s.pre1 - s.pre0
    elif s.submit is not None:
        ms["slot"] = s.submit - s.decoded_at
    b = s.batch
    if b is not None and before_queue is not None and b.end:
        ms["queue"] = b.start - before_queue
        post0 = b.post_start if b.post_start is not None else b.end
        ms["compute"] = post0 - b.start
        ms["postprocess"] = b.end - post0
        if s.track0 is not None:
            ms["return"] = s.track0 - b.end
    if s.track0 is not None and s.track1 is not None:
        ms["tracking"] = s.track1 - s.track0
        ms["store"] = s.done - s.track1
    return {k: v * 1000 for k, v in ms.items()}


def count_check(
    samples: list[Sample], window: tuple[float, float], scene: synth.Scene
) -> dict[str, Any]:
    """Crossings counted vs the video's ground truth, per camera over the media time it
    analysed in the window (less 0.5 s at the start and 1 s at the end, where a track is
    still being confirmed). A counted crossing matches a true one of the same direction
    and class within ``MATCH_S`` of its time; unmatched counts are extras."""
    truth = scene.crossings(LINE)
    counted_total = truth_total = exact = cams = 0
    wrong: list[dict[str, Any]] = []
    for cam in sorted({s.camera for s in samples}):
        media = [s.media for s in samples if s.camera == cam and window[0] <= s.done <= window[1]]
        if not media:
            continue
        lo, hi = min(media) + 0.5, max(media) - 1.0
        if hi <= lo:
            continue
        cams += 1
        events = [e for e in REC.crossings.get(cam, []) if lo - MATCH_S <= e[0] <= hi + MATCH_S]
        want = [g for g in truth if lo <= g.time <= hi]
        used: set[int] = set()
        missed = 0
        for g in want:
            near = [
                (abs(m - g.time), i)
                for i, (m, d, c) in enumerate(events)
                if i not in used
                and d == g.direction
                and c == g.class_name
                and abs(m - g.time) <= MATCH_S
            ]
            if near:
                used.add(min(near)[1])
            else:
                missed += 1
        extra = sum(1 for i, e in enumerate(events) if i not in used and lo <= e[0] <= hi)
        counted_total += len(used) + extra
        truth_total += len(want)
        if missed == 0 and extra == 0:
            exact += 1
        elif len(wrong) < 8:
            wrong.append(
                {
                    "camera": cam,
                    "media_s": [round(lo, 2), round(hi, 2)],
                    "truth": len(want),
                    "missed": missed,
                    "extra": extra,
                }
            )
    return {
        "counted": counted_total,
        "truth": truth_total,
        "exact_cameras": exact,
        "cameras": cams,
        "mismatches": wrong,
    }


def summarise(
    ctx: Context,
    det: DetectorSetup,
    approach: str,
    resolution: str,
    n: int,
    scene: synth.Scene,
    *,
    window: tuple[float, float],
    cpu: tuple[float, float],
    stats: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    t0, t1 = window
    span = t1 - t0
    samples = REC.samples
    decode = ctx.decode_costs[f"{det.name}@{resolution}"]
    anchor = anchors(samples, decode["p50"] / 1000)
    latencies: list[float] = []
    halves: tuple[list[float], list[float]] = ([], [])
    per_stage: dict[str, list[float]] = {k: [] for k in STAGES}
    for i, s in enumerate(samples):
        if not t0 <= s.done <= t1:
            continue
        capture = anchor[i] + s.media
        latencies.append((s.done - capture) * 1000)
        halves[s.done >= (t0 + t1) / 2].append(latencies[-1])
        for k, v in stage_times(s, capture).items():
            per_stage[k].append(v)
    produced = FPS * n * span
    analysed = len(latencies)
    drop_pct = max(0.0, 100.0 * (1.0 - analysed / produced)) if produced else 100.0
    reasons: dict[str, int] = {}
    decoded = 0
    s0, s1 = stats
    for cam, after in s1.items():
        before = s0.get(cam, {"frames_dropped": {}, "frames_decoded": 0})
        decoded += after["frames_decoded"] - before["frames_decoded"]
        for reason, k in after["frames_dropped"].items():
            delta = k - before["frames_dropped"].get(reason, 0)
            if delta:
                reasons[reason] = reasons.get(reason, 0) + delta
    batches = [b for b in REC.batches if t0 <= b.end <= t1]
    sizes = [b.size for b in batches]
    commits = [lag * 1000 for when, lag in REC.commits if t0 <= when <= t1]
    p99 = pct(latencies, 99)
    passed = analysed > 0 and p99 is not None and p99 < P99_LIMIT_MS and drop_pct <= DROP_LIMIT_PCT
    own, server = cpu
    run: dict[str, Any] = {
        "approach": approach,
        "detector": det.name,
        "resolution": resolution,
        "cameras": n,
        "window_s": round(span, 2),
        "frames_produced": round(produced),
        "frames_decoded": decoded,
        "frames_analysed": analysed,
        "drop_pct": round(drop_pct, 2),
        "drops_by_reason": reasons,
        "fps_analysed": round(analysed / span, 1),
        "latency_ms": {
            "p50": rnd(pct(latencies, 50), 1),
            "p90": rnd(pct(latencies, 90), 1),
            "p99": rnd(p99, 1),
            "max": rnd(max(latencies), 1) if latencies else None,
            # A first half much worse than the second: the warm-up was too short.
            "p99_by_half": [rnd(pct(h, 99), 1) for h in halves],
        },
        "stages_ms": {
            k: {"mean": rnd(statistics.fmean(v)), "p99": rnd(pct(v, 99))}
            for k, v in per_stage.items()
            if v
        },
        "decode_offline_ms": decode,
        "batches": {
            "count": len(batches),
            "mean_size": rnd(statistics.fmean(sizes)) if sizes else None,
            "max_size": max(sizes) if sizes else None,
        },
        "commit_lag_ms": {"p50": rnd(pct(commits, 50), 1), "p99": rnd(pct(commits, 99), 1)},
        "cpu": {
            "process_cores": round(own / span, 3),
            "rtsp_server_cores": round(server / span, 3),
            "cores_per_camera": round((own + server) / span / n, 3),
        },
        "counts": count_check(samples, window, scene) if det.name == "colourbox" else None,
        "pass": passed,
    }
    return run


# -- the search ---------------------------------------------------------------------------


def line_of(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    counts = run["counts"]
    check = "" if counts is None else f"  counted {counts['counted']}/{counts['truth']}"
    batch = run["batches"]["mean_size"]
    return (
        f"  {run['approach']:<9} N={run['cameras']:<3} p50 {lat['p50']!s:>7} p99 "
        f"{lat['p99']!s:>7} ms  drop {run['drop_pct']:6.2f}%  {run['fps_analysed']:6.1f} fps  "
        f"batch {batch!s:>5}  cpu/cam {run['cpu']['cores_per_camera']:.2f}  "
        f"{'PASS' if run['pass'] else 'fail'}{check}  ({run['step_s']}s)"
        + ("  [warm-up, not counted]" if run.get("warmup") else "")
        + ("  [retry]" if run.get("retry") else "")
    )


async def search(
    ctx: Context,
    det: DetectorSetup,
    approach: str,
    resolution: str,
    max_cameras: int,
    turn: asyncio.Lock,
) -> tuple[int, list[dict[str, Any]]]:
    """Largest N that passes: doubling, then bisection (assumes failing is monotonic in N).

    Every step runs holding ``turn``: the approaches' searches run concurrently and take
    turns step by step (``asyncio.Lock`` wakes its waiters in order), so the two sides'
    steps alternate in time and a drift of the host's speed lands on both. A failing step
    is run once more (after the other side's next step) and N passes if either run
    passed: one hiccup (a stall of the host in a 10 s window decides a p99 of 300
    frames) does not end a search; both runs are recorded, the second with
    ``retry: true``. The first step of every search is preceded by a warm-up step
    (N = 1, recorded under ``warmup: true``, never counted): the first step after
    loading met one-time costs the later ones did not."""
    runs: list[dict[str, Any]] = []
    done: dict[int, bool] = {}

    async def step(n: int, **marks: bool) -> dict[str, Any] | None:
        async with turn:
            if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                print(f"  N={n}: not run, --budget-s spent (counted as not passing)", flush=True)
                return None
            run = await run_step(ctx, det, approach, resolution, n)
        run.update(marks)
        print(line_of(run), flush=True)
        runs.append(run)
        return run

    async def ok(n: int) -> bool:
        if n not in done:
            run = await step(n)
            passed = run is not None and bool(run["pass"])
            if run is not None and not passed and ctx.retries:
                again = await step(n, retry=True)
                passed = again is not None and bool(again["pass"])
            done[n] = passed
        return done[n]

    if ctx.warm_up_step:
        await step(1, warmup=True)
    good, bad = 0, None
    n = 1
    while n <= max_cameras:
        if await ok(n):
            good = n
            n *= 2
        else:
            bad = n
            break
    if bad is None and good < max_cameras:
        if await ok(max_cameras):
            good = max_cameras
        else:
            bad = max_cameras
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if await ok(mid):
            good = mid
        else:
            bad = mid
    return good, runs


# -- machine, services, report -------------------------------------------------------------


def process_age_s() -> float:
    """Seconds since this process started (imports included)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = pathlib.Path("/proc/self/stat").read_text()
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    return float("nan")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def postgres_settings(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        names = ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        out = {k: str(await conn.fetchval(f"SHOW {k}")) for k in names}
        out["shared_buffers"] = str(await conn.fetchval("SHOW shared_buffers"))
        return out
    finally:
        await conn.close()


def summary_of(results: dict[str, dict[str, int]], max_cameras: int) -> dict[str, Any]:
    by_config: dict[str, Any] = {}
    for key, found in results.items():
        ours, seed = found.get("ours"), found.get("seed_loop")
        ratio = None if ours is None or not seed else round(ours / seed, 2)
        by_config[key] = {
            "ours": ours,
            "seed_loop": seed,
            "ratio": ratio,
            "ratio_note": "seed_loop carries no camera: no ratio" if seed == 0 else None,
            "capped_at_max_cameras": [a for a, v in found.items() if v >= max_cameras],
        }
    head = by_config.get(f"{HEADLINE[0]}@{HEADLINE[1]}", {})
    return {
        "criterion": f"frame latency p99 < {P99_LIMIT_MS:.0f} ms and dropped <= {DROP_LIMIT_PCT}%",
        "headline_config": f"{HEADLINE[0]}@{HEADLINE[1]}",
        "max_cameras_p99_under_100ms": {
            "ours": head.get("ours"),
            "seed_loop": head.get("seed_loop"),
        },
        "vs_seed_loop_ratio": head.get("ratio"),
        "by_config": by_config,
        "max_cameras_searched": max_cameras,
    }


def deciding(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run that decided each (config, approach, N): warm-up steps left out; of a step
    and its retry the passing one (N passed if either did), else the retry."""
    best: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for r in runs:
        if r.get("warmup"):
            continue
        key = (r["detector"], r["resolution"], r["approach"], r["cameras"])
        if key not in best or not best[key]["pass"]:
            best[key] = r
    return list(best.values())


def plot(runs: list[dict[str, Any]], path: pathlib.Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed (the 'bench' extra): no {path.name}")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = deciding(runs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    configs = sorted({(r["detector"], r["resolution"]) for r in runs})
    colours = {c: f"C{i}" for i, c in enumerate(configs)}
    keys = sorted({(r["detector"], r["resolution"], r["approach"]) for r in runs})
    for det, res, approach in keys:
        pts = sorted(
            (r["cameras"], r["latency_ms"]["p99"], r["drop_pct"])
            for r in runs
            if (r["detector"], r["resolution"], r["approach"]) == (det, res, approach)
        )
        xs = [p[0] for p in pts]
        style = {"color": colours[(det, res)]}
        style.update(
            {"ls": "-", "marker": "o"} if approach == "ours" else {"ls": "--", "marker": "s"}
        )
        label = f"{approach} · {det} · {res}"
        ax1.plot(
            xs, [p[1] if p[1] is not None else float("nan") for p in pts], label=label, **style
        )
        ax2.plot(xs, [p[2] for p in pts], label=label, **style)
    ax1.axhline(P99_LIMIT_MS, color="grey", lw=1, ls=":")
    ax1.set_yscale("log")
    ax1.set_xlabel("cameras (30 fps each)")
    ax1.set_ylabel("frame latency p99, ms (capture -> analysed)")
    ax1.set_title("p99 latency vs cameras")
    ax2.axhline(DROP_LIMIT_PCT, color="grey", lw=1, ls=":")
    ax2.set_xlabel("cameras (30 fps each)")
    ax2.set_ylabel("frames dropped, % of produced")
    ax2.set_title("dropped frames vs cameras")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(runs: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    head = (
        f"{'config':<22}{'approach':<10}{'N':>3}{'p50':>8}{'p99':>8}{'drop%':>7}{'fps':>7}"
        f"{'batch':>6}{'cpu/cam':>8}{'queue':>7}{'comp':>7}{'track':>7}  {'ok':<5}counted/truth"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        st = r["stages_ms"]
        c = r["counts"]

        def mean(k: str, st: dict[str, Any] = st) -> str:
            return f"{st[k]['mean']:.1f}" if k in st else "-"

        lines.append(
            f"{r['detector'] + '@' + r['resolution']:<22}{r['approach']:<10}{r['cameras']:>3}"
            f"{r['latency_ms']['p50']!s:>8}{r['latency_ms']['p99']!s:>8}{r['drop_pct']:>7.2f}"
            f"{r['fps_analysed']:>7.1f}{r['batches']['mean_size']!s:>6}"
            f"{r['cpu']['cores_per_camera']:>8.2f}{mean('queue'):>7}{mean('compute'):>7}"
            f"{mean('tracking'):>7}  {'PASS' if r['pass'] else 'fail':<5}"
            + ("(warm-up, not counted) " if r.get("warmup") else "")
            + ("(retry) " if r.get("retry") else "")
            + (
                ""
                if c is None
                else f"{c['counted']}/{c['truth']} ({c['exact_cameras']}/{c['cameras']} exact)"
            )
        )
    lines.append("")
    lines.append(f"max cameras with {summary['criterion']}:")
    for key, v in summary["by_config"].items():
        lines.append(
            f"  {key:<22} ours {v['ours']!s:>3}   seed_loop {v['seed_loop']!s:>3}   "
            f"ratio {v['ratio']}"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, str]]:
    svc, _ = devservices.up(quiet=True)
    name = f"bench_cameras_{uuid.uuid4().hex[:8]}"
    dsn = svc.create_database(name)
    try:
        yield dsn, svc.redis_url
    finally:
        svc.drop_database(name)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    # As its-runtime's main() does first: torch's parallel kernels only on the batcher's
    # compute thread (engine.intra_op); every other thread runs torch single-threaded.
    compute_threads = intra_op.reserve()
    load_start = os.getloadavg()
    install = install_wrappers()
    resolutions = [r for r in args.resolutions.split(",") if r]
    detectors = [d for d in args.detectors.split(",") if d]
    approaches = [a for a in args.approaches.split(",") if a]
    for r in resolutions:
        if r not in RESOLUTIONS:
            raise SystemExit(f"unknown resolution {r!r}: choose from {', '.join(RESOLUTIONS)}")
    for d in detectors:
        if d not in DETECTORS:
            raise SystemExit(f"unknown detector {d!r}: choose from {', '.join(DETECTORS)}")
    decode_exposed = "camera_decode" in RuntimeConfig.model_fields
    if args.decode != "auto" and not decode_exposed:
        raise SystemExit("this runtime has no camera decode option (RuntimeConfig.camera_decode)")
    reason = rtsp.unavailable_reason() if args.source == "rtsp" else None
    if reason is not None:
        raise SystemExit(f"{reason} (--source file plays file:// cameras in real time instead)")
    video_s = float(np.ceil(args.warmup + args.seconds + 15.0))
    videos = {r: video_for(r, video_s) for r in resolutions}
    setups: dict[str, DetectorSetup] = {}
    for d in detectors:
        setups[d] = load_ssdlite(args.device, args.backend) if d == "ssdlite" else load_colourbox()
    costs: dict[str, dict[str, float]] = {}
    for d, setup in setups.items():
        _, h, w = (int(v) for v in setup.model.input_shape)
        for r in resolutions:
            costs[f"{d}@{r}"] = decode_cost(videos[r][0], (w, h))
    print(f"decode + scale per frame (ms, offline): {costs}", flush=True)
    # What its-runtime does when its warm-up is done (observability.gc_settle).
    settled = gc_settle.settle("detectors loaded")
    runs: list[dict[str, Any]] = []
    found: dict[str, dict[str, int]] = {}
    store = contextlib.nullcontext((None, None)) if args.no_store else bench_database()
    with store as (dsn, redis_url):
        pg = await postgres_settings(dsn) if dsn is not None else {"database": "none (--no-store)"}
        ctx = Context(
            dsn=dsn,
            redis_url=redis_url,
            source=args.source,
            deadline=began + args.budget_s if args.budget_s else None,
            seconds=args.seconds,
            warmup_s=args.warmup,
            video_s=video_s,
            decode=args.decode,
            decode_exposed=decode_exposed,
            decode_costs=costs,
            videos=videos,
            retries=not args.no_retry,
            warm_up_step=not args.no_warmup_step,
        )
        for d in detectors:
            for r in resolutions:
                key = f"{d}@{r}"
                if args.budget_s and time.monotonic() - began > args.budget_s:
                    print(f"{key}: skipped, --budget-s spent", flush=True)
                    continue
                print(f"{key} ({', '.join(approaches)} taking turns):", flush=True)
                turn = asyncio.Lock()
                searches = [
                    search(ctx, setups[d], a, r, args.max_cameras, turn) for a in approaches
                ]
                results = await asyncio.gather(*searches)
                found[key] = {a: best for a, (best, _) in zip(approaches, results, strict=True)}
                for _, steps in results:
                    runs.extend(steps)
                runs.sort(key=lambda run: run["started_at"])
    summary = summary_of(found, args.max_cameras)
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "benchmark": "cameras",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "duration_s": round(process_age_s(), 1),
        "measuring_s": round(time.monotonic() - began, 1),
        "machine": {
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "load_average_start": [round(v, 2) for v in load_start],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "openmp": OPENMP,
            "torch_threads": {
                "ours_compute_thread": f"{compute_threads} reserved; each step keeps them "
                "only if they make a lone forward >= 1.25x faster (engine.intra_op.choose; "
                "per step: compute_threads)",
                "every_other_thread": 1,
                "seed_loop_camera_threads": 1,
            },
            "pyav": av.__version__,
            "cuda_device": cuda,
        },
        "conditions": {
            "fps": FPS,
            "resolutions": resolutions,
            "detectors": {d: s.describe for d, s in setups.items()},
            "approaches": {
                "ours": "DataPlane + CameraPipeline per camera, the real DynamicBatcher "
                "batching frames across cameras into the detector",
                "seed_loop": "the same DataPlane/pipelines with no batcher: each frame runs "
                "alone (batch 1, executor.run_batch(x[None])) on its camera's own thread "
                "(pool of N threads); engine calls serialised by a lock, colour box unlocked; "
                "torch single-threaded on those threads (the process rule; on 2 cores "
                "faster for it than torch's default of every thread opening a 2-thread "
                "OpenMP team: 16-19 ms vs 21-28 ms per SSDlite forward)",
            },
            "batching": BATCHING.model_dump(by_alias=True),
            "gc": f"as its-runtime after warm-up: one full collection, then gc.freeze() "
            f"({settled.frozen} objects frozen, {settled.pause_s * 1000:.0f} ms, before any step)",
            "window_s": args.seconds,
            "warmup_s": args.warmup,
            "video": {
                "generator": "its_runtime.kits.synth.two_lane_scene + encode_h264 (libx264 "
                "ultrafast, zerolatency, GOP 30, no B-frames, MPEG-TS)",
                "duration_s": video_s,
                "vehicle_every_s": VEHICLE_EVERY_S,
            },
            "rtsp": "one its_devenv RtspServer (GStreamer) process per step, N client "
            "connections (each its own pipeline, real time); client RTSP over TCP",
            "decode": {
                "requested": args.decode,
                "runtime_option_exposed": decode_exposed,
                "reader": "the runtime's CameraReader (PyAV/FFmpeg), one thread per camera; "
                "FFmpeg's own slice threads per decoder",
            },
            "device": args.device or ("cuda:0" if torch.cuda.is_available() else "cpu"),
            "postgres": pg,
            "redis": "loopback (latest view, L2)",
            "database": DatabaseConfig().model_dump(
                by_alias=True, include={"flush_interval_s", "batch_max_rows"}
            ),
            "criterion": summary["criterion"],
            "definitions": {
                "capture": "anchor + media_time; anchor per camera connection = min over its "
                "analysed frames of (decoded_at - media_time) - median offline decode+scale "
                "time of one frame",
                "latency": "capture -> analysis done (tracking, counting done, rows handed "
                "to the RowWriter); only frames done inside the window",
                "dropped": "1 - analysed in window / (30 x N x window s)",
                "cpu_per_camera": "(process CPU s + RTSP server CPU s) / N / window s",
                "stages": install,
                "commit_lag_ms": "decoded_at -> commit of the frame's rows (writer report); "
                "not part of the latency",
            },
            "search": "N = 1, 2, 4, ... until a step fails, then bisection; capped by "
            "max_cameras. The approaches' searches take turns step by step (their steps "
            "alternate in time); each search starts with a warm-up step (N=1, "
            "warmup: true, not counted); a failing step is run once more and N passes if "
            "either run passed (both recorded, the second retry: true)",
            "retries": not args.no_retry,
            "warm_up_step": not args.no_warmup_step,
        },
        "runs": runs,
        "summary": summary,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (about 3 minutes)")
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="JSON to write")
    ap.add_argument("--resolutions", default=None, help="comma list (960x544,1920x1080)")
    ap.add_argument("--detectors", default="ssdlite,colourbox", help="comma list")
    ap.add_argument("--approaches", default="ours,seed_loop", help="comma list")
    ap.add_argument("--max-cameras", type=int, default=None, help="search cap (default 32)")
    ap.add_argument("--seconds", type=float, default=None, help="measurement window (10)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up per step (3)")
    ap.add_argument("--decode", choices=("auto", "cpu", "gpu"), default="auto", help="cameraDecode")
    ap.add_argument("--device", default=None, help="engine device (default: cuda if any)")
    ap.add_argument("--backend", default="auto", help="engine backend (model.backend)")
    ap.add_argument(
        "--source",
        choices=("rtsp", "file"),
        default="rtsp",
        help="rtsp: a GStreamer RTSP server; file: file:// cameras paced in real time",
    )
    ap.add_argument(
        "--no-store", action="store_true", help="no PostgreSQL/Redis: rows counted, not written"
    )
    ap.add_argument("--no-retry", action="store_true", help="a failing step fails (no second run)")
    ap.add_argument(
        "--no-warmup-step", action="store_true", help="no discarded N=1 step before a search"
    )
    ap.add_argument("--budget-s", type=float, default=0, help="stop searching after this long")
    ap.add_argument(
        "--gpu-check",
        action="store_true",
        help="the lent GPU machine's preset (no GStreamer, no database there): 1080p30 file "
        "cameras, SSDlite on the engine's device, GPU decode, ours only, 6 s windows",
    )
    args = ap.parse_args()
    if args.gpu_check:
        args.source, args.no_store, args.decode = "file", True, "gpu"
        args.resolutions = args.resolutions or "1920x1080"
        args.detectors, args.approaches = "ssdlite", "ours"
        args.max_cameras = args.max_cameras or 64
        args.seconds = args.seconds or 6.0
        args.warmup = args.warmup or 2.0
    if args.resolutions is None:
        args.resolutions = "960x544" if args.quick else "960x544,1920x1080"
    if args.max_cameras is None:
        args.max_cameras = 3 if args.quick else 32
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.5 if args.quick else 3.0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    plot(out["runs"], args.out.with_suffix(".png"))
    print()
    print(table(out["runs"], out["summary"]))
    print(
        f"\nsummary: {json.dumps(out['summary']['max_cameras_p99_under_100ms'])} "
        f"ratio {out['summary']['vs_seed_loop_ratio']}"
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png').name} in {out['duration_s']:.0f}s")


if __name__ == "__main__":
    main()

"""Serving benchmark: this runtime vs its limits, a naive server and Ray Serve.

One invocation measures, on the same model file, backend, engine cache, thread settings
and payloads:

1. Two in-process limits with no serving: (a) the model forward at its best batch size,
   (b) the whole per-frame pipeline (JPEG decode with DCT scaling + resize/normalise in a
   thread pool, batched forward, post-processing) at its best batch size.
2. Three servers, each in its own process and only one loaded at a time:
   ``its-runtime`` (the real console script), a naive server (aiohttp, one forward per
   request, same decode pool) and Ray Serve with ``@serve.batch`` (same engine, same
   decode, the same 2 ms batch wait as the runtime's ``maxQueueDelayMs``).

Method, the same for every server:

* Closed loop at 1, 8, 32 and 64 clients (each client sends a frame, waits for the
  answer, sends the next). A server's *saturation* is its best closed-loop throughput.
* Open loop: Poisson arrivals at 50 % and 80 % of *that server's own* saturation, sent
  whether or not earlier requests have finished. Every server is thus compared at the
  same relative load, not at one server's absolute rate.
* its-runtime and naive are measured as an interleaved pair: both are started and stay
  up, and every load point runs in ``2 * --blocks`` alternating windows (A B B A per
  block, A = its-runtime), each server getting ``--seconds`` of window per point in all.
  This host's speed drifts (the same server's 1-client throughput moved from 22 to 32
  fps within ten minutes on a quiet machine): servers run one after the other were
  compared at different speeds, and the first to run lost. The idle server's process
  only waits on its socket, and a window starts after every request of the previous
  one has been answered, so one server is loaded at a time. At 1 client the
  alternation is request by request (A, B, A, B, ...: one client, each request after
  the previous answer), so each comparison is tens of milliseconds apart; each server's
  throughput there is its answers per second of the client's time spent on it.
  ``paired`` in the JSON has the ratio of each A B B A block (at 1 client, of each
  of ``--blocks`` equal parts of the alternating run). Ray Serve (a cluster of
  processes that would not sit idle) runs alone afterwards: closed loop, restarted,
  open loop, one window per point.
* Every window starts with a warm-up (``--warmup``, 1 s, not recorded). Throughput
  (``fps``) is the HTTP 200s answered inside the windows, per second of window
  (answers to requests sent in the warm-up count: that is work done in the window);
  offered load is never reported as throughput. Latency percentiles are over requests
  sent inside a window. Requests sent in a window and answered after it are ``late``;
  those still unanswered 10 s after the window closed are cancelled and counted as
  ``unfinished`` (together: ``in_flight_at_end``). No new request is sent after a
  window closes.
* Every non-200 answer (429, 503, 500, ...) and every client-side failure (``timeout``
  after the 30 s aiohttp client timeout, connection errors) that came inside a window is
  counted by name in ``errors``; ``error_rate`` is their share of all answers in the
  windows. p50/p90/p99 are over the 200s only; ``p99_all_ms`` is over every request
  sent in a window, errors and late answers included, with failures that never got an
  answer (client errors, unfinished) taken at the client timeout. The report prints the
  errors beside p99 on every row.
* Goodput (``goodput_fps``): 200s answered within the 100 ms SLO (``SLO_MS``) inside the
  windows, per second.

The summary compares at 1 client (throughput and p50 vs naive), at saturation, and at
80 % of each server's own saturation (p99, goodput, errors). ``goal_p99_at_80pct_below_naive``
holds only if our p99 is lower *and* our error rate is not higher than naive's: a tail
bought by failing requests does not count.

Payloads are JPEG road scenes generated in code at camera resolution (960x544). The
model is torchvision's SSDlite320-MobileNetV3-Large with random weights (no download),
exported with ``torch.export`` and loaded through ``its_runtime.engine.Engine`` by every
server. The load generator runs in this process (asyncio + aiohttp, keep-alive): on a
small machine it competes with the server for CPU, for every server alike;
``send_lag_p99_ms`` says how late the open loop sent its arrivals. The machine's load
average is recorded at the start and at the end: numbers from a busy shared machine are
not comparable with numbers from a quiet one.

Writes ``benchmarks/results/serving.json`` and ``serving.png`` (p99 latency vs
throughput, goodput vs throughput). ``--quick`` shortens every step (for a smoke run, not
for numbers). Ray Serve comes from the optional ``bench`` extra; without it the run goes
on and records ``"ray-serve": {"error": ...}``.

Usage: ``python benchmarks/serving.py [--quick] [--no-ray] [--blocks 2] [--backend auto]
[--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw, ImageFilter

from its_devenv import ports
from its_runtime import config
from its_runtime.engine import Engine
from its_runtime.serving import preprocess

log = logging.getLogger("bench")
ROOT = pathlib.Path(__file__).resolve().parent
FRAME_W, FRAME_H = 960, 544
INPUT_SHAPE = (3, 320, 320)
CLASSES = 6
MODEL_NAME = "SSDlite320-MobileNetV3-Large (random weights), 3x320x320"
CLOSED_CLIENTS = (1, 8, 32, 64)
OPEN_FRACTIONS = (0.5, 0.8)
#: The latency objective for goodput: a 200 answered within this counts.
SLO_MS = 100.0
#: aiohttp's total timeout per request; a failure with no answer counts at this latency.
CLIENT_TIMEOUT_S = 30.0
#: How long past a window's end stragglers are awaited before being cancelled.
GRACE_S = 10.0
#: Seconds of load before each window, not recorded.
WARMUP_S = 1.0
#: Batch wait of the runtime (``maxQueueDelayMs``) and of Ray's ``@serve.batch``.
MAX_QUEUE_DELAY_MS = 2
SERVERS = ("its-runtime", "naive", "ray-serve")


# ---------------------------------------------------------------------------
# Payloads: generated road scenes
# ---------------------------------------------------------------------------


def road_scene(seed: int) -> bytes:
    """A 960x544 JPEG of a road seen from a pole camera: sky, verges, lanes, vehicles."""
    rng = np.random.default_rng(seed)
    w, h = FRAME_W, FRAME_H
    horizon = int(h * rng.uniform(0.3, 0.4))
    sky = np.linspace([110, 150, 200], [190, 210, 230], horizon).astype(np.uint8)
    img = np.zeros((h, w, 3), np.uint8)
    img[:horizon] = sky[:, None, :]
    grass = rng.normal([70, 110, 60], 18, (h - horizon, w, 3))
    img[horizon:] = np.clip(grass, 0, 255).astype(np.uint8)
    pic = Image.fromarray(img)
    draw = ImageDraw.Draw(pic)
    vx = w * rng.uniform(0.4, 0.6)
    road = [(vx - 30, horizon), (vx + 30, horizon), (w * 1.05, h), (-w * 0.05, h)]
    draw.polygon(road, fill=(85, 85, 90))
    for lane in (-1 / 3, 0, 1 / 3):  # dashed lane lines converging to the vanishing point
        for k in range(12):
            t0, t1 = (k / 12) ** 1.6, ((k + 0.5) / 12) ** 1.6
            y0, y1 = horizon + t0 * (h - horizon), horizon + t1 * (h - horizon)
            x0, x1 = vx + lane * t0 * w * 1.1, vx + lane * t1 * w * 1.1
            draw.line([(x0, y0), (x1, y1)], fill=(235, 235, 220), width=max(1, int(6 * t1)))
    for _ in range(int(rng.integers(4, 12))):  # vehicles, larger when nearer
        t = rng.uniform(0.1, 1.0)
        y = horizon + t * (h - horizon)
        cw, ch = 40 + 160 * t, 25 + 90 * t
        x = vx + rng.uniform(-0.45, 0.45) * t * w * 1.1
        body = tuple(int(c) for c in rng.integers(20, 235, 3))
        draw.rounded_rectangle([x - cw / 2, y - ch, x + cw / 2, y], 6, fill=body)
        draw.rectangle([x - cw / 3, y - ch * 0.9, x + cw / 3, y - ch * 0.55], fill=(40, 50, 60))
        for wx in (x - cw / 3, x + cw / 3):
            draw.ellipse([wx - ch / 7, y - ch / 7, wx + ch / 7, y + ch / 7], fill=(15, 15, 15))
    pic = pic.filter(ImageFilter.GaussianBlur(0.6))
    noisy = np.asarray(pic).astype(np.int16) + rng.normal(0, 4, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Model and engine
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    model_path: pathlib.Path
    cache_dir: pathlib.Path
    backend: str
    max_batch: int
    threads: int
    workdir: pathlib.Path

    def model_config(self) -> config.ModelConfig:
        return config.ModelConfig.model_validate(
            {
                "path": str(self.model_path),
                "inputShape": list(INPUT_SHAPE),
                "outputFormat": "yolo",
                "backend": self.backend,
                "precision": "fp16" if torch.cuda.is_available() else "fp32",
                "batching": {
                    "maxBatchSize": self.max_batch,
                    "optBatchSize": min(8, self.max_batch),
                    "maxQueueDelayMs": MAX_QUEUE_DELAY_MS,
                    "maxQueueSize": 4096,
                },
            }
        )

    def load_engine(self) -> Engine:
        torch.set_num_threads(self.threads)
        engine = Engine.load(
            self.model_config(),
            config.EngineCacheConfig(dir=str(self.cache_dir)),
            config.GpuConfig(),
        )
        engine.warmup()
        return engine


def export_model(path: pathlib.Path, max_batch: int) -> None:
    from its_runtime.kits.models import export, ssdlite

    if path.exists():
        return
    log.info("exporting SSDlite320-MobileNetV3 (random weights) to %s", path)
    net = ssdlite.build_ssdlite_raw(CLASSES, (INPUT_SHAPE[1], INPUT_SHAPE[2]))
    export.save_exported_program(net, path, INPUT_SHAPE, max_batch=max_batch)


# ---------------------------------------------------------------------------
# Limits (a) and (b), in process
# ---------------------------------------------------------------------------


def limit_forward(engine: Engine, sizes: Sequence[int], seconds: float) -> dict[str, Any]:
    """(a) Model forward only (staging + backend forward), frames/s per batch size."""
    out: dict[str, float] = {}
    for b in sizes:
        x = torch.rand((b, *INPUT_SHAPE))
        engine._forward(x, engine.spec.bucket_for(b), strict=False)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            result = engine._forward(x, engine.spec.bucket_for(b), strict=False)
            if isinstance(result, torch.Tensor) and result.is_cuda:
                torch.cuda.synchronize()
            n += b
        out[str(b)] = n / (time.perf_counter() - start)
    best = max(out, key=lambda k: out[k])
    return {"fps_by_batch": out, "best_batch": int(best), "fps": out[best]}


def limit_pipeline(
    engine: Engine, frames: Sequence[bytes], sizes: Sequence[int], seconds: float, workers: int
) -> dict[str, Any]:
    """(b) Decode in a pool of ``workers`` threads, batched forward and post-processing."""
    out: dict[str, float] = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for b in sizes:
            # Decoding runs ahead of the forward (up to three batches), as in a server.
            ahead: collections.deque[concurrent.futures.Future[torch.Tensor]] = collections.deque()
            i = n = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                while len(ahead) < 3 * b:
                    data = frames[i % len(frames)]
                    ahead.append(pool.submit(preprocess.decode_image, data, INPUT_SHAPE))
                    i += 1
                batch = torch.stack([ahead.popleft().result() for _ in range(b)])
                engine.run_batch(batch)
                n += b
            out[str(b)] = n / (time.perf_counter() - start)
            for f in ahead:
                f.result()
    best = max(out, key=lambda k: out[k])
    return {"fps_by_batch": out, "best_batch": int(best), "fps": out[best]}


# ---------------------------------------------------------------------------
# Load generation
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    """One request: when it was sent, when its answer (or failure) came, and what it was."""

    start: float  # perf_counter() when sent
    end: float = math.inf  # perf_counter() when answered or failed; inf: never (cancelled)
    status: str = "unfinished"  # the HTTP status, or the client-side failure's name


@dataclasses.dataclass
class Run:
    """Every request of one load point, warm-up included; the summary keeps the window."""

    mode: str  # closed or open
    level: float  # clients, or offered rate (frames/s)
    window: tuple[float, float]  # perf_counter() at warm-up end and at window end
    samples: list[Sample]
    fraction: float | None = None  # open loop: the offered rate as a share of saturation
    send_lags: list[float] = dataclasses.field(default_factory=list)  # open loop, seconds
    #: A lone client that alternated between servers (:func:`alternating_client`): the
    #: window's seconds are those the client spent on this server's requests.
    alternating: bool = False

    def summary(self) -> dict[str, Any]:
        return summarise_windows([self])


def summarise_windows(runs: Sequence[Run]) -> dict[str, Any]:
    """One load point, measured in one window or in several (the interleaved pairs of
    :func:`measure_pair`): counts are summed over the windows and percentiles are taken
    over the requests of all of them.

    Throughput counts every answer that came inside a window, whenever its request was
    sent (one sent in the warm-up and answered in the window is work the server did in
    the window; counting only requests both sent and answered inside would undercount a
    closed loop by its client count per window). Latency percentiles are over requests
    sent inside a window, so the warm-up's are never in them.
    """
    first = runs[0]
    seconds = 0.0
    started: list[Sample] = []
    inside: list[Sample] = []
    late: list[Sample] = []
    answered: list[Sample] = []  # completed inside a window, sent whenever
    for run in runs:
        w0, w1 = run.window
        if run.alternating:
            seconds += sum(max(0.0, min(x.end, w1) - max(x.start, w0)) for x in run.samples)
        else:
            seconds += w1 - w0
        sent = [s for s in run.samples if w0 <= s.start < w1]
        started += sent
        inside += [s for s in sent if s.end <= w1]
        late += [s for s in sent if w1 < s.end < math.inf]
        answered += [s for s in run.samples if w0 <= s.end <= w1]
    unfinished = sum(1 for s in started if s.end == math.inf)
    ok = np.array([s.end - s.start for s in inside if s.status == "200"]) * 1000.0
    done_ok = np.array([s.end - s.start for s in answered if s.status == "200"]) * 1000.0
    errors = collections.Counter(s.status for s in answered if s.status != "200")
    every = np.array([_latency_or_timeout(s) for s in started]) * 1000.0
    row: dict[str, Any] = {
        "mode": first.mode,
        "level": first.level,
        "seconds": seconds,
        "windows": len(runs),
        "started": len(started),
        "ok": len(done_ok),
        "fps": len(done_ok) / seconds,
        "goodput_fps": int(np.count_nonzero(done_ok <= SLO_MS)) / seconds,
        "errors": dict(sorted(errors.items())),
        "error_rate": sum(errors.values()) / len(answered) if answered else None,
        "late": len(late),
        "late_statuses": dict(sorted(collections.Counter(s.status for s in late).items())),
        "unfinished": unfinished,
        "in_flight_at_end": len(late) + unfinished,
        **{f"p{q}_ms": _percentile(ok, q) for q in (50, 90, 99)},
        "p99_all_ms": _percentile(every, 99),
    }
    if first.mode == "open":
        row["fraction"] = first.fraction
        row["offered_fps"] = first.level
        row["sent_fps"] = len(started) / seconds
        lags = np.array([lag for run in runs for lag in run.send_lags]) * 1000.0
        row["send_lag_p99_ms"] = _percentile(lags, 99)
    if len(runs) > 1:
        # Each window on its own, in the order they ran: drift of the machine shows here.
        row["by_window"] = [
            {k: w[k] for k in ("fps", "p50_ms", "p99_ms")}
            for w in (summarise_windows([run]) for run in runs)
        ]
    return row


def _latency_or_timeout(s: Sample) -> float:
    """The request's latency; a failure that never got an answer counts at the timeout."""
    if s.end == math.inf or not s.status.isdigit():
        return CLIENT_TIMEOUT_S
    return s.end - s.start


def _percentile(values: np.ndarray[Any, Any], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
    )


async def _one(
    session: aiohttp.ClientSession, url: str, data: bytes, samples: list[Sample]
) -> None:
    sample = Sample(time.perf_counter())
    samples.append(sample)  # recorded first: if cancelled, it stays "unfinished"
    try:
        async with session.post(url, data=data, headers={"Content-Type": "image/jpeg"}) as r:
            await r.read()
            status = str(r.status)
    except TimeoutError:
        status = "timeout"
    except (aiohttp.ClientError, OSError) as exc:
        status = type(exc).__name__
    sample.end = time.perf_counter()
    sample.status = status


async def _drain(tasks: Sequence[asyncio.Task[None]], until: float) -> None:
    """Wait for ``tasks`` until ``perf_counter()`` reaches ``until``; cancel the rest."""
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(0.0, until - time.perf_counter()))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:  # anything but an answer or a counted failure is a bug here: raise it
        if not t.cancelled() and (exc := t.exception()) is not None:
            raise exc


async def closed_loop(
    url: str, frames: Sequence[bytes], clients: int, seconds: float, warmup: float
) -> Run:
    """``clients`` loops each sending a frame and waiting for its answer, for ``warmup``
    (not recorded) and then ``seconds``; no request is sent after the window closes."""
    samples: list[Sample] = []
    async with _session() as session:
        t0 = time.perf_counter()
        window = (t0 + warmup, t0 + warmup + seconds)

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < window[1]:
                await _one(session, url, frames[i % len(frames)], samples)
                i += clients

        tasks = [asyncio.create_task(client(k)) for k in range(clients)]
        await _drain(tasks, window[1] + GRACE_S)
    return Run("closed", clients, window, samples)


async def alternating_client(
    urls: dict[str, str], frames: Sequence[bytes], seconds: float, warmup: float
) -> dict[str, Run]:
    """One client sending to each server in turn (A, B, A, B, ...), each request after the
    previous answer, for ``warmup`` (not recorded) and then ``seconds``.

    This is the 1-client point of the interleaved pair: both servers see one client and
    are never loaded at the same time, and consecutive requests are compared at the
    same machine speed (tens of milliseconds apart, where windows are seconds apart).
    Each server's window time is the time the client spent on that server's requests
    (``Run.alternating``), so its ``fps`` is what a lone client of that server gets.
    """
    names = list(urls)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    async with _session() as session:
        t0 = time.perf_counter()
        window = (t0 + warmup, t0 + warmup + seconds)
        i = 0
        while time.perf_counter() < window[1]:
            name = names[i % len(names)]
            frame = frames[(i // len(names)) % len(frames)]
            await _one(session, urls[name], frame, samples[name])
            i += 1
    return {name: Run("closed", 1, window, samples[name], alternating=True) for name in names}


def split_window(run: Run, parts: int) -> list[Run]:
    """``run`` cut into ``parts`` consecutive windows (for per-part ratios)."""
    w0, w1 = run.window
    step = (w1 - w0) / parts
    return [
        dataclasses.replace(run, window=(w0 + k * step, w0 + (k + 1) * step)) for k in range(parts)
    ]


async def open_loop(
    url: str, frames: Sequence[bytes], rate: float, seconds: float, warmup: float, fraction: float
) -> Run:
    """Poisson arrivals at ``rate`` per second, sent whether or not earlier ones finished,
    for ``warmup`` (not recorded) and then ``seconds``."""
    rng = np.random.default_rng(7)
    samples: list[Sample] = []
    lags: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    async with _session() as session:
        t0 = time.perf_counter()
        window = (t0 + warmup, t0 + warmup + seconds)
        at, i = t0 + float(rng.exponential(1.0 / rate)), 0
        while at < window[1]:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.perf_counter() - at)
            frame = frames[i % len(frames)]
            tasks.append(asyncio.create_task(_one(session, url, frame, samples)))
            at += float(rng.exponential(1.0 / rate))
            i += 1
        await _drain(tasks, window[1] + GRACE_S)
    return Run("open", rate, window, samples, fraction, lags)


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Proc:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: pathlib.Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_ready(p: Proc, probe: str, timeout: float = 600) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited:\n{p.log_path.read_text()[-4000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(probe, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{p.name} not ready after {timeout}s")


def start_process(name: str, cmd: list[str], setup: Setup, url: str) -> Proc:
    log_path = setup.workdir / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(setup.threads), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return Proc(name, url, proc, log_path)


def start_runtime(setup: Setup) -> Proc:
    port = ports.free_port()
    model = setup.model_config().model_dump(mode="json", by_alias=True, exclude_none=True)
    doc = {
        "model": model,
        "engineCache": {"dir": str(setup.cache_dir)},
        "server": {"host": "127.0.0.1", "port": port},
    }
    cfg = setup.workdir / "runtime.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "its_runtime.main", "--config", str(cfg), "--log-level", "WARNING"]
    p = start_process("its-runtime", cmd, setup, f"http://127.0.0.1:{port}/v1/detect")
    with _stop_on_error(p):
        wait_ready(p, f"http://127.0.0.1:{port}/ready")
    return p


def _role_args(setup: Setup, port: int) -> list[str]:
    return [
        "--model",
        str(setup.model_path),
        "--cache-dir",
        str(setup.cache_dir),
        "--backend",
        setup.backend,
        "--max-batch",
        str(setup.max_batch),
        "--threads",
        str(setup.threads),
        "--port",
        str(port),
    ]


def start_naive(setup: Setup) -> Proc:
    port = ports.free_port()
    cmd = [sys.executable, __file__, "--role", "naive", *_role_args(setup, port)]
    p = start_process("naive", cmd, setup, f"http://127.0.0.1:{port}/detect")
    with _stop_on_error(p):
        wait_ready(p, f"http://127.0.0.1:{port}/ready")
    return p


def start_ray(setup: Setup) -> Proc:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RuntimeError(
            "ray[serve] is not installed: it is the optional 'bench' extra "
            "(make bench-serving installs it into .venv)"
        )
    port = ports.free_port()
    cmd = [sys.executable, __file__, "--role", "ray", *_role_args(setup, port)]
    p = start_process("ray-serve", cmd, setup, f"http://127.0.0.1:{port}/detect")
    with _stop_on_error(p):
        wait_ready(p, f"http://127.0.0.1:{port}/-/healthz")
        # Ray reports healthy before the replica has loaded the engine: wait for an answer.
        import urllib.request

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if p.proc.poll() is not None:
                raise RuntimeError(f"ray-serve exited:\n{p.log_path.read_text()[-4000:]}")
            with contextlib.suppress(OSError):
                req = urllib.request.Request(
                    p.url, data=road_scene(0), headers={"Content-Type": "image/jpeg"}
                )
                with urllib.request.urlopen(req, timeout=30) as r:
                    if r.status == 200:
                        return p
            time.sleep(1)
        raise TimeoutError("Ray Serve never answered")


STARTERS = {"its-runtime": start_runtime, "naive": start_naive, "ray-serve": start_ray}


@contextlib.contextmanager
def _stop_on_error(p: Proc) -> Iterator[None]:
    """Stop ``p`` if it never became ready, so no server outlives a failed start."""
    try:
        yield
    except BaseException:
        p.stop()
        raise


def serve_naive(args: argparse.Namespace) -> None:
    """A server as people first write one: decode in a pool, one forward per request."""
    from aiohttp import web

    setup = _setup_from_args(args)
    engine = setup.load_engine()
    decode_pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2)
    model_pool = concurrent.futures.ThreadPoolExecutor(1)
    names = setup.model_config().class_names

    async def detect(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        body = await request.read()
        x = await loop.run_in_executor(decode_pool, preprocess.decode_image, body, INPUT_SHAPE)
        (det,) = await loop.run_in_executor(model_pool, engine.run_batch, x.unsqueeze(0))
        return web.json_response({"detections": det.to_json(names)})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/detect", detect)
    app.router.add_get("/ready", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


def serve_ray(args: argparse.Namespace) -> None:
    """Ray Serve with @serve.batch around the same engine and the same decoding."""
    import ray
    from ray import serve

    setup = _setup_from_args(args)
    cores = os.cpu_count() or 2
    wait_s = MAX_QUEUE_DELAY_MS / 1000  # the runtime's maxQueueDelayMs
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})

    @serve.deployment(
        max_ongoing_requests=1024,
        ray_actor_options={"num_cpus": 1, "num_gpus": 1 if torch.cuda.is_available() else 0},
    )
    class Detector:
        def __init__(self, setup: Setup) -> None:
            self.engine = setup.load_engine()
            self.names = setup.model_config().class_names
            self.decode_pool = concurrent.futures.ThreadPoolExecutor(cores)
            self.model_pool = concurrent.futures.ThreadPoolExecutor(1)

        # ray is typed only where the bench extra is installed.
        @serve.batch(max_batch_size=setup.max_batch, batch_wait_timeout_s=wait_s)  # type: ignore[untyped-decorator,unused-ignore]
        async def infer(self, frames: list[torch.Tensor]) -> list[Any]:
            loop = asyncio.get_running_loop()
            batch = torch.stack(frames)
            dets = await loop.run_in_executor(self.model_pool, self.engine.run_batch, batch)
            return [d.to_json(self.names) for d in dets]

        async def __call__(self, request: Any) -> dict[str, Any]:
            body = await request.body()
            loop = asyncio.get_running_loop()
            x = await loop.run_in_executor(
                self.decode_pool, preprocess.decode_image, body, INPUT_SHAPE
            )
            return {"detections": await self.infer(x)}

    serve.run(Detector.bind(setup), route_prefix="/detect")  # type: ignore[attr-defined,unused-ignore]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()  # type: ignore[no-untyped-call,unused-ignore]
    ray.shutdown()


def _setup_from_args(args: argparse.Namespace) -> Setup:
    return Setup(
        model_path=pathlib.Path(args.model),
        cache_dir=pathlib.Path(args.cache_dir),
        backend=args.backend,
        max_batch=args.max_batch,
        threads=args.threads,
        workdir=pathlib.Path(args.model).parent,
    )


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        # Other work on a shared machine skews every number: record how busy it was, at
        # the start here and at the end (load_average_end, set by run_benchmark).
        "load_average_1m": load[0],
        "load_average_start": list(load),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def measure_closed(
    name: str, url: str, frames: Sequence[bytes], seconds: float, warmup: float
) -> dict[str, Any]:
    """Closed loop at every client count; saturation is the best in-window throughput."""
    rows = []
    for clients in CLOSED_CLIENTS:
        row = asyncio.run(closed_loop(url, frames, clients, seconds, warmup)).summary()
        _log_row(name, row)
        rows.append(row)
    best = max(rows, key=lambda r: r["fps"])
    return {"closed": rows, "saturation_fps": best["fps"], "saturation_clients": best["level"]}


def measure_open(
    name: str, url: str, frames: Sequence[bytes], saturation: float, seconds: float, warmup: float
) -> list[dict[str, Any]]:
    """Poisson arrivals at each of ``OPEN_FRACTIONS`` of this server's own saturation."""
    rows = []
    for fraction in OPEN_FRACTIONS:
        rate = fraction * saturation
        row = asyncio.run(open_loop(url, frames, rate, seconds, warmup, fraction)).summary()
        _log_row(name, row)
        rows.append(row)
    return rows


#: The servers measured as an interleaved pair (both resident, one loaded at a time).
PAIR = ("its-runtime", "naive")


def abba(pair: Sequence[str], blocks: int) -> list[str]:
    """The window order for a pair: A B B A per block, so a machine that speeds up or
    slows down steadily during a point favours neither server."""
    a, b = pair
    return [a, b, b, a] * blocks


def measure_pair(
    setup: Setup,
    frames: Sequence[bytes],
    seconds: float,
    warmup: float,
    blocks: int,
    t_ref: float,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """its-runtime and naive, both started and left running, measured at every load point
    in alternating windows (:func:`abba`): each server gets ``seconds`` of window per
    point, cut into ``2 * blocks`` windows, each after its own ``warmup``. The idle one
    uses no CPU (its process only waits on its socket), and a window starts only after the
    previous window's requests have all been answered, so one server is loaded at a time.

    On a shared host whose speed drifts by tens of percent within minutes, servers run
    one after the other would be compared at different machine speeds; interleaving
    compares them at the same speed. Per-block ratios (``paired``) show how much of a
    difference is the servers' and how much the machine's.
    """
    order = abba(PAIR, blocks)
    window_s = seconds / (2 * blocks)
    servers: dict[str, dict[str, Any]] = {name: {} for name in PAIR}
    ran: list[dict[str, Any]] = []
    paired: list[dict[str, Any]] = []
    procs: dict[str, Proc] = {}
    try:
        for name in PAIR:
            began = time.monotonic()
            try:
                procs[name] = STARTERS[name](setup)
            except (RuntimeError, TimeoutError, OSError) as exc:
                log.error("%s did not start: %s", name, exc)
                servers[name] = {"error": str(exc)[-2000:]}
            ran.append({"phase": "start", "server": name, "start_s": round(began - t_ref, 1)})
        if len(procs) < len(PAIR):
            return servers, ran, paired

        def point(mode: str, level: float, rate_of: dict[str, float] | None) -> None:
            runs: dict[str, list[Run]] = {name: [] for name in PAIR}
            began = time.monotonic()
            order_here: list[str] = order
            if rate_of is None and level == 1:
                # Both see one client, alternately; cut into as many parts as windows.
                urls = {name: procs[name].url for name in PAIR}
                lone = asyncio.run(alternating_client(urls, frames, 2 * seconds, warmup))
                for name in PAIR:
                    runs[name] = split_window(lone[name], 2 * blocks)
                order_here = ["alternating request by request", *PAIR]
            else:
                for name in order:
                    url = procs[name].url
                    if rate_of is None:
                        run = asyncio.run(closed_loop(url, frames, int(level), window_s, warmup))
                    else:
                        rate = rate_of[name]
                        run = asyncio.run(open_loop(url, frames, rate, window_s, warmup, level))
                    runs[name].append(run)
            for name in PAIR:
                row = summarise_windows(runs[name])
                _log_row(name, row)
                servers[name].setdefault(mode, []).append(row)
            a, b = PAIR
            for k in range(blocks):
                mine = summarise_windows(runs[a][2 * k : 2 * k + 2])
                theirs = summarise_windows(runs[b][2 * k : 2 * k + 2])
                paired.append(
                    {
                        "mode": mode,
                        "level": level,
                        "block": k,
                        "fps_ratio": _ratio(mine["fps"], theirs["fps"]),
                        "p50_ms_diff": (
                            mine["p50_ms"] - theirs["p50_ms"]
                            if _both(mine["p50_ms"], theirs["p50_ms"])
                            else None
                        ),
                    }
                )
            ran.append(
                {
                    "phase": f"{mode} {level}",
                    "servers": order_here,
                    "start_s": round(began - t_ref, 1),
                    "end_s": round(time.monotonic() - t_ref, 1),
                }
            )

        for clients in CLOSED_CLIENTS:
            point("closed", clients, None)
        for name in PAIR:
            best = max(servers[name]["closed"], key=lambda r: r["fps"])
            servers[name]["saturation_fps"] = best["fps"]
            servers[name]["saturation_clients"] = best["level"]
        for fraction in OPEN_FRACTIONS:
            rates = {name: fraction * servers[name]["saturation_fps"] for name in PAIR}
            if min(rates.values()) <= 0:
                for name in PAIR:
                    servers[name]["open_error"] = "no closed-loop throughput to take a share of"
                break
            point("open", fraction, rates)
    finally:
        for p in procs.values():
            p.stop()
    return servers, ran, paired


def measure_servers(
    setup: Setup,
    frames: Sequence[bytes],
    order: Sequence[str],
    seconds: float,
    warmup: float,
    t_ref: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every server's closed loop in ``order``, then every server (restarted) open loop in
    the same order; one server runs at a time. Returns the results and what ran when."""
    servers: dict[str, dict[str, Any]] = {name: {} for name in order}
    ran: list[dict[str, Any]] = []
    for phase in ("closed", "open"):
        for name in order:
            res = servers[name]
            if "error" in res:
                continue
            if phase == "open" and not res.get("saturation_fps"):
                res["open"] = []
                res["open_error"] = "no closed-loop throughput to take a share of"
                continue
            began = time.monotonic()
            try:
                proc = STARTERS[name](setup)
            except (RuntimeError, TimeoutError, OSError) as exc:
                log.error("%s did not start for the %s loop: %s", name, phase, exc)
                if phase == "closed":
                    servers[name] = {"error": str(exc)[-2000:]}
                else:
                    res["open"] = []
                    res["open_error"] = str(exc)[-2000:]
                continue
            measuring = time.monotonic()
            try:
                if phase == "closed":
                    res.update(measure_closed(name, proc.url, frames, seconds, warmup))
                else:
                    sat = res["saturation_fps"]
                    res["open"] = measure_open(name, proc.url, frames, sat, seconds, warmup)
            finally:
                proc.stop()
            ran.append(
                {
                    "phase": phase,
                    "server": name,
                    "start_s": round(began - t_ref, 1),
                    "measure_start_s": round(measuring - t_ref, 1),
                    "end_s": round(time.monotonic() - t_ref, 1),
                }
            )
    return servers, ran


def _log_row(name: str, row: dict[str, Any]) -> None:
    log.info(
        "%s %s %s: %.1f fps (goodput %.1f), p50 %s ms, p99 %s ms, errors %s, "
        "p99 all %s ms, in flight at end %d",
        name,
        row["mode"],
        _level(row),
        row["fps"],
        row["goodput_fps"],
        _ms(row["p50_ms"]),
        _ms(row["p99_ms"]),
        row["errors"] or "none",
        _ms(row["p99_all_ms"]),
        row["in_flight_at_end"],
    )


def _level(row: dict[str, Any]) -> str:
    if row["mode"] == "closed":
        return f"{int(row['level'])} clients"
    return f"{row['fraction']:.0%} = {row['level']:.1f}/s Poisson"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Left: p99 latency (200s) vs throughput. Right: goodput vs throughput (on the
    diagonal, every 200 in the window met the SLO). Closed loop solid, open loop dashed."""
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed (the 'bench' extra): no %s", path.name)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat_ax, good_ax) = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = {"its-runtime": "tab:blue", "naive": "tab:red", "ray-serve": "tab:green"}
    top = 1.0
    for name, res in results["servers"].items():
        if "error" in res:
            continue
        colour = colours.get(name)
        for mode, style in (("closed", "o-"), ("open", "s--")):
            rows = res.get(mode, [])
            shown = [r for r in rows if r["p99_ms"] is not None]
            lat_ax.plot(
                [r["fps"] for r in shown],
                [r["p99_ms"] for r in shown],
                style,
                color=colour,
                alpha=1.0 if mode == "closed" else 0.7,
                label=f"{name} {mode} loop",
            )
            good_ax.plot(
                [r["fps"] for r in rows],
                [r["goodput_fps"] for r in rows],
                style,
                color=colour,
                alpha=1.0 if mode == "closed" else 0.7,
                label=f"{name} {mode} loop",
            )
            for r in shown:
                tag = f"{int(r['level'])}c" if mode == "closed" else f"{r['fraction']:.0%}"
                failed = sum(r["errors"].values())
                if failed:
                    tag += f" ({failed} err)"
                lat_ax.annotate(
                    tag,
                    (r["fps"], r["p99_ms"]),
                    xytext=(5, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color=colour,
                )
            top = max([top, *(r["fps"] for r in rows)])
    for key, style in (("a_forward", ":"), ("b_pipeline", "-.")):
        fps = results["limits"][key]["fps"]
        for ax in (lat_ax, good_ax):
            ax.axvline(fps, color="grey", linestyle=style, label=f"limit ({key[0]}) {fps:.0f} fps")
        top = max(top, fps)
    lat_ax.axhline(SLO_MS, color="black", linewidth=0.6, label=f"{SLO_MS:.0f} ms SLO")
    lat_ax.set_xlabel("throughput: 200s completed in the window (frames/s)")
    lat_ax.set_ylabel("p99 latency of the 200s (ms)")
    lat_ax.set_yscale("log")
    lat_ax.set_title("latency vs throughput (labels: clients or share of saturation)", fontsize=9)
    lat_ax.legend(fontsize=7)
    good_ax.plot([0, top], [0, top], color="black", linewidth=0.6, label="goodput = throughput")
    good_ax.set_xlabel("throughput: 200s completed in the window (frames/s)")
    good_ax.set_ylabel(f"goodput: 200s within {SLO_MS:.0f} ms (frames/s)")
    good_ax.set_title("goodput vs throughput", fontsize=9)
    good_ax.legend(fontsize=7)
    c, m = results["conditions"], results["machine"]
    fig.suptitle(
        f"Serving {c['model']} on {m['cpu']} x{m['cores']}, {c['backend']} on {c['device']}, "
        f"{c['seconds_per_point']:.0f} s per point"[:150],
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    t_ref = time.monotonic()
    mach = machine()
    seconds = args.seconds or (4.0 if args.quick else 20.0)
    warmup = args.warmup
    limit_s = min(5.0, seconds / 2)
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    threads = args.threads or (os.cpu_count() or 2)
    if args.blocks < 1:
        raise SystemExit("--blocks must be at least 1")
    setup = Setup(
        model_path=workdir / f"ssdlite320_b{args.max_batch}.pt2",
        cache_dir=workdir / "engine-cache",
        backend=args.backend,
        max_batch=args.max_batch,
        threads=threads,
        workdir=workdir,
    )
    export_model(setup.model_path, setup.max_batch)
    frames = [road_scene(i) for i in range(32)]
    sizes = sorted(len(f) for f in frames)
    log.info(
        "frames: %d JPEGs %dx%d, median %.0f KB",
        len(frames),
        FRAME_W,
        FRAME_H,
        sizes[len(sizes) // 2] / 1024,
    )
    started = time.monotonic()
    engine = setup.load_engine()
    log.info(
        "engine: backend %s on %s, load+warm-up %.1fs (fallbacks %s)",
        engine.backend,
        engine.device,
        time.monotonic() - started,
        engine.fallbacks,
    )
    batch_sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= setup.max_batch]
    a = limit_forward(engine, batch_sizes, limit_s)
    log.info("limit (a) forward: %.1f fps at batch %d", a["fps"], a["best_batch"])
    b = limit_pipeline(
        engine, frames, [s for s in batch_sizes if s >= 2], limit_s, os.cpu_count() or 2
    )
    log.info("limit (b) pipeline: %.1f fps at batch %d", b["fps"], b["best_batch"])
    backend, device = engine.backend, str(engine.device)
    del engine
    results: dict[str, Any] = {
        "machine": mach,
        "conditions": {
            "model": MODEL_NAME,
            "backend": backend,
            "device": device,
            "threads": threads,
            "max_batch": setup.max_batch,
            "maxQueueDelayMs": MAX_QUEUE_DELAY_MS,
            "payload": {
                "format": "JPEG, quality 80, generated road scenes",
                "resolution": [FRAME_W, FRAME_H],
                "count": len(frames),
                "median_bytes": sizes[len(sizes) // 2],
            },
            "seconds_per_point": seconds,
            "windows_per_point_its_runtime_and_naive": 2 * args.blocks,
            "warmup_s": warmup,
            "client_timeout_s": CLIENT_TIMEOUT_S,
            "grace_s": GRACE_S,
            "slo_ms": SLO_MS,
            "closed_clients": list(CLOSED_CLIENTS),
            "open_fractions_of_own_saturation": list(OPEN_FRACTIONS),
            "load_generator": "in this process: asyncio + aiohttp, keep-alive, no pool limit",
            "limits_seconds_per_batch_size": limit_s,
            "quick": args.quick,
        },
        "limits": {"a_forward": a, "b_pipeline": b},
    }
    servers, ran, paired = measure_pair(setup, frames, seconds, warmup, args.blocks, t_ref)
    if args.no_ray:
        servers["ray-serve"] = {"error": "left out (--no-ray)"}
    else:
        alone, ran_alone = measure_servers(setup, frames, ["ray-serve"], seconds, warmup, t_ref)
        servers.update(alone)
        ran += ran_alone
    results["servers"] = servers
    results["paired"] = paired
    results["order"] = {
        "servers": [*PAIR, "ray-serve"],
        "phases": [
            f"its-runtime and naive both running, every load point in {2 * args.blocks} "
            f"alternating windows of {seconds / (2 * args.blocks):.2f} s "
            f"({' '.join(abba(('A', 'B'), args.blocks))}, A = its-runtime)",
            "then Ray Serve alone: closed loop, restarted, open loop "
            "(one window per point, so not protected from the machine's drift)",
        ],
        "runs": ran,
    }
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["machine"]["wall_s"] = round(time.monotonic() - t_ref, 1)
    results["summary"] = summarise(results)
    return results


def _closed_at(res: dict[str, Any] | None, clients: int) -> dict[str, Any] | None:
    rows = (res or {}).get("closed", [])
    return next((r for r in rows if r["level"] == clients), None)


def _open_at(res: dict[str, Any] | None, fraction: float) -> dict[str, Any] | None:
    rows = (res or {}).get("open", [])
    return next((r for r in rows if r["fraction"] == fraction), None)


def _get(row: dict[str, Any] | None, key: str) -> Any:
    return None if row is None else row.get(key)


def _ratio(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None or y <= 0 else x / y


def _both(x: float | None, y: float | None) -> bool:
    return x is not None and y is not None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    servers = results["servers"]
    ours, naive = servers.get("its-runtime"), servers.get("naive")
    sat = _get(ours, "saturation_fps")
    a, b = results["limits"]["a_forward"]["fps"], results["limits"]["b_pipeline"]["fps"]
    one, naive_one = _closed_at(ours, 1), _closed_at(naive, 1)
    fps_1, naive_fps_1 = _get(one, "fps"), _get(naive_one, "fps")
    p50_1, naive_p50_1 = _get(one, "p50_ms"), _get(naive_one, "p50_ms")
    out: dict[str, Any] = {
        "saturation_fps": sat,
        "saturation_clients": _get(ours, "saturation_clients"),
        "efficiency_vs_pipeline_b": _ratio(sat, b),
        "efficiency_vs_forward_a": _ratio(sat, a),
        "fps_at_1_client": fps_1,
        "naive_fps_at_1_client": naive_fps_1,
        "vs_naive_at_1_client": _ratio(fps_1, naive_fps_1),
        "p50_ms_at_1_client": p50_1,
        "naive_p50_ms_at_1_client": naive_p50_1,
        "p50_ms_vs_naive_at_1_client": (
            p50_1 - naive_p50_1 if p50_1 is not None and naive_p50_1 is not None else None
        ),
    }
    # Each server at 80 % of its own saturation; ours unprefixed, peers prefixed.
    goodput: dict[str, float | None] = {}
    errors: dict[str, Any] = {}
    for name in SERVERS:
        res = servers.get(name)
        at80 = _open_at(res, 0.8)
        pre = "" if name == "its-runtime" else f"{name}_"
        if name != "its-runtime":
            out[f"{name}_saturation_fps"] = _get(res, "saturation_fps")
            out[f"vs_{name}_saturation_ratio"] = _ratio(sat, _get(res, "saturation_fps"))
        out[f"{pre}p99_ms_at_80pct"] = _get(at80, "p99_ms")
        out[f"{pre}p99_all_ms_at_80pct"] = _get(at80, "p99_all_ms")
        out[f"{pre}error_rate_at_80pct"] = _get(at80, "error_rate")
        goodput[name] = _get(at80, "goodput_fps")
        errors[name] = _get(at80, "errors")
        if res is not None and "error" in res:
            out[f"{name}_error"] = res["error"][:300]
    # The 1-client and saturation comparisons block by block (A B B A each): if these
    # disagree in sign, the difference is within what the machine's drift does.
    naive_sat_clients = _get(naive, "saturation_clients")
    for key, clients in (("1_client", 1), ("saturation", naive_sat_clients)):
        blocks = [
            p for p in results.get("paired", []) if p["mode"] == "closed" and p["level"] == clients
        ]
        out[f"paired_fps_ratios_at_{key}"] = [p["fps_ratio"] for p in blocks]
        if key == "1_client":
            out["paired_p50_ms_diffs_at_1_client"] = [p["p50_ms_diff"] for p in blocks]
    out["goodput_fps_at_80pct"] = goodput
    out["errors_at_80pct"] = errors
    p99, naive_p99 = out["p99_ms_at_80pct"], out["naive_p99_ms_at_80pct"]
    err, naive_err = out["error_rate_at_80pct"], out["naive_error_rate_at_80pct"]
    out["p99_under_100ms_at_80pct"] = p99 is not None and p99 < SLO_MS
    # The goals (None where a number is missing).
    ratio = out["vs_naive_saturation_ratio"]
    out["goal_1_client_throughput_ge_naive"] = (
        fps_1 >= naive_fps_1 if fps_1 is not None and naive_fps_1 is not None else None
    )
    out["goal_1_client_p50_le_naive_plus_1ms"] = (
        p50_1 <= naive_p50_1 + 1.0 if p50_1 is not None and naive_p50_1 is not None else None
    )
    out["goal_saturation_ge_1_2x_naive"] = ratio >= 1.2 if ratio is not None else None
    # A lower p99 bought by failing more requests does not count.
    out["goal_p99_at_80pct_below_naive"] = (
        p99 < naive_p99 and (err or 0.0) <= (naive_err or 0.0)
        if p99 is not None and naive_p99 is not None
        else None
    )
    return out


def report(results: dict[str, Any]) -> None:
    s, m, c = results["summary"], results["machine"], results["conditions"]
    print(
        f"\nmachine: {m['cpu']} x{m['cores']} cores, torch {m['torch']}, "
        f"{m.get('gpu', 'no GPU')}; backend {c['backend']} on {c['device']}; load average "
        f"{m['load_average_start'][0]:.2f} at start, {m['load_average_end'][0]:.2f} at end"
    )
    print(
        f"{c['seconds_per_point']:.0f} s of window per point and server, each window after "
        f"{c['warmup_s']:.0f} s warm-up; throughput = answers inside the windows; SLO "
        f"{SLO_MS:.0f} ms; client timeout {CLIENT_TIMEOUT_S:.0f} s"
    )
    a, b = results["limits"]["a_forward"], results["limits"]["b_pipeline"]
    print(f"limit (a) forward:  {a['fps']:.1f} fps (batch {a['best_batch']})")
    print(f"limit (b) pipeline: {b['fps']:.1f} fps (batch {b['best_batch']})")
    print(
        f"\n{'server':12s} {'load':24s} {'fps':>7s} {'goodput':>7s} {'p50 ms':>8s} "
        f"{'p99 ms':>8s}  {'errors':18s} {'p99 all':>8s} {'in flight':>9s}"
    )
    for name, res in results["servers"].items():
        if "error" in res:
            print(f"{name:12s} failed: {res['error'][:200]}")
            continue
        for row in res.get("closed", []) + res.get("open", []):
            errs = ",".join(f"{k}:{v}" for k, v in row["errors"].items()) or "none"
            if row["errors"]:
                errs += f" ({row['error_rate']:.1%})"
            print(
                f"{name:12s} {_level(row):24s} {row['fps']:7.1f} {row['goodput_fps']:7.1f} "
                f"{_ms(row['p50_ms']):>8s} {_ms(row['p99_ms']):>8s}  {errs:18s} "
                f"{_ms(row['p99_all_ms']):>8s} {row['in_flight_at_end']:9d}"
            )
        if "open_error" in res:
            print(f"{name:12s} open loop failed: {res['open_error'][:200]}")
    print(
        f"\nsaturation {_num(s['saturation_fps'])} fps = {_num(s['efficiency_vs_pipeline_b'])} "
        f"of (b), {_num(s['efficiency_vs_forward_a'])} of (a)"
    )
    print(
        f"1 client: {_num(s['vs_naive_at_1_client'])}x naive throughput, p50 "
        f"{_num(s['p50_ms_vs_naive_at_1_client'], '+.2f')} ms vs naive"
    )
    for name in SERVERS:
        pre = "" if name == "its-runtime" else f"{name}_"
        line = (
            f"{name}: p99 at 80% of own saturation {_ms(s[f'{pre}p99_ms_at_80pct'])} ms, "
            f"errors {s['errors_at_80pct'][name] or 'none'}, goodput "
            f"{_num(s['goodput_fps_at_80pct'][name])} fps"
        )
        if name != "its-runtime":
            line += f"; ours/theirs saturation {_num(s[f'vs_{name}_saturation_ratio'])}x"
        print(line)
    for p in results.get("paired", []):
        if p["mode"] == "closed" and p["level"] in (1, s.get("saturation_clients")):
            print(
                f"paired block {p['block']} at {p['level']} clients: ours/naive "
                f"{_num(p['fps_ratio'])}x, p50 {_num(p['p50_ms_diff'], '+.2f')} ms"
            )
    goals = {k: v for k, v in s.items() if k.startswith("goal_")}
    print("goals: " + ", ".join(f"{k[5:]}={v}" for k, v in goals.items()))


def _num(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="short steps (smoke run)")
    parser.add_argument("--seconds", type=float, default=0, help="seconds per load point")
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_S, help="seconds of load before each window"
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=2,
        help="A B B A blocks per load point for its-runtime (A) and naive (B)",
    )
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray Serve peer")
    parser.add_argument("--backend", default="auto", help="engine backend for every server")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: cores)")
    parser.add_argument("--workdir", default="/tmp/its-bench")
    parser.add_argument("--out", default=str(ROOT / "results" / "serving.json"))
    # Internal: run one of the peer servers (started by the benchmark itself).
    parser.add_argument("--role", choices=["naive", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.role == "naive":
        serve_naive(args)
        return 0
    if args.role == "ray":
        serve_ray(args)
        return 0
    results = run_benchmark(args)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    plot(results, out.with_suffix(".png"))
    report(results)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: this runtime vs its limits, a naive server and Ray Serve.

One invocation measures, on the same model file, backend, engine cache and thread
settings:

1. Two in-process limits with no serving: (a) the model forward at its best batch size,
   (b) the whole per-frame pipeline (JPEG decode with DCT scaling + resize/normalise in a
   thread pool, batched forward, post-processing) at its best batch size.
2. ``its-runtime`` (the real console script, in its own process) under closed-loop load
   at 1, 8, 32 and 64 concurrent clients, and open-loop Poisson arrivals at 50% and 80%
   of its saturation rate (the best closed-loop throughput).
3. A naive server (aiohttp, one forward per request, same decode pool) and
4. Ray Serve with ``@serve.batch`` (same engine, same decode), at the same loads.

Payloads are JPEG road scenes generated in code at camera resolution (960x544). The
model is torchvision's SSDlite320-MobileNetV3-Large with random weights (no download),
exported with ``torch.export`` and loaded through ``its_runtime.engine.Engine`` by every
server. The load generator runs in this process (asyncio + aiohttp, keep-alive): on a
small machine it competes with the server for CPU, for every server alike.

Writes ``benchmarks/results/serving.json`` and ``serving.png`` (latency vs
throughput). ``--quick`` shortens every step (for a smoke run, not for numbers).

Usage: ``python benchmarks/serving.py [--quick] [--no-ray] [--backend auto]``
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
import os
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
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
CLOSED_CLIENTS = (1, 8, 32, 64)
OPEN_FRACTIONS = (0.5, 0.8)


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
                    "maxQueueDelayMs": 2,
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
class Run:
    mode: str  # closed or open
    level: float  # clients, or offered rate (frames/s)
    seconds: float
    latencies: list[float] = dataclasses.field(default_factory=list)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1000.0
        ok = len(self.latencies)
        pct = (
            {f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 90, 99)}
            if ok
            else {"p50_ms": None, "p90_ms": None, "p99_ms": None}
        )
        return {
            "mode": self.mode,
            "level": self.level,
            "fps": ok / self.seconds,
            "ok": ok,
            "statuses": self.statuses,
            **pct,
        }


async def _one(
    session: aiohttp.ClientSession, url: str, data: bytes, run: Run, record: bool
) -> None:
    start = time.perf_counter()
    try:
        async with session.post(url, data=data, headers={"Content-Type": "image/jpeg"}) as r:
            await r.read()
            status = str(r.status)
    except aiohttp.ClientError as exc:
        status = type(exc).__name__
    if record:
        run.statuses[status] = run.statuses.get(status, 0) + 1
        if status == "200":
            run.latencies.append(time.perf_counter() - start)


async def closed_loop(url: str, frames: Sequence[bytes], clients: int, seconds: float) -> Run:
    """``clients`` loops each sending a frame and waiting for its answer; a short warm-up
    is run first and not recorded."""
    run = Run("closed", clients, seconds)
    warm = min(1.0, seconds / 4)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()

        async def client(k: int) -> None:
            i = k
            while (now := time.perf_counter() - t0) < warm + seconds:
                await _one(session, url, frames[i % len(frames)], run, record=now >= warm)
                i += clients

        await asyncio.gather(*(client(k) for k in range(clients)))
    return run


async def open_loop(url: str, frames: Sequence[bytes], rate: float, seconds: float) -> Run:
    """Poisson arrivals at ``rate`` per second, sent whether or not earlier ones finished."""
    run = Run("open", rate, seconds)
    rng = np.random.default_rng(7)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        start = time.perf_counter()
        at, i = 0.0, 0
        while at < seconds:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(_one(session, url, frames[i % len(frames)], run, True))
            )
            at += float(rng.exponential(1.0 / rate))
            i += 1
        await asyncio.gather(*tasks)
    return run


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
    wait_ready(p, f"http://127.0.0.1:{port}/ready")
    return p


def start_ray(setup: Setup) -> Proc:
    port = ports.free_port()
    cmd = [sys.executable, __file__, "--role", "ray", *_role_args(setup, port)]
    p = start_process("ray-serve", cmd, setup, f"http://127.0.0.1:{port}/detect")
    wait_ready(p, f"http://127.0.0.1:{port}/-/healthz")
    # Ray reports healthy before the replica has loaded the engine: wait for an answer.
    import urllib.request

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            req = urllib.request.Request(
                p.url, data=road_scene(0), headers={"Content-Type": "image/jpeg"}
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 200:
                    return p
        time.sleep(1)
    raise TimeoutError("Ray Serve never answered")


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
        @serve.batch(max_batch_size=setup.max_batch, batch_wait_timeout_s=0.002)  # type: ignore[untyped-decorator,unused-ignore]
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
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        # Other work on a shared machine skews every number: record how busy it was.
        "load_average_1m": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def measure_server(
    name: str, proc: Proc, frames: Sequence[bytes], seconds: float, rates: Sequence[float] | None
) -> dict[str, Any]:
    closed = []
    for clients in CLOSED_CLIENTS:
        s = asyncio.run(closed_loop(proc.url, frames, clients, seconds)).summary()
        log.info(
            "%s closed %2d clients: %.1f fps, p50 %s ms, p99 %s ms",
            name,
            clients,
            s["fps"],
            _ms(s["p50_ms"]),
            _ms(s["p99_ms"]),
        )
        closed.append(s)
    saturation = max(s["fps"] for s in closed)
    offered = list(rates) if rates is not None else [f * saturation for f in OPEN_FRACTIONS]
    opened = []
    for rate in offered:
        s = asyncio.run(open_loop(proc.url, frames, rate, seconds)).summary()
        log.info(
            "%s open %.1f/s: %.1f fps, p50 %s ms, p99 %s ms, statuses %s",
            name,
            rate,
            s["fps"],
            _ms(s["p50_ms"]),
            _ms(s["p99_ms"]),
            s["statuses"],
        )
        opened.append(s)
    return {"closed": closed, "open": opened, "saturation_fps": saturation}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"its-runtime": "tab:blue", "naive": "tab:red", "ray-serve": "tab:green"}
    for name, res in results["servers"].items():
        closed = [s for s in res["closed"] if s["p99_ms"] is not None]
        ax.plot(
            [s["fps"] for s in closed],
            [s["p99_ms"] for s in closed],
            "o-",
            color=colours.get(name),
            label=f"{name} closed loop (p99)",
        )
        for s in closed:
            ax.annotate(f"{int(s['level'])}c", (s["fps"], s["p99_ms"]), fontsize=7)
        opened = [s for s in res["open"] if s["p99_ms"] is not None]
        ax.plot(
            [s["fps"] for s in opened],
            [s["p99_ms"] for s in opened],
            "s--",
            color=colours.get(name),
            alpha=0.6,
            label=f"{name} open loop (p99)",
        )
    for key, style in (("a_forward", ":"), ("b_pipeline", "-.")):
        ax.axvline(
            results["limits"][key]["fps"],
            color="grey",
            linestyle=style,
            label=f"limit ({key[0]}) {results['limits'][key]['fps']:.0f} fps",
        )
    ax.axhline(100, color="black", linewidth=0.6, label="100 ms SLO")
    ax.set_xlabel("throughput (frames/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Serving {results['model']} on {results['machine']['cpu']}"[:90], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    limit_s = min(5.0, seconds / 2)
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    threads = args.threads or (os.cpu_count() or 2)
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
        "machine": machine(),
        "model": "SSDlite320-MobileNetV3-Large (random weights), 3x320x320",
        "backend": backend,
        "device": device,
        "threads": threads,
        "max_batch": setup.max_batch,
        "quick": args.quick,
        "seconds_per_point": seconds,
        "frames": {
            "count": len(frames),
            "resolution": [FRAME_W, FRAME_H],
            "median_bytes": sizes[len(sizes) // 2],
        },
        "limits": {"a_forward": a, "b_pipeline": b},
        "servers": {},
    }
    ours = start_runtime(setup)
    try:
        results["servers"]["its-runtime"] = measure_server(
            "its-runtime", ours, frames, seconds, None
        )
    finally:
        ours.stop()
    ours_res = results["servers"]["its-runtime"]
    rates = [s["level"] for s in ours_res["open"]]
    peers = [("naive", start_naive)]
    if not args.no_ray:
        peers.append(("ray-serve", start_ray))
    for name, starter in peers:
        try:
            proc = starter(setup)
        except (RuntimeError, TimeoutError, OSError) as exc:
            log.error("%s did not start: %s", name, exc)
            results["servers"][name] = {"error": str(exc)[-2000:]}
            continue
        try:
            results["servers"][name] = measure_server(name, proc, frames, seconds, rates)
        finally:
            proc.stop()
    results["summary"] = summarise(results)
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    ours = results["servers"]["its-runtime"]
    sat = ours["saturation_fps"]
    a, b = results["limits"]["a_forward"]["fps"], results["limits"]["b_pipeline"]["fps"]
    p99_80 = ours["open"][-1]["p99_ms"]
    out: dict[str, Any] = {
        "saturation_fps": sat,
        "efficiency_vs_pipeline_b": sat / b,
        "efficiency_vs_forward_a": sat / a,
        "p99_ms_at_80pct": p99_80,
        "p99_under_100ms_at_80pct": p99_80 is not None and p99_80 < 100,
    }
    for peer in ("naive", "ray-serve"):
        res = results["servers"].get(peer)
        if not res or "error" in res:
            continue
        out[f"vs_{peer}_saturation_ratio"] = sat / max(res["saturation_fps"], 1e-9)
        out[f"{peer}_saturation_fps"] = res["saturation_fps"]
        out[f"{peer}_p99_ms_at_our_80pct"] = res["open"][-1]["p99_ms"]
    return out


def report(results: dict[str, Any]) -> None:
    s = results["summary"]
    m = results["machine"]
    print(
        f"\nmachine: {m['cpu']} x{m['cores']} cores, torch {m['torch']}, "
        f"{m.get('gpu', 'no GPU')}; backend {results['backend']} on {results['device']}"
    )
    a, b = results["limits"]["a_forward"], results["limits"]["b_pipeline"]
    print(f"limit (a) forward:  {a['fps']:.1f} fps (batch {a['best_batch']})")
    print(f"limit (b) pipeline: {b['fps']:.1f} fps (batch {b['best_batch']})")
    for name, res in results["servers"].items():
        if "error" in res:
            print(f"{name}: failed: {res['error'][:200]}")
            continue
        for row in res["closed"] + res["open"]:
            level = (
                f"{int(row['level'])} clients"
                if row["mode"] == "closed"
                else (f"{row['level']:.1f}/s Poisson")
            )
            print(
                f"{name:12s} {row['mode']:6s} {level:16s} {row['fps']:7.1f} fps  "
                f"p50 {_ms(row['p50_ms']):>7s} ms  p99 {_ms(row['p99_ms']):>7s} ms  "
                f"{row['statuses']}"
            )
    print(
        f"saturation {s['saturation_fps']:.1f} fps = {s['efficiency_vs_pipeline_b']:.2f} of (b), "
        f"{s['efficiency_vs_forward_a']:.2f} of (a); p99 at 80%: {_ms(s['p99_ms_at_80pct'])} ms"
    )
    for peer in ("naive", "ray-serve"):
        if f"vs_{peer}_saturation_ratio" in s:
            print(
                f"vs {peer}: {s[f'vs_{peer}_saturation_ratio']:.2f}x throughput; their p99 at "
                f"our 80% rate: {_ms(s[f'{peer}_p99_ms_at_our_80pct'])} ms"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="short steps (smoke run)")
    parser.add_argument("--seconds", type=float, default=0, help="seconds per load point")
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

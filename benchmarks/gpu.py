"""GPU check: what a lent CUDA machine has, and what the runtime does on it.

Run by ``benchmarks/gpu_check.sh`` (one prepared run, under 8 minutes in all). Every
section has its own time budget, catches its own failures, and the JSON is rewritten
after each section, so a run cut short still reports what it measured:

1. ``inventory``: Python, torch/CUDA, the GPU, torch-tensorrt, torchvision's nvJPEG,
   PyAV and whether its FFmpeg can open a CUDA hardware decoder, and the project's own
   imports; ``missing`` says exactly what is absent and which sections that skips.
2. ``engines``: SSDlite320-MobileNetV3 (random weights, built in code, no download)
   through the runtime's ``Engine`` with each backend forced, FP16: cold build time
   (empty engine cache), warm start (same cache, a new Engine), warm-up time, and the
   forward limit in frames/s at each batch size (staged batch on the device, model
   only, synchronised); AOTInductor and eager again with CUDA graphs.
3. ``decode``: frames/s decoding the same 1080p30 H.264 clip on the CPU (PyAV,
   threaded, to RGB) and on the GPU (the runtime's hardware decode path, frames left
   on the device), one stream and 8 streams at once (NVDEC has several engines).
4. ``cameras``: ``benchmarks/cameras.py`` on 1080p30 file cameras paced in real time
   with GPU decode: the largest camera count at frame p99 < 100 ms (no database on the
   lent machine: rows are counted, not written).

Usage: ``python benchmarks/gpu.py [--out benchmarks/results/gpu.json] [--sections ...]``
On a machine without CUDA it still runs the inventory and says why the rest skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gpu-check")
ROOT = pathlib.Path(__file__).resolve().parent
INPUT_SHAPE = (3, 320, 320)
BATCHES = (1, 2, 4, 8, 16, 32)
BUDGETS_S = {"engines": 210.0, "decode": 45.0, "cameras": 120.0}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------
# 1. Inventory
# ---------------------------------------------------------------------------


def inventory() -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }
    missing: list[str] = []
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        out["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            out["gpu"] = props.name
            out["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            out["capability"] = f"{props.major}.{props.minor}"
        else:
            missing.append("CUDA (torch sees no device): engines, decode and cameras skip")
    except ImportError as exc:
        missing.append(f"torch ({_first_line(exc)}): everything but this inventory skips")
        out["cuda_available"] = False
    out["torch_tensorrt"] = _version("torch_tensorrt")
    if out["torch_tensorrt"] is None:
        missing.append("torch_tensorrt: the tensorrt backend is skipped (AOTInductor leads)")
    out["torchvision"] = _version("torchvision")
    out["nvjpeg"] = _nvjpeg() if out.get("cuda_available") else "skipped: no CUDA"
    out["av"] = _version("av")
    if out["av"] is None:
        missing.append("av (PyAV): decode and cameras skip (carry its wheel in .gpu-deps)")
        out["av_cuda_hwaccel"] = "skipped: no PyAV"
    else:
        out["av_cuda_hwaccel"] = _av_hwaccel() if out.get("cuda_available") else "no CUDA"
        if out["av_cuda_hwaccel"] != "ok":
            missing.append(f"PyAV CUDA hardware decode: {out['av_cuda_hwaccel']}")
    for name in ("pydantic", "yaml", "numpy", "aiohttp", "prometheus_client", "asyncpg"):
        out[name] = _version(name)
        if out[name] is None:
            missing.append(f"{name}: the runtime's imports need it (carry it in .gpu-deps)")
    out["pytest"] = _version("pytest")
    if out["pytest"] is None:
        missing.append("pytest: the GPU-marked tests skip")
    out["nvml"] = _version("pynvml")
    out["missing"] = missing
    return out


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = importlib.import_module(module)
    except Exception as exc:
        return f"import failed: {_first_line(exc)}"
    return str(getattr(mod, "__version__", "present"))


def _nvjpeg() -> str:
    try:
        import io

        import numpy as np
        import torch
        from PIL import Image
        from torchvision.io import decode_jpeg

        buf = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buf, "JPEG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        img = decode_jpeg(data, device="cuda")
        return "ok" if img.is_cuda else "decoded on the CPU"
    except Exception as exc:
        return _first_line(exc)


def _av_hwaccel() -> str:
    """Whether PyAV's FFmpeg opens a CUDA decoder (decodes a tiny clip with it)."""
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available

        devices = list(hwdevices_available())
        if "cuda" not in devices:
            return f"FFmpeg in this PyAV has no cuda hwdevice (has: {devices or 'none'})"
        clip = _clip(pathlib.Path(tempfile.gettempdir()) / "its-gpu-probe.ts", 64, 64, 10)
        import av

        with av.open(str(clip), hwaccel=HWAccel("cuda", allow_software_fallback=False)) as c:
            n = sum(1 for _ in c.decode(video=0))
        return "ok" if n else "no frames decoded"
    except Exception as exc:
        return _first_line(exc)


def _clip(path: pathlib.Path, width: int, height: int, frames: int) -> pathlib.Path:
    """A generated H.264 clip (the traffic scene generator), cached by size."""
    if path.exists() and path.stat().st_size > 0:
        return path
    from its_runtime.kits import synth

    scene = synth.two_lane_scene(frames / 30.0, width=width, height=height, fps=30)
    synth.encode_h264(scene, path)
    return path


# ---------------------------------------------------------------------------
# 2. Engines
# ---------------------------------------------------------------------------


def engines(workdir: pathlib.Path, budget_s: float, smoke: bool = False) -> dict[str, Any]:

    from its_runtime import config
    from its_runtime.engine import Engine
    from its_runtime.kits.models import export, ssdlite

    deadline = time.monotonic() + budget_s
    model_path = workdir / "ssdlite320.pt2"
    started = time.monotonic()
    if not model_path.exists():
        net = ssdlite.build_ssdlite_raw(6, (INPUT_SHAPE[1], INPUT_SHAPE[2]))
        export.save_exported_program(net, model_path, INPUT_SHAPE, max_batch=max(BATCHES))
    out: dict[str, Any] = {
        "model": "SSDlite320-MobileNetV3-Large (random weights), 3x320x320, fp16",
        "export_s": round(time.monotonic() - started, 2),
        "backends": {},
    }

    def model(backend: str) -> config.ModelConfig:
        return config.ModelConfig.model_validate(
            {
                "path": str(model_path),
                "inputShape": list(INPUT_SHAPE),
                "outputFormat": "yolo",
                "backend": backend,
                "precision": "fp16",
                "batching": {"maxBatchSize": max(BATCHES), "optBatchSize": 8},
            }
        )

    plan = [
        ("eager", False),
        ("eager", True),
        ("aotinductor", False),
        ("aotinductor", True),
        ("compile", False),
        ("tensorrt", False),
    ]
    if smoke:  # --smoke on a CPU machine: the code path, not numbers
        plan = [("eager", False), ("eager", True)]
    for backend, graphs in plan:
        name = backend + ("+cuda-graphs" if graphs else "")
        if backend == "tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
            out["backends"][name] = {"skipped": "torch_tensorrt is not installed"}
            continue
        if time.monotonic() > deadline:
            out["backends"][name] = {"skipped": f"section budget of {budget_s:.0f}s spent"}
            continue
        cache = config.EngineCacheConfig(dir=str(workdir / f"cache-{backend}"))
        gpu = config.GpuConfig(cuda_graphs=graphs)
        row: dict[str, Any] = {}
        try:
            t = time.monotonic()
            engine = Engine.load(model(backend), cache, gpu)
            row["cold_load_s"] = round(time.monotonic() - t, 2)
            row["origin_cold"] = engine.origin
            engine.warmup()
            row["cold_warmup_s"] = round(engine.warmup_seconds or 0.0, 2)
            del engine
            _empty_cache()
            t = time.monotonic()
            engine = Engine.load(model(backend), cache, gpu)
            engine.warmup()
            row["warm_start_s"] = round(time.monotonic() - t, 2)
            row["origin_warm"] = engine.origin
            row["backend"] = engine.backend
            row["precision"] = engine.precision
            row["cuda_graphs"] = engine.describe().get("cuda_graphs", [])
            row["fallbacks"] = [list(f) for f in engine.fallbacks]
            row["fps_by_batch"] = _forward_limit(engine, deadline)
            best = max(row["fps_by_batch"].items(), key=lambda kv: kv[1], default=None)
            row["best"] = None if best is None else {"batch": int(best[0]), "fps": best[1]}
            del engine
            _empty_cache()
        except Exception as exc:
            row["error"] = _first_line(exc)
            log.warning("backend %s failed: %s", name, traceback.format_exc(limit=3))
        out["backends"][name] = row
        log.info("engine %s: %s", name, row)
    return out


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _forward_limit(engine: Any, deadline: float, seconds: float = 1.0) -> dict[str, float]:
    import torch

    fps: dict[str, float] = {}
    for b in BATCHES:
        if b > engine.max_batch_size or time.monotonic() > deadline:
            break
        x = torch.rand((b, *INPUT_SHAPE), device=engine.device)
        size = engine.spec.bucket_for(b)
        engine._forward(x, size, strict=False)
        _sync()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            engine._forward(x, size, strict=False)
            n += b
        _sync()
        fps[str(b)] = round(n / (time.perf_counter() - start), 1)
    return fps


# ---------------------------------------------------------------------------
# 3. Decode
# ---------------------------------------------------------------------------


def decode(workdir: pathlib.Path, budget_s: float) -> dict[str, Any]:
    clip = _clip(workdir / "traffic-1080p.ts", 1920, 1080, 300)
    out: dict[str, Any] = {"clip": "generated traffic scene, 1920x1080, 30 fps, H.264, 10 s"}
    deadline = time.monotonic() + budget_s
    out["cpu_1_stream_fps"] = _decode_fps(clip, "cpu", 1, deadline)
    out["gpu_1_stream_fps"] = _decode_fps(clip, "gpu", 1, deadline)
    out["cpu_8_streams_fps"] = _decode_fps(clip, "cpu", 8, deadline)
    out["gpu_8_streams_fps"] = _decode_fps(clip, "gpu", 8, deadline)
    return out


def _decode_fps(clip: pathlib.Path, mode: str, streams: int, deadline: float) -> Any:
    """Aggregate frames/s of ``streams`` threads each decoding the clip to model input."""
    import concurrent.futures

    if time.monotonic() > deadline:
        return "skipped: section budget spent"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    decode_probe: Any = importlib.import_module("decode_probe")
    try:
        with concurrent.futures.ThreadPoolExecutor(streams) as pool:
            start = time.perf_counter()
            counts = list(
                pool.map(lambda _: decode_probe.decode_all(clip, mode, INPUT_SHAPE), range(streams))
            )
            elapsed = time.perf_counter() - start
        frames = sum(n for n, _ in counts)
        return {"fps": round(frames / elapsed, 1), "backend": counts[0][1], "frames": frames}
    except Exception as exc:
        return {"error": _first_line(exc)}


# ---------------------------------------------------------------------------
# 4. Cameras
# ---------------------------------------------------------------------------


def cameras(out_dir: pathlib.Path, budget_s: float) -> dict[str, Any]:
    target = out_dir / "cameras-gpu.json"
    cmd = [
        sys.executable,
        str(ROOT / "cameras.py"),
        "--gpu-check",
        "--out",
        str(target),
        "--budget-s",
        str(int(budget_s - 10)),
    ]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, timeout=budget_s, capture_output=True, text=True, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"cameras.py ran past {budget_s:.0f}s"}
    tail = (proc.stdout + proc.stderr)[-3000:]
    if proc.returncode != 0 or not target.exists():
        return {"error": f"cameras.py exited {proc.returncode}", "log_tail": tail}
    result: dict[str, Any] = json.loads(target.read_text())
    return {"summary": result.get("summary"), "file": target.name, "log_tail": tail[-800:]}


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu.json"))
    parser.add_argument("--workdir", default=str(pathlib.Path(tempfile.gettempdir()) / "its-gpu"))
    parser.add_argument(
        "--sections", default="inventory,engines,decode,cameras", help="comma-separated"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="without CUDA: run the engine section on the CPU (eager only) to test the code",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    started = time.monotonic()

    def save() -> None:
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(result, indent=2, default=str))

    result["inventory"] = inv = inventory()
    for line in inv["missing"]:
        print(f"MISSING: {line}", flush=True)
    save()
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "engines": lambda: engines(workdir, BUDGETS_S["engines"], smoke=args.smoke),
        "decode": lambda: decode(workdir, BUDGETS_S["decode"]),
        "cameras": lambda: cameras(out.parent, BUDGETS_S["cameras"]),
    }
    needs = {"engines": ["cuda"], "decode": ["cuda", "av"], "cameras": ["cuda", "av"]}
    for name, run in sections.items():
        if name not in wanted:
            continue
        absent = [
            n
            for n in needs[name]
            if (n == "cuda" and not (inv.get("cuda_available") or args.smoke))
            or (n == "av" and not inv.get("av"))
        ]
        if absent:
            result[name] = {"skipped": f"needs {', '.join(absent)}"}
            print(f"SKIPPED {name}: needs {', '.join(absent)}", flush=True)
            save()
            continue
        t = time.monotonic()
        try:
            result[name] = run()
        except Exception as exc:
            result[name] = {"error": _first_line(exc), "trace": traceback.format_exc(limit=5)}
        result[name]["section_s"] = round(time.monotonic() - t, 1)
        save()
        print(f"== {name} ({result[name]['section_s']}s)", flush=True)
        print(json.dumps(result[name], indent=1, default=str)[:4000], flush=True)
    with contextlib.suppress(OSError):
        result["load_average_1m_end"] = os.getloadavg()[0]
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

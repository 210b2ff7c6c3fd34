"""Measure cold vs warm start to ready, each in a fresh process, as pods start.

``python -m its_runtime.kits.coldstart`` exports a detector, then starts the engine
twice in new processes sharing one engine-cache directory: the first finds the cache
empty and builds, the second loads the build. ``TORCHINDUCTOR_CACHE_DIR`` is removed
from their environment, as in a fresh pod (whose ``/tmp`` is empty), so the engine
puts Inductor's cache on the volume too, and the warm start gains only from what is
on the (shared) volume. "Ready" is measured from just
before the process is spawned (interpreter and torch import included) to the end of
warm-up, which is when the server would report ``/ready``.

``run_child`` is what the tests use to start real engine processes, too.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any


def run_child(
    model_json: str,
    cache_dir: pathlib.Path,
    like_a_fresh_pod: bool = False,
) -> subprocess.Popen[str]:
    """Start a process that loads and warms an engine, then prints a JSON report.

    ``like_a_fresh_pod`` drops ``TORCHINDUCTOR_CACHE_DIR`` from its environment.
    """
    env = dict(os.environ)
    if like_a_fresh_pod:
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "its_runtime.kits.coldstart",
        "child",
        "--model",
        model_json,
        "--cache-dir",
        str(cache_dir),
        "--started-at",
        repr(time.time()),
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_report(proc: subprocess.Popen[str], timeout_s: float = 600) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"engine process failed ({proc.returncode}): {err[-3000:]}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def _child(args: argparse.Namespace) -> None:
    import torch

    from its_runtime import config
    from its_runtime.engine import Engine

    imported = time.time()
    model = config.ModelConfig.model_validate_json(args.model)
    engine = Engine.load(model, config.EngineCacheConfig(dir=args.cache_dir), config.GpuConfig())
    engine.warmup()
    ready = time.time()
    c, h, w = engine.input_shape
    detections = engine.run_batch(torch.rand(1, c, h, w))
    report = {
        "pid": os.getpid(),
        "backend": engine.backend,
        "origin": engine.origin,
        "fallbacks": engine.fallbacks,
        "cache": engine.cache_stats.as_dict(),
        "import_s": round(imported - args.started_at, 3),
        "load_s": round(engine.load_seconds, 3),
        "warmup_s": round(engine.warmup_seconds or 0.0, 3),
        "ready_s": round(ready - args.started_at, 3),
        "frames": len(detections),
    }
    print(json.dumps(report))


def _measure(args: argparse.Namespace) -> None:
    from its_runtime import config
    from its_runtime.kits.models import export

    work = pathlib.Path(tempfile.mkdtemp(prefix="its-coldstart-"))
    shape = (3, args.size, args.size)
    model_path = work / "model.pt2"
    net = export.build(args.arch, 6, shape, args.width)
    export.save_exported_program(net, model_path, shape, args.max_batch)
    model = config.ModelConfig(
        path=str(model_path),
        input_shape=list(shape),
        output_format=config.OutputFormat.YOLO,
        backend=config.Backend(args.backend),
        batching=config.BatchingConfig(
            max_batch_size=args.max_batch, opt_batch_size=min(4, args.max_batch)
        ),
    )
    cache_dir = work / "engine-cache"
    reports = []
    for run in ("cold", "warm"):
        report = child_report(run_child(model.model_dump_json(), cache_dir, like_a_fresh_pod=True))
        report["run"] = run
        reports.append(report)
        print(
            f"{run}: ready in {report['ready_s']:.2f}s (import {report['import_s']:.2f}s, "
            f"load {report['load_s']:.2f}s, warm-up {report['warmup_s']:.2f}s), "
            f"backend {report['backend']}, cache {report['cache']}",
            flush=True,
        )
    cold, warm = reports
    print(
        json.dumps(
            {
                "arch": args.arch,
                "size": args.size,
                "reports": reports,
                "speedup": round(cold["ready_s"] / warm["ready_s"], 2),
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    child = sub.add_parser("child", help="load + warm up one engine, print a JSON report")
    child.add_argument("--model", required=True, help="ModelConfig as JSON")
    child.add_argument("--cache-dir", required=True)
    child.add_argument("--started-at", type=float, default=time.time())
    measure = sub.add_parser("measure", help="cold vs warm start (the default)")
    for p in (parser, measure):
        p.add_argument("--arch", default="yolo", choices=["yolo", "ssdlite"])
        p.add_argument("--size", type=int, default=320)
        p.add_argument("--width", type=int, default=16)
        p.add_argument("--max-batch", type=int, default=8)
        p.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    if args.cmd == "child":
        _child(args)
    else:
        _measure(args)


if __name__ == "__main__":
    main()

"""Fault scenario: ``/v1/detect`` offered three times what the runtime can serve.

A real ``its-runtime`` process (the serving tests' slow exported detector, on CPU,
one frame a batch, a short queue) is first measured closed-loop for its capacity,
then offered ``3x`` that rate open-loop. Every answer must be a 200, a 429 or a 503
(never a 500 nor a dropped connection: ``lost`` counts those), the process's RSS is
sampled throughout (it must stay bounded), and ``recovery_s`` is the end of the
overload until a request is again answered 200 within twice the unloaded latency.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import pathlib
import subprocess
import tempfile
import time

import aiohttp
import numpy as np
import yaml

from its_devenv import localrun, ports
from tests.faults.scenarios import Outcome

SHAPE = (3, 256, 256)
HEADERS = {"Content-Type": "application/x-npy"}


def _payload() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((256, 256, 3), np.uint8))
    return buf.getvalue()


def _rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start(tmp: pathlib.Path) -> tuple[subprocess.Popen[bytes], str]:
    from its_runtime.kits.models import export, yolo

    model = export.save_exported_program(
        yolo.build_yolo(6, 32, SHAPE[0]), tmp / "slow.pt2", SHAPE, max_batch=8
    )
    port = ports.free_port()
    config = {
        "model": {
            "path": str(model), "format": "ExportedProgram", "inputShape": list(SHAPE),
            "outputFormat": "yolo", "backend": "eager", "precision": "fp32",
            "batching": {"maxBatchSize": 1, "optBatchSize": 1, "maxQueueSize": 4,
                         "maxQueueDelayMs": 0},
        },
        "server": {"host": "127.0.0.1", "port": port},
        "engineCache": {"dir": str(tmp / "engines")},
    }  # fmt: skip
    (tmp / "runtime.yaml").write_text(yaml.safe_dump(config))
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    with (tmp / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            localrun.runtime_argv(tmp / "runtime.yaml"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    return proc, f"http://127.0.0.1:{port}"


async def _detect(s: aiohttp.ClientSession, url: str, body: bytes) -> tuple[str, float]:
    start = time.monotonic()
    try:
        async with s.post(url + "/v1/detect", data=body, headers=HEADERS) as r:
            await r.read()
            return str(r.status), time.monotonic() - start
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, time.monotonic() - start


async def overload(seconds: float, *, factor: float = 3.0) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="its-faults-") as tmp:
        proc, url = _start(pathlib.Path(tmp))
        try:
            body = _payload()
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    try:
                        async with s.get(url + "/ready") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
                for _ in range(3):
                    await _detect(s, url, body)  # warm
                began, served, latencies = time.monotonic(), 0, []
                while time.monotonic() - began < 3:
                    status, took = await _detect(s, url, body)
                    served += status == "200"
                    latencies.append(took)
                capacity = served / (time.monotonic() - began)
                unloaded = sorted(latencies)[len(latencies) // 2]
                rss_start = _rss_mb(proc.pid)
                rss: list[float] = []
                statuses: collections.Counter[str] = collections.Counter()
                tasks: list[asyncio.Task[tuple[str, float]]] = []
                rate = factor * capacity
                start = time.monotonic()
                while (now := time.monotonic()) - start < seconds:
                    while len(tasks) < (now - start) * rate:
                        tasks.append(asyncio.create_task(_detect(s, url, body)))
                    if len(tasks) % 5 == 0:
                        rss.append(_rss_mb(proc.pid))
                    await asyncio.sleep(0.01)
                for status, _ in await asyncio.gather(*tasks):
                    statuses[status] += 1
                ended = time.monotonic()
                recovery_s = float("inf")
                while time.monotonic() - ended < 30:
                    status, took = await _detect(s, url, body)
                    if status == "200" and took <= 2 * unloaded:
                        recovery_s = time.monotonic() - ended
                        break
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(30)
    answered = statuses["200"] + statuses["429"] + statuses["503"]
    return Outcome(
        name="overload_3x_detect",
        lost=sum(statuses.values()) - answered,
        duplicated=0,
        recovery_s=round(recovery_s, 3),
        details={
            "capacity_rps": round(capacity, 1),
            "offered_rps": round(rate, 1),
            "seconds": seconds,
            "statuses": dict(statuses),
            "answers_500": statuses["500"],
            "rss_mb_start": round(rss_start, 1),
            "rss_mb_max": round(max(rss, default=rss_start), 1),
            "server_alive": alive,
        },
    )

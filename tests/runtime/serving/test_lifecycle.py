"""A server process from start to exit: readiness around warm-up, and draining on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import time

import aiohttp
import numpy as np
import pytest

from its_devenv import localrun

from .conftest import ServeFn, write_config
from .test_server import npy, post

#: Starts processes or compiles models: outside `make check`'s fast loop.
pytestmark = pytest.mark.slow


@pytest.mark.slow
def test_ready_is_false_until_warm_up_has_finished(serve: ServeFn) -> None:
    # Warm-up runs every batch bucket (1, 2, 4, 8) of the slow model: about 2 s.
    server = serve(model="slow", batching={"maxBatchSize": 8}, wait="live")
    status, body = server.get("/ready")
    assert status == 503
    details = json.loads(body)
    assert details["ready"] is False
    assert details["warmed_up"] is False
    assert "warming up" in details["reasons"]
    assert server.get("/live")[0] == 200  # alive all along: a probe must not restart it
    start = time.monotonic()
    server.wait_ready(timeout=30)
    assert time.monotonic() - start > 0.5
    details = json.loads(server.get("/ready")[1])
    assert details["ready"] is True
    assert details["backend"] == "eager"
    assert details["fallbacks"] == []
    # its-runtime keeps torch's parallel kernels on the compute thread (engine.intra_op)
    assert details["torch_threads"]["confined"] is True
    assert details["torch_threads"]["other_threads"] == 1


@pytest.mark.slow
async def detect_requests_arrived(s: aiohttp.ClientSession, url: str) -> int:
    """/v1/detect requests in the handler or answered, from the server's metrics
    (the scrape itself is one of ``its_requests_in_flight``)."""
    async with s.get(url + "/metrics") as r:
        text = await r.text()
    in_flight = answered = 0.0
    for line in text.splitlines():
        if line.startswith("its_requests_in_flight "):
            in_flight = float(line.split()[-1]) - 1
        elif line.startswith("its_requests_total{") and '"/v1/detect"' in line:
            answered += float(line.split()[-1])
    return int(in_flight + answered)


async def test_sigterm_answers_queued_frames_then_exits(serve: ServeFn) -> None:
    server = serve(
        model="slow",
        batching={"maxBatchSize": 1, "optBatchSize": 1, "maxQueueSize": 64, "maxQueueDelayMs": 0},
    )
    payload = npy(np.zeros((512, 512, 3), np.uint8))
    headers = {"Content-Type": "application/x-npy"}
    async with aiohttp.ClientSession() as s:
        pending = [
            asyncio.create_task(post(s, server.url + "/v1/detect", payload, headers=headers))
            for _ in range(6)
        ]
        # All six have reached the handler (queued, running or answered; ~0.1 s each):
        # a fixed sleep let the sixth arrive after SIGTERM on a loaded machine (503).
        deadline = time.monotonic() + 20
        while await detect_requests_arrived(s, server.url) < 6:
            assert time.monotonic() < deadline, "six /v1/detect requests never arrived"
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        async with s.get(server.url + "/ready") as r:
            ready_status, ready = r.status, await r.json()
        refused, body = await post(s, server.url + "/v1/detect", payload, headers=headers)
        results = await asyncio.gather(*pending)
    assert ready_status == 503
    assert ready["draining"] is True
    assert "draining" in ready["reasons"]
    assert (refused, body["error"]["reason"]) == (503, "draining")
    assert [status for status, _ in results] == [200] * 6  # queued work was finished
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    log = server.log()
    assert "drained (complete)" in log
    started = log.split("draining: ")[1]
    queued = int(started.split(" frames queued")[0])
    admitted = int(started.split("queued, ")[1].split(" requests admitted")[0])
    assert queued + admitted >= 2, log  # the drain really had work to finish


def run_runtime(config_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        localrun.runtime_argv(config_path), capture_output=True, text=True, timeout=60, env=env
    )


def test_a_missing_or_invalid_config_stops_the_start_with_the_field_named(
    tmp_path: pathlib.Path,
) -> None:
    missing = run_runtime(tmp_path / "nope.yaml")
    assert missing.returncode == 2
    assert "nope.yaml does not exist" in missing.stderr
    bad = tmp_path / "bad.yaml"
    write_config(bad, {"path": "/m.pt2", "batching": {"maxBatchSize": 0}})
    invalid = run_runtime(bad)
    assert invalid.returncode == 2
    assert "maxBatchSize" in invalid.stderr


@pytest.mark.slow
def test_a_model_that_cannot_load_exits_with_the_engine_message(
    tmp_path: pathlib.Path, exported_models: dict[str, pathlib.Path]
) -> None:
    cfg = tmp_path / "runtime.yaml"
    # The exported fast model takes 3x64x64 frames; the config claims 3x96x96.
    write_config(
        cfg,
        {"path": str(exported_models["fast"]), "inputShape": [3, 96, 96],
         "outputFormat": "yolo", "backend": "eager"},
        engineCache={"dir": str(tmp_path / "engines")},
    )  # fmt: skip
    result = run_runtime(cfg)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cannot serve: warm-up failed" in result.stderr
    assert "96" in result.stderr.split("cannot serve:")[1]

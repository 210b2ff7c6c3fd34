"""The real ``its-runtime`` process, end to end: RTSP camera in, exact counts out.

Nothing is stood in: a generated traffic video with known ground truth is served by
GStreamer's RTSP server (``its_devenv.rtsp``), the generated-traffic detector is
exported to a ``.pt2`` file and loaded by the engine like any model, the runtime is
started as the operator starts it (``its-runtime --config FILE``, secrets in
environment variables), and the results are read where users read them: PostgreSQL,
the counts API, ``/metrics`` and ``/v1/performance``.

Order matters for exactness. The camera is served only once the runtime is ready, so
no vehicle passes while the engine loads. Every RTSP connection plays the video from
its start, so once the stream has ended the server is stopped before the runtime's
reconnect could replay it (the video's first crossing is 2.5 s in, far more than the
reconnect delay plus one metrics poll).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import av
import pytest
from prometheus_client.parser import text_string_to_metric_families

from its_devenv import localrun, ports, procs, rtsp
from its_runtime import config
from its_runtime.kits import synth, synth_detector
from tests.dataplane import support

INPUT_SHAPE = (3, 96, 160)
CAMERA = "cam-1"
#: Vertical line through the middle, drawn bottom to top: left-to-right is "in".
MID_LINE = config.CountingLine(
    name="mid", start=config.Point(x=0.5, y=1.0), end=config.Point(x=0.5, y=0.0)
)
#: Five crossings of both classes in both directions, the last 1 s before the end.
DURATION_S = 7.0


#: Starts processes or compiles models: outside `make check`'s fast loop.
pytestmark = pytest.mark.slow


@pytest.fixture
def rtsp_available() -> None:
    reason = rtsp.unavailable_reason()
    if reason is not None:
        pytest.fail(reason)


def log_tail(path: pathlib.Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def scrape(text: str) -> dict[str, float]:
    """``name{label="v",...}`` -> value, for every sample of a Prometheus exposition."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def until(
    predicate: Callable[[], Any], timeout_s: float, what: str, log: pathlib.Path
) -> Any:
    """Await ``predicate()`` (sync or async) until truthy; fail with the runtime's log."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{log_tail(log)}")
        await asyncio.sleep(0.1)


@pytest.mark.services
@pytest.mark.slow
async def test_its_runtime_counts_an_rtsp_camera_exactly_and_exits_cleanly_on_sigterm(
    rtsp_available: None, pg_dsn: str, redis_url: str, tmp_path: pathlib.Path
) -> None:
    started = time.monotonic()
    scene = synth.two_lane_scene(DURATION_S)
    truth = scene.crossings(MID_LINE)
    video = synth.encode_h264(scene, tmp_path / "traffic.ts")
    model = synth_detector.export_synth_detector(tmp_path / "synth.pt2", INPUT_SHAPE, 8)
    rtsp_port, http_port = ports.free_port(), ports.free_port()
    camera_server = rtsp.RtspServer(video, rtsp_port)
    runtime_config = config.RuntimeConfig(
        model=synth_detector.model_config(model, INPUT_SHAPE, 8, backend=config.Backend.EAGER),
        cameras=[config.CameraConfig(name=CAMERA, url=camera_server.url, lines=[MID_LINE])],
        database=config.DatabaseConfig(
            dsn_env=config.DATABASE_DSN_ENV,
            journal_dir=str(tmp_path / "journal"),
            flush_interval_s=0.2,
        ),
        cache=config.CacheConfig(redis_url_env=config.REDIS_URL_ENV),
        engine_cache=config.EngineCacheConfig(dir=str(tmp_path / "engines")),
        server=config.ServerConfig(host="127.0.0.1", port=http_port, drain_timeout_s=15),
    )
    config_file = tmp_path / "runtime.yaml"
    config_file.write_text(runtime_config.to_yaml())
    env = {**os.environ, config.DATABASE_DSN_ENV: pg_dsn, config.REDIS_URL_ENV: redis_url}
    log = tmp_path / "runtime.log"
    prepared = time.monotonic()

    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *localrun.runtime_argv(config_file),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    cam = f'camera="{CAMERA}"'
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{http_port}") as client:

            async def get(path: str, **params: str) -> tuple[int, Any]:
                try:
                    async with client.get(path, params=params) as resp:
                        if resp.content_type == "application/json":
                            return resp.status, await resp.json()
                        return resp.status, await resp.text()
                except aiohttp.ClientConnectionError:
                    return 0, None

            async def ready() -> bool:
                assert proc.returncode is None, f"its-runtime exited\n{log_tail(log)}"
                status, body = await get("/ready")
                return status == 200 and body["ready"] is True

            async def metrics() -> dict[str, float]:
                status, text = await get("/metrics")
                assert status == 200, text
                return scrape(text)

            async def stream_ended() -> bool:
                m = await metrics()
                return (
                    m.get(f"its_ingest_frames_total{{{cam}}}", 0) > 0
                    and m.get(f"its_ingest_connected{{{cam}}}", 1) == 0
                )

            async def all_crossings_stored() -> bool:
                return len(await support.crossings_in_db(pg_dsn)) >= len(truth)

            await until(ready, 40, "/ready", log)
            ready_at = time.monotonic()
            _, ready_body = await get("/ready")
            assert ready_body["backend"] == "eager", ready_body

            camera_server.start()
            playing_from = time.monotonic()
            await until(stream_ended, DURATION_S + 20, "the video to play", log)
            camera_server.stop()  # before a reconnect could replay the video
            played_s = time.monotonic() - playing_from

            await until(all_crossings_stored, 10, "crossings in PostgreSQL", log)
            window = {"from": str(time.time() - 600), "interval": "1h"}
            status, counts = await get(f"/v1/cameras/{CAMERA}/counts", **window)
            assert status == 200, counts
            m = await metrics()
            status, performance = await get("/v1/performance")
            assert status == 200, performance

            proc.send_signal(signal.SIGTERM)
            await until(lambda: proc.returncode is not None, 30, "exit after SIGTERM", log)
    finally:
        camera_server.stop()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    assert proc.returncode == 0, log_tail(log)

    # PostgreSQL holds exactly the true crossings, in order, at the right stream times
    # (also after the drain: no replayed or duplicated event was written).
    rows = await support.crossings_in_db(pg_dsn)
    assert [(r["camera"], r["line"], r["class_name"], r["direction"]) for r in rows] == [
        (CAMERA, t.line, t.class_name, t.direction) for t in truth
    ]
    for row, t in zip(rows, truth, strict=True):
        assert abs(row["media_time"] - t.time) < 0.1, (row, t)

    # The counts API says the same.
    expected: dict[tuple[str, str, str], int] = {}
    for t in truth:
        key = (t.line, t.class_name, t.direction)
        expected[key] = expected.get(key, 0) + 1
    totals = counts["totals"]["crossings"]
    assert {(c["line"], c["class"], c["direction"]): c["count"] for c in totals} == expected

    # /metrics: frames went through the batcher in batches, and the camera was analysed.
    frames = m["its_frames_total"]
    batches = m["its_batch_size_count"]
    assert frames > 0.8 * scene.frame_count, m
    assert batches > 0
    assert m["its_batch_size_sum"] == frames
    assert m[f"its_ingest_frames_total{{{cam}}}"] >= frames

    # /v1/performance answers with the latency percentiles of the frames it saw.
    latency = performance["latency_ms"]
    assert performance["frames"] > 0
    assert latency["p99"] is not None
    assert latency["p99"] >= latency["p50"] > 0

    # Shown with ``pytest -s``: where the time goes, and the throughput seen.
    analysed_fps = m[f'its_ingest_fps{{{cam},stage="analysed"}}']
    decoded = m[f"its_ingest_frames_total{{{cam}}}"]
    dropped = {
        k.split('reason="')[1].rstrip('"}'): v
        for k, v in m.items()
        if k.startswith("its_ingest_frames_dropped_total{")
    }
    print(
        f"\nend-to-end: prepare {prepared - started:.1f}s, process start to ready "
        f"{ready_at - prepared:.1f}s, camera start to end of stream {played_s:.1f}s "
        f"(video {DURATION_S}s), {decoded:.0f}/{scene.frame_count} frames decoded, "
        f"dropped {dropped}, {frames:.0f} analysed at "
        f"{analysed_fps:.1f} fps, {frames / batches:.2f} frames per batch, "
        f"latency p50 {latency['p50']:.1f} ms p99 {latency['p99']:.1f} ms, "
        f"total {time.monotonic() - started:.1f}s"
    )


def first_frames(url: str, n: int) -> int:
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=5) as container:
        for i, _ in enumerate(container.decode(video=0), start=1):
            if i == n:
                return i
    return 0


def test_a_detached_camera_serves_until_stopped_through_its_pid_file(
    rtsp_available: None, tmp_path: pathlib.Path
) -> None:
    video = synth.encode_h264(synth.two_lane_scene(1.0), tmp_path / "short.ts")
    run_dir = tmp_path / "run"
    for _ in range(2):  # the second start finds its own READY line in the appended log
        url = rtsp.start_detached(video, run_dir, name="cam")
        try:
            assert first_frames(url, 5) == 5
        finally:
            assert procs.stop("cam", run_dir=run_dir)
        assert procs.pid_of(run_dir / "cam.pid") is None
        with pytest.raises(av.error.FFmpegError):
            first_frames(url, 1)
    assert (run_dir / "cam.log").read_text().count("READY ") == 2

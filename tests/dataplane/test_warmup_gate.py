"""Cameras wait for the engine: a first engine build can take minutes, and frames read
before the engine can run them would only be dropped (a camera's first vehicles lost)."""

from __future__ import annotations

import pathlib
import threading

import aiohttp
from aiohttp import web

from its_runtime import main
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.serving.app import create_app
from tests.dataplane import support


async def test_cameras_start_reading_only_after_warm_up(
    scene_video: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    config = support.runtime_config(
        [support.camera("gate", scene_video.as_uri())], journal_dir=tmp_path / "journal"
    )
    release = threading.Event()
    detector = ColourBoxDetector(support.INPUT_SHAPE)
    app = create_app(
        config,
        detector,
        warmup=lambda: release.wait(30),
        extensions=[main.data_plane_extension(env={})],
        decode_workers=1,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    port = support.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        plane = app[main.DATA_PLANE]
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/ready") as resp:
                assert resp.status == 503
            # Warm-up is still running: the camera has not even been opened.
            assert not await support.eventually(lambda: "gate" in plane.pipelines, 1.5)
            release.set()
            assert await support.eventually(lambda: "gate" in plane.pipelines, 5)
            stats = plane.pipelines["gate"].stats
            assert await support.eventually(lambda: stats.frames_analysed > 0, 20)
            async with client.get(f"http://127.0.0.1:{port}/ready") as resp:
                assert resp.status == 200
    finally:
        release.set()
        await runner.cleanup()

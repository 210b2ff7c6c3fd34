"""Fixtures of the data-plane tests: generated videos, a real RTSP server, the batcher.

Videos are generated once per session (H.264 in MPEG-TS, see
``its_runtime.kits.synth``); the detector is the hand-weighted torch network of
``its_runtime.kits.synth_detector`` behind the real ``DynamicBatcher``.
PostgreSQL and Redis come from the repository's ``services``/``pg_dsn``/``redis_url``
fixtures (tests/conftest.py).
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from its_devenv import rtsp
from its_runtime.config import BatchingConfig
from its_runtime.kits import synth
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.serving.batching import DynamicBatcher
from tests.dataplane.support import INPUT_SHAPE, RtspServer, free_port


@pytest.fixture(scope="session")
def scene() -> synth.Scene:
    return synth.two_lane_scene(12.0)


@pytest.fixture(scope="session")
def scene_video(scene: synth.Scene, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return synth.encode_h264(scene, tmp_path_factory.mktemp("video") / "scene.ts")


@pytest.fixture
async def batcher() -> AsyncIterator[DynamicBatcher]:
    b = DynamicBatcher(
        ColourBoxDetector(INPUT_SHAPE),
        BatchingConfig(max_batch_size=8, opt_batch_size=4, max_queue_delay_ms=2),
    )
    b.start()
    yield b
    await b.close()


@pytest.fixture
def rtsp_server() -> Iterator[Callable[[pathlib.Path], RtspServer]]:
    reason = rtsp.unavailable_reason()
    if reason is not None:
        pytest.fail(reason)
    servers: list[RtspServer] = []

    def start(video: pathlib.Path) -> RtspServer:
        server = RtspServer(video, free_port())
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()

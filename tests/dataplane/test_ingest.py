"""Ingestion: newest frame wins, fps cap, corrupt data skipped and counted, reconnects.

Streams are real: H.264 files encoded by the test, MJPEG over a real aiohttp HTTP
server, and RTSP from GStreamer's RTSP server in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from aiohttp import web

from its_runtime.config import CameraConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.ingest.frames import Frame
from its_runtime.dataplane.ingest.reader import CameraReader
from its_runtime.dataplane.ingest.slot import LatestSlot
from its_runtime.dataplane.ingest.stats import CameraStats
from its_runtime.kits import synth
from tests.dataplane.support import RtspServer, eventually, free_port

SIZE = (160, 96)


#: Starts processes or compiles models: outside `make check`'s fast loop.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_scene() -> synth.Scene:
    return synth.two_lane_scene(4.0, every_s=1.5)


@pytest.fixture(scope="module")
def short_video(short_scene: synth.Scene, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return synth.encode_h264(short_scene, tmp_path_factory.mktemp("short") / "short.ts")


def start_reader(
    url: str, *, lossless: bool, realtime: bool | None = None, fps: float = 30.0
) -> tuple[CameraReader, LatestSlot[Frame]]:
    slot: LatestSlot[Frame] = LatestSlot(asyncio.get_running_loop(), lossless=lossless)
    reader = CameraReader(
        CameraConfig(name="cam", url=url, fps=fps),
        slot,
        CameraStats("cam"),
        size=SIZE,
        realtime=realtime,
        open_timeout_s=5.0,
        read_timeout_s=3.0,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
    )
    reader.start()
    return reader, slot


async def drain(slot: LatestSlot[Frame]) -> list[Frame]:
    frames = []
    while (frame := await slot.get()) is not None:
        frames.append(frame)
    return frames


def looks_like(frame: Frame, scene: synth.Scene) -> float:
    """Mean absolute difference from the drawn frame at the same time (0..255)."""
    index = round(frame.media_time * scene.fps)
    drawn = scene.render(index)[::2, ::2].astype(np.float32)
    return float(np.abs(frame.image.astype(np.float32) - drawn).mean())


async def test_a_slow_consumer_gets_the_newest_frame_and_every_drop_is_counted(
    short_video: pathlib.Path,
) -> None:
    reader, slot = start_reader(short_video.as_uri(), lossless=False)  # paced like a camera
    got: list[Frame] = []
    staleness: list[float] = []
    while (frame := await slot.get()) is not None:
        staleness.append(time.monotonic() - frame.decoded_mono)
        got.append(frame)
        await asyncio.sleep(0.15)  # inference 4-5x slower than the camera
    assert reader.join(5)
    stats = reader.stats
    assert stats.frames_decoded == 120
    assert stats.dropped.get("behind", 0) > 60
    # Nothing vanished unaccounted: every decoded frame was delivered or counted.
    assert len(got) + stats.dropped["behind"] == stats.frames_decoded
    # The consumer always received a frame decoded moments ago, never a backlog (the
    # last one waited for the consumer: the file had ended).
    assert max(staleness[:-1]) < 0.1
    assert all(b.seq > a.seq for a, b in itertools.pairwise(got))


async def test_frames_above_the_camera_fps_are_dropped_as_fps_cap(
    short_video: pathlib.Path,
) -> None:
    reader, slot = start_reader(short_video.as_uri(), lossless=True, realtime=False, fps=10.0)
    frames = await drain(slot)
    assert reader.join(5)
    assert len(frames) == 40
    assert reader.stats.dropped == {"fps_cap": 80}
    gaps = np.diff([f.media_time for f in frames])
    assert np.allclose(gaps, 0.1, atol=0.005)


@pytest.fixture
def damaged_video(short_video: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    data = bytearray(short_video.read_bytes())
    # Damage ~2 KB in the middle of the second GOP (1.0-2.0 s).
    at = int(len(data) * 0.40)
    rng = random.Random(7)
    for i in range(at, at + 2000):
        data[i] = rng.randrange(256)
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    return damaged


async def test_a_corrupt_h264_segment_is_skipped_until_the_next_key_frame_and_counted(
    short_scene: synth.Scene, damaged_video: pathlib.Path
) -> None:
    reader, slot = start_reader(damaged_video.as_uri(), lossless=True, realtime=False)
    frames = await drain(slot)
    assert reader.join(5)
    stats = reader.stats
    assert stats.corrupt_segments == 1
    assert stats.corrupt_frames_skipped >= 1
    # Every frame that reached analysis is clean: as close to the drawn frame as the
    # encoder allows (frames predicted from damaged data differ by 4-6 here).
    assert max(looks_like(f, short_scene) for f in frames) < 3.5
    # Delivery resumes at a key frame (every 30 frames) and runs to the end.
    times = [f.media_time for f in frames]
    gap_end = next(b for a, b in itertools.pairwise(times) if b - a > 0.05)
    assert round(gap_end * 30) % 30 == 0
    assert round(times[-1] * 30) == 119


@pytest.fixture
async def mjpeg_server() -> AsyncIterator[Callable[[list[bytes]], Awaitable[str]]]:
    runner: web.AppRunner | None = None

    async def start(parts: list[bytes]) -> str:
        nonlocal runner

        async def stream(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(
                headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"}
            )
            await resp.prepare(request)
            for part in parts:
                head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(part)}\r\n\r\n"
                await resp.write(head.encode() + part + b"\r\n")
                await asyncio.sleep(1 / 30)
            return resp

        app = web.Application()
        app.router.add_get("/mjpeg", stream)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/mjpeg"

    yield start
    if runner is not None:
        await runner.cleanup()


async def test_a_corrupt_mjpeg_part_over_http_is_skipped_and_counted(
    short_scene: synth.Scene, mjpeg_server: Callable[[list[bytes]], Awaitable[str]]
) -> None:
    images = [short_scene.render(i) for i in range(40)]
    parts = [synth.jpeg(img) for img in images]
    parts[20] = b"\xff\xd8" + bytes(range(256)) * 8  # a JPEG start, then garbage
    url = await mjpeg_server(parts)
    reader, slot = start_reader(url, lossless=True)
    frames: list[Frame] = []
    while len(frames) < 39:
        frame = await asyncio.wait_for(slot.get(), 10)
        assert frame is not None
        frames.append(frame)
    reader.stop()
    assert reader.join(5)
    assert reader.stats.corrupt_segments == 1
    assert reader.stats.corrupt_frames_skipped == 1
    assert all(f.connection == 1 for f in frames)


async def test_an_rtsp_camera_that_disconnects_is_reconnected(
    short_video: pathlib.Path, rtsp_server: Callable[[pathlib.Path], RtspServer]
) -> None:
    server = rtsp_server(short_video)
    reader, slot = start_reader(server.url, lossless=False)
    frames: list[Frame] = []

    async def consume() -> None:
        while (frame := await slot.get()) is not None:
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    try:
        assert await eventually(lambda: len(frames) >= 15, 15)
        assert reader.stats.connected
        server.stop()  # the camera goes away mid-stream
        assert await eventually(lambda: not reader.stats.connected, 10)
        assert reader.stats.last_error is not None
        await asyncio.sleep(0.5)
        server.start()  # ... and comes back on the same address
        assert await eventually(lambda: any(f.connection >= 2 for f in frames), 20)
        assert reader.stats.reconnects >= 1
        assert reader.stats.connected
    finally:
        reader.stop()
        await consumer
        assert reader.join(10)


async def test_an_unreachable_camera_is_retried_with_growing_backoff() -> None:
    reader, slot = start_reader(f"rtsp://127.0.0.1:{free_port()}/cam", lossless=False)
    try:
        assert await eventually(lambda: reader.backoff.attempt >= 3, 10)
        assert not reader.stats.connected
        assert reader.stats.last_error is not None
        assert reader.stats.frames_decoded == 0
    finally:
        reader.stop()
        assert reader.join(10)
    assert await slot.get() is None

"""Helpers shared by the data-plane tests: config builders, servers, polling.

Kept out of conftest.py so tests import them like any module; conftest.py holds only
fixtures. The RTSP camera lives in ``its_devenv.rtsp`` (the demo uses it too) and is
re-exported here under its old name.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from its_devenv.ports import free_port as free_port
from its_devenv.rtsp import RtspServer as RtspServer
from its_runtime import main
from its_runtime.config import (
    BatchingConfig,
    CacheConfig,
    CameraConfig,
    CountingLine,
    DatabaseConfig,
    ModelConfig,
    Point,
    Region,
    RuntimeConfig,
)
from its_runtime.dataplane.analytics.analyzer import FrameAnalysis
from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.dataplane.plane import DataPlane
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.serving.app import create_app

INPUT_SHAPE = (3, 96, 160)
#: Vertical counting line through the middle, drawn bottom to top: left-to-right is "in".
MID_LINE = CountingLine(name="mid", start=Point(x=0.5, y=1.0), end=Point(x=0.5, y=0.0))
RIGHT_HALF = Region(
    name="right-half",
    polygon=[Point(x=0.5, y=0.0), Point(x=1.0, y=0.0), Point(x=1.0, y=1.0), Point(x=0.5, y=1.0)],
)
METERS_PER_PIXEL = 0.05


def camera(name: str, url: str, **kw: Any) -> CameraConfig:
    return CameraConfig(
        name=name,
        url=url,
        lines=[MID_LINE],
        regions=[RIGHT_HALF],
        meters_per_pixel=METERS_PER_PIXEL,
        **kw,
    )


def runtime_config(
    cameras: list[CameraConfig],
    *,
    journal_dir: pathlib.Path,
    database: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
) -> RuntimeConfig:
    return RuntimeConfig(
        model=ModelConfig(
            path="/models/colour-boxes.pt2",
            input_shape=list(INPUT_SHAPE),
            batching=BatchingConfig(max_batch_size=8, opt_batch_size=4, max_queue_delay_ms=2),
        ),
        cameras=cameras,
        database=DatabaseConfig(
            dsn_env="ITS_DATABASE_DSN",
            journal_dir=str(journal_dir),
            flush_interval_s=0.2,
            **(database or {}),
        ),
        cache=CacheConfig(redis_url_env="ITS_REDIS_URL", ttl_seconds=5.0, **(cache or {})),
    )


async def crossings_in_db(dsn: str) -> list[asyncpg.Record]:
    """The line crossings stored in PostgreSQL, in stream order."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT event_key, camera, line, class_name, direction, media_time "
            "FROM traffic_events WHERE kind = 'crossing' ORDER BY media_time"
        )
    finally:
        await conn.close()


async def eventually(
    predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05
) -> bool:
    """Poll ``predicate`` on the event loop until it holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return predicate()


@contextlib.asynccontextmanager
async def serving(
    config: RuntimeConfig,
    env: dict[str, str],
    *,
    options: PipelineOptions | None = None,
    listener: Callable[[FrameAnalysis], None] | None = None,
) -> AsyncIterator[tuple[str, DataPlane, aiohttp.ClientSession]]:
    """The real runtime application with the data plane mounted, on a real port."""
    app = create_app(
        config,
        ColourBoxDetector(INPUT_SHAPE),
        extensions=[main.data_plane_extension(options=options, env=env, listener=listener)],
        decode_workers=1,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        plane = app[main.DATA_PLANE]
        # Cameras start once the engine is warm (the batcher's warm-up, in the background).
        names = {c.name for c in config.cameras}
        assert await eventually(lambda: set(plane.pipelines) == names, 30), "cameras did not start"
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
            yield f"http://127.0.0.1:{port}", plane, client
    finally:
        await runner.cleanup()

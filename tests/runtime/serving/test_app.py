"""The application factory's contract with other layers: extensions, readiness checks."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from its_runtime import health
from its_runtime.config import RuntimeConfig
from its_runtime.serving import app as app_mod
from its_runtime.serving.api.services import Services

from .tinymodel import ModuleExecutor, TinyDetector


class CameraLayer:
    """What a data-plane extension does: a route, a background task, a health check."""

    def __init__(self) -> None:
        self.redis_up = True
        self.ticks = 0
        self.stopped = False

    def __call__(self, app: web.Application, services: Services) -> None:
        async def cameras(_: web.Request) -> web.Response:
            return web.json_response({"cameras": [], "queue_depth": services.batcher.queue_depth})

        async def background(_: web.Application) -> AsyncIterator[None]:
            async def tick() -> None:
                while True:
                    self.ticks += 1
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(tick())
            yield
            task.cancel()
            self.stopped = True

        app.router.add_get("/v1/cameras", cameras)
        app.cleanup_ctx.append(background)
        services.readiness.register("redis", lambda: health.DependencyHealth(self.redis_up, "PING"))
        services.readiness.register("postgres", self._postgres, required=False)

    async def _postgres(self) -> bool:
        raise ConnectionRefusedError("connection refused")


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], CameraLayer]]:
    config = RuntimeConfig.model_validate(
        {"model": {"path": "unused.pt2", "inputShape": [3, 64, 64]}}
    )
    layer = CameraLayer()
    application = app_mod.create_app(
        config, ModuleExecutor(TinyDetector(), (3, 64, 64)), extensions=[layer]
    )
    async with TestClient(TestServer(application)) as c:
        for _ in range(200):
            if (await c.get("/ready")).status == 200 or not layer.redis_up:
                break
            await asyncio.sleep(0.02)
        yield c, layer
    assert layer.stopped


async def test_an_extension_mounts_routes_tasks_and_health_checks(
    client: tuple[TestClient[web.Request, web.Application], CameraLayer],
) -> None:
    c, layer = client
    r = await c.get("/v1/cameras")
    assert r.status == 200
    assert await r.json() == {"cameras": [], "queue_depth": 0}
    assert layer.ticks > 0
    r = await c.get("/ready")
    body = await r.json()
    assert r.status == 200, body
    # An optional dependency that is down shows, but does not make the pod unready.
    assert body["dependencies"]["postgres"]["healthy"] is False
    assert "connection refused" in body["dependencies"]["postgres"]["detail"]
    layer.redis_up = False
    r = await c.get("/ready")
    body = await r.json()
    assert r.status == 503
    assert body["reasons"] == ["dependency redis unhealthy: PING"]
    layer.redis_up = True
    assert (await c.get("/ready")).status == 200


async def test_start_up_objects_are_frozen_out_of_full_collections_before_ready() -> None:
    """A full collection walks every tracked object: with torch loaded, a pause of
    hundreds of milliseconds that lands on whatever is in flight. The app takes it once
    before it turns ready and freezes the survivors, so later ones walk only new objects."""
    gc.unfreeze()
    tracked_at_start = len(gc.get_objects())
    config = RuntimeConfig.model_validate(
        {"model": {"path": "unused.pt2", "inputShape": [3, 64, 64]}}
    )
    application = app_mod.create_app(config, ModuleExecutor(TinyDetector(), (3, 64, 64)))
    try:
        async with TestClient(TestServer(application)) as c:
            for _ in range(500):
                if (await c.get("/ready")).status == 200:
                    break
                await asyncio.sleep(0.01)
            assert (await c.get("/ready")).status == 200
            # the survivors of start-up (the collection first frees its garbage)
            assert gc.get_freeze_count() >= tracked_at_start // 2
            # what a full collection walks now: only what was made since ready
            assert len(gc.get_objects()) < tracked_at_start // 10
    finally:
        gc.unfreeze()

"""Probes, metrics and the performance report: the endpoints that watch the runtime.

``/live`` fails only when the process can no longer serve (the batcher's scheduling
task died), which a restart fixes. ``/ready`` is false while warming up, while draining,
and while a required dependency is unhealthy; its JSON says why, and also which backend
runs and which fallbacks were taken, so ``kubectl exec ... curl /ready`` answers "why
is this pod not serving" and "is it on TensorRT" in one place.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from its_runtime.observability import metrics
from its_runtime.serving import frames
from its_runtime.serving.api.services import SERVICES


async def live(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not services.batcher.running and not services.readiness.draining:
        return web.json_response(
            {"live": False, "reason": "the batcher's scheduling task has stopped"}, status=503
        )
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    ok, details = await services.readiness.evaluate()
    if ok and not services.batcher.running:
        ok = False
        details["reasons"].append("the batcher is not running")
    metrics.READY.set(1.0 if ok else 0.0)
    engine = services.engine.stats()
    body = {
        "ready": ok,
        **details,
        "backend": engine.backend,
        "fallbacks": [{"backend": b, "cause": c} for b, c in engine.fallbacks],
        "engine_cache": dict(engine.cache),
        "queue_depth": services.batcher.queue_depth,
        "gpu_telemetry": services.telemetry.available,
        "jpeg_decode": (
            frames.jpeg_decode_status(request.app) if frames.DECODER in request.app else None
        ),
    }
    return web.json_response(body, status=200 if ok else 503)


async def prometheus(request: web.Request) -> web.Response:
    # Refresh the window-derived gauges (fps, SLA compliance, alerts) at scrape time.
    request.app[SERVICES].performance.report()
    return web.Response(
        body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def performance(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICES].performance.report())

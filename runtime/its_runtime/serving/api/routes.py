"""The runtime's own routes, in one table (extensions add theirs in ``its_runtime.serving.app``)."""

from __future__ import annotations

from aiohttp import web

from its_runtime.serving.api import inference, probes


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/detect", inference.detect)
    app.router.add_post("/v1/detect/batch", inference.detect_batch)
    app.router.add_get("/v1/performance", probes.performance)
    app.router.add_get("/live", probes.live)
    app.router.add_get("/ready", probes.ready)
    app.router.add_get("/metrics", probes.prometheus)

"""Request accounting and error rendering, wrapped around every handler.

Every response, success or failure, passes through :func:`observe`: it times the
request (``its_request_latency_seconds`` by route, not by raw path, so a scan of random
URLs cannot explode the label set), counts it by status, tracks requests in flight so a
drain can wait for their answers, and turns every exception into the one JSON error
shape. An unexpected exception is logged with its traceback and answered 500; the
process and the batcher carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from its_runtime import problems
from its_runtime.observability import metrics
from its_runtime.serving.api.services import SERVICES

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


def _http_error(exc: web.HTTPException) -> problems.ApiError:
    if exc.status == 413:
        return problems.too_large(exc.text or "request body is too large")
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
    return problems.ApiError(exc.status, reason, exc.reason)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    services = request.app[SERVICES]
    start = time.monotonic()
    services.in_flight += 1
    services.idle.clear()
    metrics.REQUESTS_IN_FLIGHT.inc()
    try:
        try:
            response = await handler(request)
        except problems.ApiError as exc:
            if not exc.counted:
                metrics.ERRORS.labels(exc.reason).inc()
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            api_error = _http_error(exc)
            if api_error.status == 413:
                metrics.ERRORS.labels(api_error.reason).inc()
            response = api_error.response()
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            metrics.ERRORS.labels("internal").inc()
            internal = problems.ApiError(500, "internal", "internal error; see the server log")
            response = internal.response()
    finally:
        services.in_flight -= 1
        if services.in_flight == 0:
            services.idle.set()
        metrics.REQUESTS_IN_FLIGHT.dec()
    endpoint = _endpoint(request)
    metrics.REQUEST_LATENCY.labels(endpoint).observe(time.monotonic() - start)
    metrics.REQUESTS.labels(endpoint, str(response.status)).inc()
    return response

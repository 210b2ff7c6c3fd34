"""One error shape for every failed request: status, machine reason, human message.

It sits on the runtime's shared floor because both HTTP surfaces raise it: serving's
inference routes and the data plane's query routes (neither imports the other).

Clients and dashboards key on ``reason`` (the same word as the ``its_errors_total``
label); people read ``message``, which names the field or limit at fault. Handlers raise
:class:`ApiError`; the middleware renders it, so no handler builds error JSON by hand.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """A request that cannot be served, with the HTTP status and the reason to report."""

    def __init__(self, status: int, reason: str, message: str, *, counted: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        #: True when ``its_errors_total`` already counted it (the batcher counts its own).
        self.counted = counted

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "reason": self.reason, "message": self.message}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def bad_image(message: str) -> ApiError:
    return ApiError(400, "bad_image", message)


def bad_shape(message: str) -> ApiError:
    return ApiError(422, "bad_shape", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def unsupported_media(message: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", message)


def draining() -> ApiError:
    return ApiError(503, "draining", "the runtime is shutting down and takes no new frames")

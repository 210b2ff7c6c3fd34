"""The typed bundle that handlers (and extensions mounted by other layers) work with.

It is stored once on the aiohttp application under :data:`SERVICES`; handlers read
``request.app[SERVICES]`` and get every collaborator with its real type, instead of
string keys and casts scattered over the handlers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from aiohttp import web

from its_runtime.config import RuntimeConfig
from its_runtime.observability import collectors, telemetry
from its_runtime.serving import batching, performance
from its_runtime.serving.api import readiness


class Preprocessor(Protocol):
    """Turns request payloads into model input; ``its_runtime.serving.preprocess`` is one.

    ``decode_image`` raises ``ValueError`` for bytes that are not a decodable image
    (HTTP 400); ``array_to_input`` raises ``ValueError`` for an array of the wrong shape
    or type (HTTP 422).
    """

    def decode_image(self, data: bytes, input_shape: tuple[int, int, int]) -> torch.Tensor: ...

    def array_to_input(
        self, arr: npt.NDArray[np.generic], input_shape: tuple[int, int, int]
    ) -> torch.Tensor: ...


@dataclasses.dataclass
class Services:
    config: RuntimeConfig
    batcher: batching.DynamicBatcher
    readiness: readiness.Readiness
    performance: performance.PerformanceTracker
    preprocessor: Preprocessor
    decode_pool: concurrent.futures.ThreadPoolExecutor
    engine: collectors.EngineStatsSource
    telemetry: telemetry.GpuTelemetry
    #: Count of HTTP requests being handled, so a drain can wait for their responses.
    in_flight: int = 0
    #: Set while no HTTP request is being handled.
    idle: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: Requests past the draining check whose frames are not yet in the batcher (body
    #: read, decode): a drain waits for them before it closes the batcher, so a request
    #: accepted before SIGTERM is answered, not refused with 503 half-way.
    admitting: int = 0
    #: Set while ``admitting`` is 0.
    admitted: asyncio.Event = dataclasses.field(default_factory=lambda: _set(asyncio.Event()))
    #: Awaited (in order) when draining starts, before the batcher drains: extensions
    #: stop their own intake here (e.g. camera readers stop submitting frames).
    drain_hooks: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    #: Set once warm-up has finished: the engine can take frames.
    warm: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: Set when the process cannot serve at all (warm-up failed); the server then exits.
    fatal: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    fatal_reason: str | None = None

    def admission(self) -> Admission:
        """Count a request as admitted until its frames are queued (``release``)."""
        return Admission(self)

    def set_fatal(self, reason: str) -> None:
        if self.fatal_reason is None:
            self.fatal_reason = reason
        self.fatal.set()


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


class Admission:
    """One request between the draining check and the batcher; ``release`` right
    before the frames are submitted (the submit queues them before it first yields),
    or on leaving the ``with`` block, whichever comes first."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._open = True
        services.admitting += 1
        services.admitted.clear()

    def release(self) -> None:
        if self._open:
            self._open = False
            self._services.admitting -= 1
            if self._services.admitting == 0:
                self._services.admitted.set()

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


SERVICES = web.AppKey("its_services", Services)

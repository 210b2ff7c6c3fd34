"""A one-item hand-over from a decode thread to the event loop, where the newest wins.

Why not an ``asyncio.Queue``: a bounded queue of live frames holds stale frames (lag
grows to the queue length) and an unbounded one grows without limit while inference
falls behind. A single slot that the producer overwrites keeps the consumer on the
newest frame and makes every skipped frame an explicit, counted drop.

``lossless`` turns the slot into a blocking hand-over (the producer waits for the
consumer): for offline files analysed as fast as possible, where every frame counts
and pacing comes from the consumer, not from a live source.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; ``put`` from any thread, ``get`` on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, lossless: bool = False) -> None:
        self._loop = loop
        self._lossless = lossless
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._item: T | None = None
        self._full = False
        self._closed = False
        self._ready = asyncio.Event()

    @property
    def lossless(self) -> bool:
        return self._lossless

    def _wake(self) -> None:
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, item: T) -> bool:
        """Offer an item; returns True when it replaced one the consumer never took.

        In lossless mode it instead blocks until the previous item was taken (or the
        slot closed) and never replaces anything.
        """
        with self._lock:
            if self._closed:
                return False
            if self._lossless:
                while self._full and not self._closed:
                    self._taken.wait(0.5)
                if self._closed:
                    return False
            dropped = self._full
            self._item = item
            self._full = True
        self._wake()
        return dropped

    def close(self) -> None:
        """No more items: ``get`` returns None once the last one was taken."""
        with self._lock:
            self._closed = True
            self._taken.notify_all()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> T | None:
        """The newest item, waiting for one; None once closed and empty."""
        while True:
            with self._lock:
                if self._full:
                    item = self._item
                    self._item = None
                    self._full = False
                    self._taken.notify_all()
                    return item
                if self._closed:
                    return None
                self._ready.clear()
            await self._ready.wait()

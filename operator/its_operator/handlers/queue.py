"""A work queue of pipeline keys: deduplicated, delayed, one worker per key at a time.

The shape of controller-runtime's queue, because kopf's per-event handlers are not
enough for a level-based controller: events for a pipeline arrive from the CR and
from eight kinds of children, often in bursts (a rollout updates the Deployment's
status several times a second). Here a key waits in the queue once however many
times it is added; a short coalescing delay folds a burst into one reconcile; a key
is never reconciled by two workers at once (an add during a reconcile re-queues it
after); failures back off exponentially per key; and a reconcile can ask to be
called again later (e.g. to notice a Secret that appears).

Nothing is dispatched while the gate is closed (another operator replica acts).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from its_operator.handlers import metrics

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger(__name__)


class Gate(Protocol):
    async def wait_open(self) -> None: ...


class _AlwaysOpen:
    async def wait_open(self) -> None:
        return None


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[float | None]],
        *,
        workers: int = 8,
        gate: Gate | None = None,
        max_backoff: float = 60.0,
    ) -> None:
        self._process = process
        self._workers = workers
        self._gate: Gate = gate or _AlwaysOpen()
        self._max_backoff = max_backoff
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._active: set[K] = set()
        self._again: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, key: K, delay: float = 0.0) -> None:
        """Schedule ``key`` in ``delay`` seconds, unless it is already due sooner."""
        due = asyncio.get_running_loop().time() + max(0.0, delay)
        if key in self._active:
            self._again[key] = min(due, self._again.get(key, due))
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._idle.clear()
        metrics.QUEUE_DEPTH.set(len(self._due))
        self._wakeup.set()

    def clear(self) -> None:
        """Drop everything waiting (e.g. when peering pauses this replica)."""
        self._due.clear()
        self._heap.clear()
        self._again.clear()
        metrics.QUEUE_DEPTH.set(0)

    async def join(self) -> None:
        """Wait until nothing is queued or running (tests and benchmarks)."""
        while self._due or self._active:
            self._idle.clear()
            await self._idle.wait()

    def _pop_due(self, now: float) -> tuple[K | None, float | None]:
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # superseded by a sooner add, or cleared
                continue
            if due > now:
                return None, due - now
            heapq.heappop(self._heap)
            del self._due[key]
            metrics.QUEUE_DEPTH.set(len(self._due))
            if key in self._active:  # never two at once: run it again after this one
                self._again[key] = min(due, self._again.get(key, due))
                continue
            return key, None
        return None, None

    async def run(self) -> None:
        """Dispatch until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._gate.wait_open()
                # A worker slot first, then the key: a key popped while waiting for a
                # slot would be neither queued nor active, so an add() in that gap
                # would queue it a second time and the two would run side by side.
                await self._slots.acquire()
                key, wait = self._pop_due(loop.time())
                if key is None:
                    self._slots.release()
                    if not self._active and not self._due:
                        self._idle.set()
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wakeup.wait()
                    continue
                self._active.add(key)
                task = asyncio.create_task(self._work(key), name=f"reconcile {key}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self, key: K) -> None:
        requeue: float | None = None
        try:
            requeue = await self._process(key)
            self._failures.pop(key, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
            requeue = min(self._max_backoff, 0.5 * 2 ** (n - 1))
            logger.warning("reconcile of %s failed (%s); retry in %.1fs", key, exc, requeue)
        finally:
            self._active.discard(key)
            self._slots.release()
            again = self._again.pop(key, None)
            loop = asyncio.get_running_loop()
            if again is not None:
                self.add(key, again - loop.time())
            if requeue is not None:
                self.add(key, requeue)
            if not self._active and not self._due:
                self._idle.set()
            self._wakeup.set()

"""The dynamic batcher: Triton's batching semantics, apart from the executor that owns
the device.

Why it is shaped so:

* The batcher is a CPU-only scheduler. It runs on the asyncio loop, forms batches by
  :mod:`.policy` and hands each to :mod:`.dispatch`, which drives the executor through
  the :mod:`.executor` Protocol (``stage`` then ``run_batch``) on ONE compute thread,
  plus one staging thread when the executor's ``pipeline_depth`` is 2. It allocates no
  batch memory, pinned buffers or streams (the engine owns those), so it runs and is
  tested on CPU.
* Batch sizes come from the one :class:`~its_runtime.engine.plan.BatchPlan` shared with
  the engine (capped to the executor's ``max_batch_size``), so the batcher knows the
  engine's buckets: decisions and compute-time predictions are per bucket.
* A batch is formed only when a pipeline slot is free, so requests that arrive while a
  batch computes join the next one: under load batches grow by themselves and the
  queue delay only matters when the server is nearly idle.
* Backpressure is explicit: a full queue rejects at once (:class:`QueueFullError`,
  HTTP 429); a request that cannot meet its deadline fails with
  :class:`DeadlineExceededError` (HTTP 503) when the deadline passes, when its
  predicted finish (:mod:`.predictor`) is past it at dispatch, or when its result comes
  back late. It never gets a late answer.
* Numbers go out as typed stats to an observer (``observability.serving_stats``); the
  serving app wires the Prometheus one. The scheduler never touches metrics itself.
* A failing batch fails only its own requests; the worker survives bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from its_runtime import config
from its_runtime.detections import Detections
from its_runtime.engine import plan as plan_mod
from its_runtime.observability import serving_stats as stats
from its_runtime.serving.batching import dispatch, errors, policy, predictor
from its_runtime.serving.batching import executor as executor_mod
from its_runtime.serving.batching import queue as queue_mod

log = logging.getLogger(__name__)

T = TypeVar("T")
State = queue_mod.State


class DynamicBatcher:
    """Triton-like dynamic batcher in front of a :class:`~.executor.BatchExecutor`."""

    def __init__(
        self,
        executor: executor_mod.BatchExecutor,
        batching: config.BatchingConfig,
        *,
        plan: plan_mod.BatchPlan | None = None,
        observer: stats.SchedulerObserver | None = None,
        listener: executor_mod.FrameListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``plan`` is the batch plan shared with the engine (derived from ``batching``
        when not given); ``batching`` also gives the queue size, delay and deadline."""
        self._config = batching
        self._clock = clock
        self._observer: stats.SchedulerObserver = observer or stats.NullObserver()
        self._outcomes = dispatch.Outcomes(self._observer, listener, clock)
        whole = plan if plan is not None else plan_mod.from_config(batching)
        self.plan = whole.capped(executor.max_batch_size)
        self.max_batch_size = self.plan.max_batch_size
        self.preferred_sizes = list(self.plan.preferred_sizes)
        self._policy = policy.DispatchPolicy(self.plan, batching.max_queue_delay_ms / 1000.0)
        self._predictor = predictor.LatencyPredictor(self.plan)
        self._runner = dispatch.BatchRunner(executor, self._outcomes, self._predictor, clock)
        self._default_deadline = (
            batching.default_deadline_ms / 1000.0 if batching.default_deadline_ms else None
        )
        c, h, w = executor.input_shape
        self.input_shape: tuple[int, int, int] = (c, h, w)
        self._queue = queue_mod.EntryQueue()
        self._arrival = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        #: The scheduling task is parked waiting for an arrival (see :meth:`_arrived`).
        self._parked = False
        self._arrival_pending = False

    # -- public API -------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queue.size

    @property
    def free_slots(self) -> int:
        return max(0, self._config.max_queue_size - self._queue.size)

    @property
    def running(self) -> bool:
        """True while the scheduling task is alive (``/live`` reads this)."""
        return self._task is not None and not self._task.done()

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        """Start the scheduling task on the running loop (call once)."""
        if self._task is not None:
            raise RuntimeError("batcher already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="its-batcher")

    async def submit(
        self,
        item: torch.Tensor,
        *,
        deadline: float | None = None,
        priority: int = 0,
        started: float | None = None,
    ) -> Detections:
        """Queue one frame (C, H, W) and wait for its detections.

        ``deadline`` and ``started`` are ``time.monotonic()`` seconds; ``started`` is when
        the frame's processing began (before decode) and defaults to now. Raises
        :class:`QueueFullError`, :class:`DeadlineExceededError`, :class:`BatcherClosedError`,
        :class:`BatchExecutionError`, or ``ValueError`` for a wrong shape or dtype.
        """
        if tuple(item.shape) != self.input_shape or item.dtype != torch.float32:
            raise ValueError(
                f"frame must be float32 of shape {list(self.input_shape)}, "
                f"got {item.dtype} {list(item.shape)}"
            )
        now = self._clock()
        started = now if started is None else started
        if deadline is None and self._default_deadline is not None:
            deadline = started + self._default_deadline
        if self._closing:
            self._outcomes.refused(errors.BatcherClosedError.reason, started, now)
            raise errors.BatcherClosedError("the runtime is draining and takes no new frames")
        if self._task is None or self._task.done():
            raise errors.BatcherClosedError("the batcher is not running")
        if deadline is not None and deadline <= now:
            self._outcomes.refused(errors.DeadlineExceededError.reason, started, now)
            raise errors.DeadlineExceededError("deadline passed before the frame was queued")
        if self._queue.size >= self._config.max_queue_size:
            self._outcomes.refused(errors.QueueFullError.reason, started, now)
            raise errors.QueueFullError(
                f"queue is full ({self._config.max_queue_size} frames waiting); retry later"
            )
        future: asyncio.Future[Detections] = asyncio.get_running_loop().create_future()
        entry = queue_mod.Entry(item, future, now, started, deadline, priority)
        self._queue.push(entry)
        self._depth_changed()
        if not self._arrival_pending:
            self._arrival_pending = True
            asyncio.get_running_loop().call_soon(self._arrived)
        try:
            if deadline is None:
                return await future
            return await asyncio.wait_for(future, max(0.0, deadline - self._clock()))
        except TimeoutError:
            self._forget(entry)
            self._outcomes.refused(errors.DeadlineExceededError.reason, started, self._clock())
            raise errors.DeadlineExceededError(
                "deadline passed before the frame was answered"
            ) from None
        except asyncio.CancelledError:
            self._forget(entry)
            raise

    async def call_in_worker(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the compute thread, between batches (e.g. the engine's warm-up)."""
        return await self._runner.call_in_worker(fn)

    async def drain(self, grace_s: float | None = None) -> bool:
        """Take no new frames, finish every queued one, then stop. True if all finished."""
        self._closing = True
        self._arrival.set()
        finished = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                finished = False
                log.warning(
                    "drain timed out after %ss; failing %d queued frames", grace_s, self._queue.size
                )
        await self.close()
        return finished

    async def close(self) -> None:
        """Stop now: queued frames fail with :class:`BatcherClosedError`; the running batch
        finishes."""
        self._closing = True
        for entry in self._queue.drain_all():
            entry.state = State.GONE
            if not entry.future.done():
                entry.future.set_exception(errors.BatcherClosedError("the runtime stopped"))
        self._depth_changed()
        self._arrival.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._runner.shutdown()

    # -- scheduling ---------------------------------------------------------------------

    def _launch(self, entries: list[queue_mod.Entry]) -> None:
        task = asyncio.get_running_loop().create_task(self._runner.run(entries))
        self._inflight.add(task)
        task.add_done_callback(self._batch_done)

    def _arrived(self) -> None:
        """Frames were queued this round (after all its submits: a gather of 8 is one batch).
        Nothing staged or computing and the scheduler parked: send now, as the policy
        would (no batching tax), sparing the scheduler's wake-up; else wake it."""
        self._arrival_pending = False
        if self._queue.size and self._parked and not self._inflight and not self._closing:
            decision = self._policy.decide(self._queue.size, 0.0, False, idle=True)
            entries = self._shed(self._queue.pop(decision.take), self._clock())
            self._depth_changed()
            if entries:
                self._launch(entries)
        if self._queue.size:
            self._arrival.set()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        # The executor may be idle now: frames waiting for company go at once.
        self._arrival.set()

    def _depth_changed(self) -> None:
        self._observer.record(stats.QueueDepth(self._queue.size))

    def _forget(self, entry: queue_mod.Entry) -> None:
        if self._queue.forget(entry):
            self._depth_changed()

    def _predict(self, n: int) -> float | None:  # compute-time estimate (.predictor)
        return self._predictor.predict(n)

    def _shed(self, entries: list[queue_mod.Entry], now: float) -> list[queue_mod.Entry]:
        return self._outcomes.shed_hopeless(entries, now, self._predict(len(entries)))

    async def _run(self) -> None:
        try:
            while True:
                while len(self._inflight) >= self._runner.depth:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                entries = await self._next_batch()
                if not entries:
                    if self._closing and self._queue.size == 0:
                        break
                    continue
                self._launch(entries)
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        except Exception:
            log.exception("batcher scheduling loop crashed")
            raise

    async def _next_batch(self) -> list[queue_mod.Entry]:
        """Wait until a batch should go (:mod:`.policy`) and take it off the queue."""
        while True:
            now = self._clock()
            for entry in self._queue.expire(now):
                self._outcomes.fail(
                    entry, errors.DeadlineExceededError("deadline passed while queued")
                )
            n = self._queue.size
            self._depth_changed()
            if n == 0 and self._closing:
                return []
            if len(self._inflight) >= self._runner.depth:
                # Slots full (frames sent by _arrived): wait for _batch_done's wake-up.
                self._arrival.clear()
                await self._wait_arrival(None)
                continue
            oldest = self._queue.oldest_enqueued()
            waited = now - oldest if oldest is not None else 0.0
            decision = self._policy.decide(n, waited, self._closing, idle=not self._inflight)
            if decision.take == 0:
                self._arrival.clear()
                await self._wait_arrival(decision.wait_s)
                continue
            entries = self._queue.pop(decision.take)
            self._depth_changed()
            return self._shed(entries, now)

    async def _wait_arrival(self, wait_s: float | None) -> None:
        self._parked = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrival.wait(), wait_s)
        finally:
            self._parked = False

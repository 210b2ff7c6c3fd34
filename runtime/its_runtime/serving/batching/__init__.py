"""Dynamic batching with Triton's semantics, apart from the executor that owns the device.

Why it is shaped so:

* The batcher is a scheduler. It runs on the asyncio loop, forms batches and hands each
  one to ONE worker thread that calls :meth:`BatchExecutor.run_batch`; it knows nothing
  about models or devices beyond that Protocol, so it runs and is tested on CPU.
* A batch is formed only when the worker is free (on CPU), so requests that arrive while
  a batch computes join the next one: under load batches grow by themselves and the
  queue delay only matters when the server is nearly idle.
* Triton's rules: batches are capped at the largest preferred size (``maxBatchSize``
  when none is set); a capped batch goes at once; else the largest preferred size that
  can be formed goes at once; else the batch waits for more requests only while no
  queued request has waited ``maxQueueDelayMs``, then goes as it is.
  Higher ``priority`` is served first, FIFO within a priority.
* Backpressure is explicit: a full queue rejects at once (:class:`QueueFullError`,
  HTTP 429); a request that cannot meet its deadline fails with
  :class:`DeadlineExceededError` (HTTP 503) when the deadline passes, when its predicted
  finish is past it at dispatch, or when its result comes back late. It never gets a
  late answer.
* Batch buffers are allocated once and reused. For an executor on CUDA that sets
  ``accepts_device_batches``, the host buffers are pinned and the next batch is staged
  (collate + host-to-device copy on a side stream) in a second thread while the current
  batch computes; the compute stream waits on the copy's event. Other executors get
  CPU batches and move them to their device themselves.
* A failing batch fails only its own requests; the worker survives bad input.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch

from its_runtime import submission
from its_runtime.config import BatchingConfig
from its_runtime.detections import Detections
from its_runtime.observability import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchExecutor(Protocol):
    """Runs one batch synchronously; called from a single worker thread only."""

    @property
    def max_batch_size(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        """``batch`` is (B, C, H, W) float32; returns one :class:`Detections` per frame."""
        ...


class FrameListener(Protocol):
    """Told about every frame's outcome (the performance report is one)."""

    def record(self, latency_s: float, ok: bool) -> None: ...


class BatcherError(submission.SubmitError):
    """Base of the batcher's errors; ``reason`` is the metric label and API reason."""

    reason = "batcher"


class QueueFullError(BatcherError):
    reason = "queue_full"


class DeadlineExceededError(BatcherError):
    reason = "deadline_exceeded"


class BatcherClosedError(BatcherError):
    reason = "draining"


class BatchExecutionError(BatcherError):
    reason = "execution"


class _State(enum.Enum):
    QUEUED = 1
    RUNNING = 2
    GONE = 3  # cancelled or timed out while queued


@dataclasses.dataclass(eq=False)
class _Entry:
    item: torch.Tensor
    future: asyncio.Future[Detections]
    enqueued: float
    started: float
    deadline: float | None
    priority: int
    state: _State = _State.QUEUED


@dataclasses.dataclass
class _Staged:
    batch: torch.Tensor
    ready: Any  # torch.cuda.Event recorded after the host-to-device copy


class _Queue:
    """Per-priority FIFO deques; cancelled entries are skipped lazily."""

    def __init__(self) -> None:
        self._levels: dict[int, collections.deque[_Entry]] = {}
        self.size = 0

    def push(self, entry: _Entry) -> None:
        self._levels.setdefault(entry.priority, collections.deque()).append(entry)
        self.size += 1

    def _heads(self) -> list[tuple[int, collections.deque[_Entry]]]:
        out = []
        for prio in sorted(self._levels, reverse=True):
            dq = self._levels[prio]
            while dq and dq[0].state is not _State.QUEUED:
                dq.popleft()
            if dq:
                out.append((prio, dq))
            else:
                del self._levels[prio]
        return out

    def oldest_enqueued(self) -> float | None:
        heads = self._heads()
        return min(dq[0].enqueued for _, dq in heads) if heads else None

    def pop(self, n: int) -> list[_Entry]:
        taken: list[_Entry] = []
        for _, dq in self._heads():
            while dq and len(taken) < n:
                entry = dq.popleft()
                if entry.state is _State.QUEUED:
                    taken.append(entry)
            if len(taken) == n:
                break
        self.size -= len(taken)
        return taken

    def expire(self, now: float) -> list[_Entry]:
        """Remove and return queued entries whose deadline has passed."""
        expired: list[_Entry] = []
        for prio in list(self._levels):
            dq = self._levels[prio]
            if any(e.deadline is not None and e.deadline <= now for e in dq):
                keep: collections.deque[_Entry] = collections.deque()
                for e in dq:
                    if e.state is _State.QUEUED and e.deadline is not None and e.deadline <= now:
                        expired.append(e)
                    else:
                        keep.append(e)
                self._levels[prio] = keep
        self.size -= len(expired)
        return expired

    def drain_all(self) -> list[_Entry]:
        rest = [e for dq in self._levels.values() for e in dq if e.state is _State.QUEUED]
        self._levels.clear()
        self.size = 0
        return rest


class DynamicBatcher:
    """Triton-like dynamic batcher in front of a :class:`BatchExecutor`."""

    def __init__(
        self,
        executor: BatchExecutor,
        batching: BatchingConfig,
        *,
        listener: FrameListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executor = executor
        self._config = batching
        self._listener = listener
        self._clock = clock
        self.max_batch_size = min(batching.max_batch_size, executor.max_batch_size)
        self.preferred_sizes = sorted(
            {s for s in batching.preferred_batch_sizes if s <= self.max_batch_size}
        )
        self._send_at = self.preferred_sizes[-1] if self.preferred_sizes else self.max_batch_size
        self._delay = batching.max_queue_delay_ms / 1000.0
        self._default_deadline = (
            batching.default_deadline_ms / 1000.0 if batching.default_deadline_ms else None
        )
        c, h, w = executor.input_shape
        self.input_shape: tuple[int, int, int] = (c, h, w)
        self._queue = _Queue()
        self._arrival = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._estimate: dict[int, float] = {}  # batch size -> EWMA compute seconds
        self._cuda: bool | None = None  # decided at the first batch (the engine may load late)
        self._device: torch.device | None = None
        self._slots = [1, 0]
        self._compute_pool = concurrent.futures.ThreadPoolExecutor(1, "its-batch-compute")
        self._stage_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._host: list[torch.Tensor] = []
        self._dev: list[torch.Tensor] = []
        self._copy_stream: Any = None

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
            self._fail_count(BatcherClosedError.reason, started, now)
            raise BatcherClosedError("the runtime is draining and takes no new frames")
        if self._task is None or self._task.done():
            raise BatcherClosedError("the batcher is not running")
        if deadline is not None and deadline <= now:
            self._fail_count(DeadlineExceededError.reason, started, now)
            raise DeadlineExceededError("deadline passed before the frame was queued")
        if self._queue.size >= self._config.max_queue_size:
            self._fail_count(QueueFullError.reason, started, now)
            raise QueueFullError(
                f"queue is full ({self._config.max_queue_size} frames waiting); retry later"
            )
        future: asyncio.Future[Detections] = asyncio.get_running_loop().create_future()
        entry = _Entry(item, future, now, started, deadline, priority)
        self._queue.push(entry)
        metrics.QUEUE_DEPTH.set(self._queue.size)
        self._arrival.set()
        try:
            if deadline is None:
                return await future
            return await asyncio.wait_for(future, max(0.0, deadline - self._clock()))
        except TimeoutError:
            self._forget(entry)
            self._fail_count(DeadlineExceededError.reason, started, self._clock())
            raise DeadlineExceededError("deadline passed before the frame was answered") from None
        except asyncio.CancelledError:
            self._forget(entry)
            raise

    async def call_in_worker(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the compute thread, between batches (e.g. the engine's warm-up)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._compute_pool, fn)

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
            entry.state = _State.GONE
            if not entry.future.done():
                entry.future.set_exception(BatcherClosedError("the runtime stopped"))
        metrics.QUEUE_DEPTH.set(0)
        self._arrival.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._compute_pool.shutdown(wait=False)
        if self._stage_pool is not None:
            self._stage_pool.shutdown(wait=False)

    # -- scheduling ---------------------------------------------------------------------

    def _forget(self, entry: _Entry) -> None:
        if entry.state is _State.QUEUED:
            entry.state = _State.GONE
            self._queue.size -= 1
            metrics.QUEUE_DEPTH.set(self._queue.size)

    def _fail_count(self, reason: str, started: float, now: float) -> None:
        metrics.ERRORS.labels(reason).inc()
        if self._listener is not None:
            self._listener.record(now - started, False)

    def _fail(self, entry: _Entry, error: BatcherError) -> None:
        entry.state = _State.GONE
        if not entry.future.done():
            entry.future.set_exception(error)
            self._fail_count(error.reason, entry.started, self._clock())

    def _pipeline_depth(self) -> int:
        """Batches in flight at once: 2 when staging on CUDA (copy the next while one
        computes), else 1. Staging is for executors that set ``accepts_device_batches``
        and a CUDA ``device``; others get CPU batches and move them themselves."""
        if self._cuda is None:
            device = getattr(self._executor, "device", None)
            if not isinstance(device, torch.device):
                return 1  # not known yet (the engine may still be loading)
            wants = bool(getattr(self._executor, "accepts_device_batches", False))
            self._cuda = device.type == "cuda" and wants
            if self._cuda:
                self._device = device
                self._stage_pool = concurrent.futures.ThreadPoolExecutor(1, "its-batch-stage")
        return 2 if self._cuda else 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while len(self._inflight) >= self._pipeline_depth():
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                entries = await self._next_batch()
                if not entries:
                    if self._closing and self._queue.size == 0:
                        break
                    continue
                task = loop.create_task(self._dispatch(entries))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        except Exception:
            log.exception("batcher scheduling loop crashed")
            raise

    async def _next_batch(self) -> list[_Entry]:
        """Wait until a batch should go, by Triton's rules, and take it off the queue."""
        while True:
            now = self._clock()
            for entry in self._queue.expire(now):
                self._fail(entry, DeadlineExceededError("deadline passed while queued"))
            n = self._queue.size
            metrics.QUEUE_DEPTH.set(n)
            if n == 0:
                if self._closing:
                    return []
                self._arrival.clear()
                await self._wait_arrival(None)
                continue
            take = 0
            if n >= self._send_at or self._closing:
                take = min(n, self._send_at)
            elif self.preferred_sizes and n >= self.preferred_sizes[0]:
                take = max(s for s in self.preferred_sizes if s <= n)
            else:
                oldest = self._queue.oldest_enqueued()
                waited = now - oldest if oldest is not None else 0.0
                if waited >= self._delay:
                    take = n  # n < self._send_at here
                else:
                    self._arrival.clear()
                    await self._wait_arrival(self._delay - waited)
                    continue
            entries = self._queue.pop(take)
            metrics.QUEUE_DEPTH.set(self._queue.size)
            return self._shed_hopeless(entries, now)

    async def _wait_arrival(self, wait_s: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrival.wait(), wait_s)

    def _shed_hopeless(self, entries: list[_Entry], now: float) -> list[_Entry]:
        """Drop frames whose deadline falls before the batch's predicted finish."""
        estimate = self._predict(len(entries))
        if estimate is None:
            return entries
        keep = []
        for e in entries:
            if e.deadline is not None and now + estimate > e.deadline:
                self._fail(e, DeadlineExceededError("deadline cannot be met (predicted finish)"))
            else:
                keep.append(e)
        return keep

    def _predict(self, n: int) -> float | None:
        """Compute-time estimate for a batch of ``n``: the nearest measured size not above."""
        known = [s for s in self._estimate if s <= n]
        return self._estimate[max(known)] if known else None

    # -- execution ----------------------------------------------------------------------

    async def _dispatch(self, entries: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        slot = self._slots.pop()
        try:
            start = self._clock()
            for e in entries:
                e.state = _State.RUNNING
                metrics.QUEUE_TIME.observe(start - e.enqueued)
            items = [e.item for e in entries]
            try:
                if self._cuda and self._stage_pool is not None:
                    stage_pool = self._stage_pool
                    staged = await loop.run_in_executor(stage_pool, self._stage, items, slot)
                    results = await loop.run_in_executor(self._compute_pool, self._compute, staged)
                else:
                    results = await loop.run_in_executor(
                        self._compute_pool, self._collate_and_compute, items, slot
                    )
            except Exception as exc:  # a bad batch fails its frames, never the worker
                log.exception("batch of %d failed", len(entries))
                for e in entries:
                    self._fail(e, BatchExecutionError(f"inference failed: {exc}"))
                return
            end = self._clock()
            self._learn(len(entries), end - start)
            metrics.COMPUTE_TIME.observe(end - start)
            metrics.BATCH_SIZE.observe(len(entries))
            self._deliver(entries, results, end)
        finally:
            self._slots.append(slot)

    def _deliver(self, entries: list[_Entry], results: Sequence[Detections], end: float) -> None:
        if len(results) != len(entries):
            for e in entries:
                self._fail(
                    e,
                    BatchExecutionError(
                        f"executor returned {len(results)} results for {len(entries)} frames"
                    ),
                )
            return
        for e, det in zip(entries, results, strict=True):
            if e.future.done():
                continue  # the caller gave up (deadline or disconnect)
            if e.deadline is not None and end > e.deadline:
                self._fail(e, DeadlineExceededError("the result came after the deadline"))
                continue
            e.state = _State.GONE
            e.future.set_result(det)
            metrics.FRAMES.inc()
            latency = end - e.started
            metrics.FRAME_LATENCY.observe(latency)
            if self._listener is not None:
                self._listener.record(latency, True)

    def _learn(self, n: int, seconds: float) -> None:
        old = self._estimate.get(n)
        self._estimate[n] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def _host_buffer(self, slot: int) -> torch.Tensor:
        pinned = bool(self._cuda)
        while len(self._host) <= slot:
            self._host.append(self._new_host_buffer(pinned))
        if self._host[slot].is_pinned() != pinned:  # the engine came up on CUDA after a CPU batch
            self._host[slot] = self._new_host_buffer(pinned)
        return self._host[slot]

    def _new_host_buffer(self, pinned: bool) -> torch.Tensor:
        shape = (self.max_batch_size, *self.input_shape)
        return torch.empty(shape, dtype=torch.float32, pin_memory=pinned)

    def _collate(self, items: list[torch.Tensor], slot: int) -> torch.Tensor:
        out = self._host_buffer(slot)[: len(items)]
        torch.stack(items, out=out)
        return out

    def _collate_and_compute(self, items: list[torch.Tensor], slot: int) -> list[Detections]:
        batch = self._collate(items, slot)
        with torch.inference_mode():
            return self._executor.run_batch(batch)

    def _stage(self, items: list[torch.Tensor], slot: int) -> _Staged:
        """CUDA only: collate into pinned memory, copy to the device on a side stream."""
        host = self._collate(items, slot)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=self._device)  # type: ignore[no-untyped-call]
        while len(self._dev) <= slot:
            shape = (self.max_batch_size, *self.input_shape)
            self._dev.append(torch.empty(shape, dtype=torch.float32, device=self._device))
        dev = self._dev[slot][: len(items)]
        with torch.cuda.stream(self._copy_stream):
            dev.copy_(host, non_blocking=True)
            ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
            ready.record(self._copy_stream)
        return _Staged(batch=dev, ready=ready)

    def _compute(self, staged: _Staged) -> list[Detections]:
        torch.cuda.current_stream(self._device).wait_event(staged.ready)
        with torch.inference_mode():
            return self._executor.run_batch(staged.batch)

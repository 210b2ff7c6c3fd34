"""Running a formed batch: the executor's threads, and every frame's outcome.

:class:`Outcomes` is the one place a frame is answered or failed, so every outcome
reaches the observer (typed stats) and the frame listener (the performance report)
exactly once. :class:`BatchRunner` owns the scheduler's two threads: ONE compute thread
(every ``run_batch``, and warm-up, run there, so the executor needs no locks) and a
staging thread used when the executor's ``pipeline_depth`` is 2, so the next batch is
staged while one runs. It allocates nothing itself: staging is the executor's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from its_runtime.detections import Detections
from its_runtime.engine import intra_op
from its_runtime.observability import serving_stats as stats
from its_runtime.serving.batching import errors, predictor
from its_runtime.serving.batching import executor as executor_mod
from its_runtime.serving.batching import queue as queue_mod

log = logging.getLogger(__name__)

T = TypeVar("T")
State = queue_mod.State


class Outcomes:
    """Answers and failures of frames, reported to the observer and the listener."""

    def __init__(
        self,
        observer: stats.SchedulerObserver,
        listener: executor_mod.FrameListener | None,
        clock: Callable[[], float],
    ) -> None:
        self.observer = observer
        self._listener = listener
        self._clock = clock

    def refused(self, reason: str, started: float, now: float) -> None:
        """Count a frame that failed with ``reason`` (its caller gets the error)."""
        self.observer.record(stats.FrameDone(now - started, ok=False, reason=reason))
        if self._listener is not None:
            self._listener.record(now - started, False)

    def fail(self, entry: queue_mod.Entry, error: errors.BatcherError) -> None:
        entry.state = State.GONE
        if not entry.future.done():
            entry.future.set_exception(error)
            self.refused(error.reason, entry.started, self._clock())

    def shed_hopeless(
        self, entries: list[queue_mod.Entry], now: float, estimate: float | None
    ) -> list[queue_mod.Entry]:
        """``entries`` less (and failing) those whose deadline falls before the batch's
        predicted finish ``now + estimate``."""
        if estimate is None:
            return entries
        keep = []
        for e in entries:
            if e.deadline is not None and now + estimate > e.deadline:
                self.fail(
                    e, errors.DeadlineExceededError("deadline cannot be met (predicted finish)")
                )
            else:
                keep.append(e)
        return keep

    def answer(self, entry: queue_mod.Entry, detections: Detections, end: float) -> None:
        entry.state = State.GONE
        entry.future.set_result(detections)
        latency = end - entry.started
        self.observer.record(stats.FrameDone(latency, ok=True))
        if self._listener is not None:
            self._listener.record(latency, True)


class BatchRunner:
    """Stages and runs batches on the executor's threads; learns their compute time."""

    def __init__(
        self,
        executor: executor_mod.BatchExecutor,
        outcomes: Outcomes,
        latency: predictor.LatencyPredictor,
        clock: Callable[[], float],
    ) -> None:
        self._executor = executor
        self._outcomes = outcomes
        self._latency = latency
        self._clock = clock
        # The only thread whose torch ops run in parallel (engine.intra_op).
        self._compute_pool = concurrent.futures.ThreadPoolExecutor(
            1, "its-batch-compute", initializer=intra_op.claim
        )
        self._stage_pool = concurrent.futures.ThreadPoolExecutor(1, "its-batch-stage")

    @property
    def depth(self) -> int:
        """Batches that may be staged or running at once (the executor's say)."""
        return max(1, self._executor.pipeline_depth)

    async def call_in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._compute_pool, fn)

    def shutdown(self) -> None:
        self._compute_pool.shutdown(wait=False)
        self._stage_pool.shutdown(wait=False)

    async def run(self, entries: list[queue_mod.Entry]) -> None:
        """Run one batch and answer (or fail) each of its frames."""
        loop = asyncio.get_running_loop()
        start = self._clock()
        for e in entries:
            e.state = State.RUNNING
        self._outcomes.observer.record(
            stats.BatchStarted(tuple(start - e.enqueued for e in entries))
        )
        items = [e.item for e in entries]
        try:
            if self._executor.pipeline_depth > 1:  # stage this batch while another runs
                batch = await loop.run_in_executor(self._stage_pool, self._executor.stage, items)
                results = await loop.run_in_executor(self._compute_pool, self._run_batch, batch)
            else:
                results = await loop.run_in_executor(self._compute_pool, self._stage_and_run, items)
        except Exception as exc:  # a bad batch fails its frames, never the worker
            log.exception("batch of %d failed", len(entries))
            for e in entries:
                self._outcomes.fail(e, errors.BatchExecutionError(f"inference failed: {exc}"))
            return
        end = self._clock()
        self._latency.learn(len(entries), end - start)
        self._outcomes.observer.record(stats.BatchDone(len(entries), end - start))
        self._deliver(entries, results, end)

    def _run_batch(self, batch: torch.Tensor) -> list[Detections]:
        with torch.inference_mode():
            return self._executor.run_batch(batch)

    def _stage_and_run(self, items: list[torch.Tensor]) -> list[Detections]:
        return self._run_batch(self._executor.stage(items))

    def _deliver(
        self, entries: list[queue_mod.Entry], results: Sequence[Detections], end: float
    ) -> None:
        if len(results) != len(entries):
            for e in entries:
                self._outcomes.fail(
                    e,
                    errors.BatchExecutionError(
                        f"executor returned {len(results)} results for {len(entries)} frames"
                    ),
                )
            return
        for e, det in zip(entries, results, strict=True):
            if e.future.done():
                continue  # the caller gave up (deadline or disconnect)
            if e.deadline is not None and end > e.deadline:
                self._outcomes.fail(
                    e, errors.DeadlineExceededError("the result came after the deadline")
                )
                continue
            self._outcomes.answer(e, det, end)

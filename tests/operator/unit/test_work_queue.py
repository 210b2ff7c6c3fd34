"""The work queue: one reconcile per key at a time, bursts folded, failures backed off."""

from __future__ import annotations

import asyncio
import contextlib

from its_operator.handlers import queue


class Recorder:
    def __init__(self, fail_times: int = 0, requeue: float | None = None, hold: float = 0) -> None:
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlap = False
        self.fail_times = fail_times
        self.requeue = requeue
        self.hold = hold

    async def __call__(self, key: str) -> float | None:
        if key in self.running:
            self.overlap = True
        self.running.add(key)
        self.calls.append(key)
        try:
            await asyncio.sleep(self.hold)
            if self.fail_times:
                self.fail_times -= 1
                raise RuntimeError("boom")
            requeue, self.requeue = self.requeue, None
            return requeue
        finally:
            self.running.discard(key)


@contextlib.asynccontextmanager
async def running(q: queue.WorkQueue[str]):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(q.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_burst_of_adds_is_one_reconcile() -> None:
    rec = Recorder()
    q: queue.WorkQueue[str] = queue.WorkQueue(rec, workers=4)
    async with running(q):
        for _ in range(50):
            q.add("a", 0.05)
        q.add("b")
        await asyncio.sleep(0.01)
        await q.join()
    assert sorted(rec.calls) == ["a", "b"]


async def test_a_key_is_never_reconciled_twice_at_once() -> None:
    rec = Recorder(hold=0.05)
    q: queue.WorkQueue[str] = queue.WorkQueue(rec, workers=4)
    async with running(q):
        q.add("a")
        await asyncio.sleep(0.01)
        q.add("a")  # while running: re-queued after
        await asyncio.sleep(0.01)
        await q.join()
    assert rec.calls == ["a", "a"]
    assert not rec.overlap


async def test_failures_retry_with_backoff_and_requeue_is_honoured() -> None:
    rec = Recorder(fail_times=2)
    q: queue.WorkQueue[str] = queue.WorkQueue(rec, workers=1)
    loop = asyncio.get_running_loop()
    async with running(q):
        t0 = loop.time()
        q.add("a")
        await asyncio.sleep(0.01)
        await q.join()
        elapsed = loop.time() - t0
    assert rec.calls == ["a", "a", "a"]
    assert elapsed >= 0.5 + 1.0 - 0.05  # 0.5 s, then 1 s

    rec2 = Recorder(requeue=0.2)
    q2: queue.WorkQueue[str] = queue.WorkQueue(rec2, workers=1)
    async with running(q2):
        q2.add("x")
        await asyncio.sleep(0.01)
        await q2.join()
    assert rec2.calls == ["x", "x"]


async def test_nothing_runs_while_the_gate_is_closed() -> None:
    class Gate:
        def __init__(self) -> None:
            self.open = asyncio.Event()

        async def wait_open(self) -> None:
            await self.open.wait()

    gate = Gate()
    rec = Recorder()
    q: queue.WorkQueue[str] = queue.WorkQueue(rec, workers=1, gate=gate)
    async with running(q):
        q.add("a")
        await asyncio.sleep(0.1)
        assert rec.calls == []
        q.clear()
        q.add("b")
        gate.open.set()
        await asyncio.sleep(0.01)
        await q.join()
    assert rec.calls == ["b"]


async def test_a_key_added_while_waiting_for_a_worker_never_runs_twice_at_once() -> None:
    """All workers busy: the dispatcher has popped "k" and waits for a slot. An add of
    "k" in that gap must not let a second reconcile of "k" start beside the first."""
    rec = Recorder(hold=0.2)
    q: queue.WorkQueue[str] = queue.WorkQueue(rec, workers=2)
    async with running(q):
        q.add("busy-1")
        q.add("busy-2")
        await asyncio.sleep(0.02)  # both workers are now holding
        q.add("k")
        await asyncio.sleep(0.02)  # the dispatcher has reached "k" and waits for a slot
        q.add("k")  # a watch event for k arrives in that gap
        await asyncio.sleep(0.25)  # one worker frees: k starts
        q.add("k")
        await asyncio.sleep(0.01)
        await q.join()
    assert not rec.overlap, rec.calls
    assert rec.calls.count("k") >= 1

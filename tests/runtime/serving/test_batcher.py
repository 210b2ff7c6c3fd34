"""The dynamic batcher's scheduling rules, in process on CPU, with a real small model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import torch

from its_runtime.config import BatchingConfig
from its_runtime.detections import Detections
from its_runtime.engine import spec as spec_mod
from its_runtime.engine import staging
from its_runtime.serving import batching

from .tinymodel import GatedExecutor, ModuleExecutor, TinyDetector

SHAPE = (3, 64, 64)


def frame(value: float = 0.5) -> torch.Tensor:
    return torch.full(SHAPE, value, dtype=torch.float32)


def config(**kw: object) -> BatchingConfig:
    base: dict[str, object] = {"maxBatchSize": 8, "maxQueueDelayMs": 20, "maxQueueSize": 64}
    base.update(kw)
    base.setdefault("optBatchSize", base["maxBatchSize"])
    return BatchingConfig.model_validate(base)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., batching.DynamicBatcher]]:
    made: list[batching.DynamicBatcher] = []

    def build(executor: batching.BatchExecutor, **kw: object) -> batching.DynamicBatcher:
        b = batching.DynamicBatcher(executor, config(**kw))
        b.start()
        made.append(b)
        return b

    yield build
    for b in made:
        await b.close()


async def entered(executor: GatedExecutor) -> None:
    assert await asyncio.to_thread(executor.entered.acquire, True, 10), "no batch started"


async def test_concurrent_requests_are_answered_in_one_batch(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = ModuleExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxQueueDelayMs=200)
    results = await asyncio.gather(*(b.submit(frame(i / 10)) for i in range(8)))
    assert ex.batch_sizes == [8]
    assert all(isinstance(r, Detections) and len(r) == 4 for r in results)
    # Each frame gets its own answer: different inputs, different boxes.
    assert not (results[0].boxes == results[7].boxes).all()


async def test_a_lone_request_on_an_idle_batcher_does_not_wait_the_queue_delay(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    # Issue 12: waiting for company only pays while the executor is busy.
    ex = ModuleExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxQueueDelayMs=400)
    start = time.monotonic()
    await b.submit(frame())
    elapsed = time.monotonic() - start
    assert ex.batch_sizes == [1]
    assert elapsed < 0.3


async def test_a_full_batch_goes_without_waiting_for_the_delay(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = ModuleExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxBatchSize=4, maxQueueDelayMs=1000)
    start = time.monotonic()
    await asyncio.gather(*(b.submit(frame()) for _ in range(4)))
    assert time.monotonic() - start < 0.5
    assert ex.batch_sizes == [4]


async def test_a_preferred_size_goes_at_once_and_the_rest_as_soon_as_the_executor_is_free(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = ModuleExecutor(TinyDetector(), SHAPE)
    b = make(ex, preferredBatchSizes=[2], maxQueueDelayMs=400)
    start = time.monotonic()
    tasks = [asyncio.create_task(b.submit(frame())) for _ in range(3)]
    await asyncio.gather(*tasks)
    assert ex.batch_sizes == [2, 1]
    assert time.monotonic() - start < 0.3  # the third did not wait out the queue delay


async def test_requests_arriving_during_a_batch_join_the_next_one(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxQueueDelayMs=0)
    first = asyncio.create_task(b.submit(frame()))
    await entered(ex)
    rest = [asyncio.create_task(b.submit(frame())) for _ in range(6)]
    await asyncio.sleep(0.05)
    assert b.queue_depth == 6
    ex.open()
    await asyncio.gather(first, *rest)
    assert ex.batch_sizes == [1, 6]


async def test_a_full_queue_rejects_at_once(make: Callable[..., batching.DynamicBatcher]) -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxBatchSize=1, maxQueueSize=2, maxQueueDelayMs=0)
    running = asyncio.create_task(b.submit(frame()))
    await entered(ex)
    queued = [asyncio.create_task(b.submit(frame())) for _ in range(2)]
    await asyncio.sleep(0.02)
    start = time.monotonic()
    with pytest.raises(batching.QueueFullError, match="queue is full"):
        await b.submit(frame())
    assert time.monotonic() - start < 0.05
    ex.open()
    await asyncio.gather(running, *queued)
    assert ex.batch_sizes == [1, 1, 1]


async def test_a_queued_request_gets_a_deadline_error_not_a_late_answer(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxQueueDelayMs=0)
    running = asyncio.create_task(b.submit(frame(0.1)))
    await entered(ex)
    start = time.monotonic()
    with pytest.raises(batching.DeadlineExceededError):
        await b.submit(frame(0.9), deadline=time.monotonic() + 0.1)
    assert 0.09 <= time.monotonic() - start < 0.5
    assert b.queue_depth == 0
    ex.open()
    await running
    await asyncio.sleep(0.05)
    # The expired frame (0.9) was never computed.
    assert [v for batch in ex.first_values for v in batch] == pytest.approx([0.1])


async def test_a_frame_that_cannot_finish_in_time_is_shed_before_running(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = ModuleExecutor(TinyDetector(width=32, depth=4), (3, 256, 256))
    b = batching.DynamicBatcher(ex, config(maxBatchSize=1, maxQueueDelayMs=0))
    b.start()
    try:
        for _ in range(3):  # learn how long a batch of one takes
            await b.submit(torch.zeros(3, 256, 256))
        took = b._predict(1)
        assert took is not None
        assert took > 0.002
        with pytest.raises(batching.DeadlineExceededError, match="cannot be met"):
            await b.submit(torch.zeros(3, 256, 256), deadline=time.monotonic() + took / 4)
        assert ex.batch_sizes == [1, 1, 1]
    finally:
        await b.close()


async def test_higher_priority_is_served_first(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxBatchSize=1, maxQueueDelayMs=0)
    running = asyncio.create_task(b.submit(frame(0.0)))
    await entered(ex)
    low = [asyncio.create_task(b.submit(frame(v), priority=0)) for v in (0.1, 0.2)]
    await asyncio.sleep(0.01)
    high = asyncio.create_task(b.submit(frame(0.9), priority=5))
    await asyncio.sleep(0.01)
    ex.open()
    await asyncio.gather(running, *low, high)
    order = [batch[0] for batch in ex.first_values]
    assert order == pytest.approx([0.0, 0.9, 0.1, 0.2])


async def test_a_failing_batch_fails_its_frames_and_the_worker_goes_on(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = ModuleExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxBatchSize=1, maxQueueDelayMs=0)
    with pytest.raises(batching.BatchExecutionError, match="NaN"):
        await b.submit(torch.full(SHAPE, float("nan")))
    assert b.running
    assert len(await b.submit(frame())) == 4


async def test_a_frame_of_the_wrong_shape_is_refused(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    b = make(ModuleExecutor(TinyDetector(), SHAPE))
    with pytest.raises(ValueError, match=r"shape \[3, 64, 64\]"):
        await b.submit(torch.zeros(3, 32, 32))


async def test_drain_answers_every_queued_frame_and_refuses_new_ones(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxBatchSize=2, maxQueueDelayMs=0)
    tasks = [asyncio.create_task(b.submit(frame())) for _ in range(5)]
    await entered(ex)
    draining = asyncio.create_task(b.drain(grace_s=10))
    await asyncio.sleep(0.02)
    with pytest.raises(batching.BatcherClosedError):
        await b.submit(frame())
    ex.open()
    assert await draining
    assert all(len(r) == 4 for r in await asyncio.gather(*tasks))
    assert sum(ex.batch_sizes) == 5
    assert not b.running


async def test_the_default_deadline_applies_to_requests_without_one(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    b = make(ex, maxBatchSize=1, maxQueueDelayMs=0, defaultDeadlineMs=80)
    running = asyncio.create_task(b.submit(frame()))
    await entered(ex)
    with pytest.raises(batching.DeadlineExceededError):
        await b.submit(frame())
    ex.open()
    with pytest.raises(batching.DeadlineExceededError):  # its result came after 80 ms
        await running


class CudaExecutor(ModuleExecutor):
    """The same network on CUDA, staging batches on the device with the engine's stager
    (pinned memory, a copy on a side stream while the previous batch computes)."""

    def __init__(self) -> None:
        super().__init__(TinyDetector().cuda(), SHAPE)
        self.device = torch.device("cuda", torch.cuda.current_device())
        spec = spec_mod.InputSpec(*SHAPE, max_batch=8, opt_batch=8, buckets=(1, 2, 4, 8))
        self._stager = staging.BatchStager(spec, self.device, torch.float32)
        self.saw_device_batches: list[bool] = []

    @property
    def pipeline_depth(self) -> int:
        return self._stager.slots

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._stager.collate(frames)

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        self.saw_device_batches.append(batch.is_cuda)
        return super().run_batch(self._stager.stage(batch, batch.shape[0]))


@pytest.mark.gpu
async def test_on_cuda_batches_are_staged_on_the_device_and_give_cpu_answers(
    make: Callable[..., batching.DynamicBatcher],
) -> None:
    gpu = CudaExecutor()
    cpu = ModuleExecutor(TinyDetector(), SHAPE)
    frames = [torch.rand(SHAPE) for _ in range(40)]
    b = make(gpu, maxQueueDelayMs=2)
    on_gpu = await asyncio.gather(*(b.submit(f) for f in frames))
    on_cpu = cpu.run_batch(torch.stack(frames))
    assert all(gpu.saw_device_batches)
    assert len(gpu.batch_sizes) > 1  # several batches, staged while others computed
    for g, c in zip(on_gpu, on_cpu, strict=True):
        assert g.boxes == pytest.approx(c.boxes, abs=1e-3)

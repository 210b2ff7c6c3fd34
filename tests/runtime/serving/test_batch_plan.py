"""One batch plan for engine and batcher: the batcher knows the engine's buckets."""

from __future__ import annotations

import asyncio

import pytest
import torch

from its_runtime.config import BatchingConfig
from its_runtime.engine import plan as plan_mod
from its_runtime.engine import spec as spec_mod
from its_runtime.engine.executor import Engine
from its_runtime.engine.lazy import LazyEngine
from its_runtime.observability import serving_stats
from its_runtime.serving import batching
from its_runtime.serving.batching import policy

from .tinymodel import GatedExecutor, ModuleExecutor, TinyDetector

SHAPE = (3, 64, 64)
BUCKETS = plan_mod.BatchPlan(max_batch_size=8, opt_batch_size=8, buckets=(1, 2, 4, 8))


def test_the_plan_is_derived_once_from_the_config_and_the_engine_spec_uses_it() -> None:
    cfg = BatchingConfig(max_batch_size=12, opt_batch_size=6, preferred_batch_sizes=[3, 12])
    plan = plan_mod.from_config(cfg)
    assert plan.buckets == (1, 2, 3, 4, 6, 8, 12)
    assert plan.preferred_sizes == (3, 12)
    assert plan.warmup_sizes == plan.buckets
    assert [plan.bucket_for(n) for n in (1, 5, 9, 12)] == [1, 6, 12, 12]
    assert plan.capped(5).buckets == (1, 2, 3, 4, 5)
    assert plan.capped(5).max_batch_size == 5
    assert plan.capped(5).preferred_sizes == (3,)
    assert plan.capped(64) is plan


def test_with_buckets_1_2_4_8_five_queued_frames_go_as_one_batch_of_bucket_8() -> None:
    rules = policy.DispatchPolicy(BUCKETS, max_queue_delay_s=0.02)
    # While a batch computes, waiting for company pays ...
    assert rules.decide(5, waited_s=0.0, closing=False) == policy.Decision(0, wait_s=0.02)
    # ... on an idle executor it does not: what is queued goes at once.
    assert rules.decide(5, waited_s=0.0, closing=False, idle=True) == policy.Decision(5, bucket=8)
    assert rules.decide(1, waited_s=0.0, closing=False, idle=True) == policy.Decision(1, bucket=1)
    assert rules.decide(11, waited_s=0.0, closing=False, idle=True) == policy.Decision(8, bucket=8)
    assert rules.decide(5, waited_s=0.03, closing=False) == policy.Decision(5, bucket=8)
    assert rules.decide(5, waited_s=0.0, closing=True) == policy.Decision(5, bucket=8)
    assert rules.decide(11, waited_s=0.0, closing=False) == policy.Decision(8, bucket=8)


async def test_the_batcher_forms_and_predicts_batches_by_the_engines_buckets() -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    cfg = BatchingConfig(max_batch_size=8, opt_batch_size=8, max_queue_delay_ms=0)
    b = batching.DynamicBatcher(ex, cfg, plan=BUCKETS)
    b.start()
    try:
        first = asyncio.create_task(b.submit(torch.zeros(SHAPE)))
        assert await asyncio.to_thread(ex.entered.acquire, True, 10)
        queued = [asyncio.create_task(b.submit(torch.zeros(SHAPE))) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert b.queue_depth == 5
        ex.open()
        await asyncio.gather(first, *queued)
    finally:
        await b.close()
    # Five queued frames went as one batch (bucket 8), not as 4 + 1; never above 8.
    assert ex.batch_sizes == [1, 5]
    assert b.plan.bucket_for(5) == 8
    # The batch of 5 costs what its bucket costs: sizes 5..8 share one estimate.
    assert b._predict(5) is not None
    assert b._predict(5) == b._predict(8) == b._predict(7)
    assert b._predict(4) == b._predict(1)  # bucket 4 not measured: the nearest below


def test_the_batcher_caps_the_plan_at_the_executors_maximum() -> None:
    ex = ModuleExecutor(TinyDetector(), SHAPE, max_batch_size=4)
    b = batching.DynamicBatcher(ex, BatchingConfig(max_batch_size=8, opt_batch_size=4))
    assert b.max_batch_size == 4
    assert b.plan.buckets == (1, 2, 4)


async def test_the_scheduler_reports_typed_stats_to_its_observer() -> None:
    seen: list[serving_stats.SchedulerStat] = []

    class Collect:
        def record(self, stat: serving_stats.SchedulerStat) -> None:
            seen.append(stat)

    ex = ModuleExecutor(TinyDetector(), SHAPE)
    cfg = BatchingConfig(max_batch_size=8, opt_batch_size=8, max_queue_delay_ms=50)
    b = batching.DynamicBatcher(ex, cfg, observer=Collect())
    b.start()
    try:
        await asyncio.gather(*(b.submit(torch.zeros(SHAPE)) for _ in range(3)))
        with pytest.raises(ValueError, match="shape"):
            await b.submit(torch.zeros(3, 8, 8))
    finally:
        await b.close()
    done = [s for s in seen if isinstance(s, serving_stats.BatchDone)]
    frames = [s for s in seen if isinstance(s, serving_stats.FrameDone)]
    started = [s for s in seen if isinstance(s, serving_stats.BatchStarted)]
    assert sum(d.size for d in done) == 3
    assert all(d.compute_s > 0 for d in done)
    assert sum(len(s.queue_s) for s in started) == 3
    assert [f.ok for f in frames] == [True, True, True]
    assert isinstance(seen[-1], serving_stats.QueueDepth)
    assert seen[-1].frames == 0


def test_the_engine_spec_follows_the_plan() -> None:
    from its_runtime import config

    model = config.ModelConfig(path="m.pt2", input_shape=[3, 8, 8])
    spec = spec_mod.from_model_config(model, BUCKETS)
    assert spec.buckets == BUCKETS.buckets
    assert spec.max_batch == BUCKETS.max_batch_size


def _engines_are_batch_executors(
    engine: Engine, lazy: LazyEngine, module: ModuleExecutor
) -> list[batching.BatchExecutor]:
    """Static check (mypy): each executor implements the batcher's Protocol."""
    return [engine, lazy, module]


async def test_a_frame_on_an_idle_batcher_is_computed_without_waiting_the_queue_delay() -> None:
    ex = GatedExecutor(TinyDetector(), SHAPE)
    ex.open()
    # A queue delay longer than any wait below: only the idle rule can dispatch in time.
    cfg = BatchingConfig(max_batch_size=8, opt_batch_size=8, max_queue_delay_ms=1000)
    b = batching.DynamicBatcher(ex, cfg, plan=BUCKETS)
    b.start()
    try:
        frame = torch.rand(SHAPE)
        # Alone, on an idle executor: answered well inside the 1 s queue delay.
        await asyncio.wait_for(b.submit(frame), 0.5)
        assert ex.entered.acquire(timeout=0)
        # While a batch computes, frames that arrive wait for company and go together
        # as soon as the executor is free again (not after the queue delay).
        ex.close()
        first = asyncio.create_task(b.submit(frame))
        assert await asyncio.to_thread(ex.entered.acquire, timeout=5.0)
        later = [asyncio.create_task(b.submit(frame)) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert b.queue_depth == 3  # held back: the executor is busy
        ex.open()
        await asyncio.wait_for(asyncio.gather(first, *later), 0.5)
    finally:
        ex.open()
        await b.close()

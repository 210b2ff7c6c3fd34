"""The application factory: config + executor in, a ready-to-run aiohttp application out.

Everything the HTTP layer needs is built here once and passed down as one typed
:class:`~its_runtime.serving.api.services.Services`; nothing reads environment variables or
globals later. The factory takes the executor rather than loading a model, so the same
application serves the real engine (``its_runtime.main``), a small torch model in the
tests and the benchmark. The batch plan (sizes, buckets, warm-up sizes) is the one the
engine was given, so the batcher and the engine agree on it, and the batcher's stats go
to the Prometheus observer wired here (``observability.metrics``).

Other layers plug in through *extensions*: callables ``(app, services) -> None`` run
at the end of :func:`create_app`. An extension adds routes (``/v1/cameras/...``),
background tasks (``app.cleanup_ctx``), readiness checks
(``services.readiness.register``) and drain hooks (``services.drain_hooks``), and
submits frames through ``services.batcher`` like the HTTP handlers do. Because
extensions are added after the core lifecycle, their background tasks start after the
batcher and stop before it.

Warm-up runs on the batcher's worker thread after the server starts listening, so
``/live`` answers while a slow engine build runs and ``/ready`` turns true only when
warm-up has finished (and start-up's objects are frozen out of the garbage
collector's full collections: ``observability.gc_settle``); a warm-up that fails is
reported through ``/ready`` and ``services.fatal`` (``its-runtime`` then exits with the
message).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence

import torch
from aiohttp import web
from prometheus_client.registry import Collector

from its_runtime.config import RuntimeConfig
from its_runtime.engine import intra_op
from its_runtime.engine import plan as plan_mod
from its_runtime.engine import stats as engine_stats
from its_runtime.observability import collectors, gc_settle, metrics, telemetry
from its_runtime.serving import batching, frames, performance
from its_runtime.serving.api import middleware, readiness, routes
from its_runtime.serving.api.services import SERVICES, Preprocessor, Services

log = logging.getLogger(__name__)

#: An extension mounts routes, tasks and checks of another layer on the application.
Extension = Callable[[web.Application, Services], None]
#: Seconds between alert evaluations when nobody asks for the report.
ALERT_INTERVAL_S = 5.0


def default_warmup(executor: batching.BatchExecutor, sizes: Sequence[int]) -> Callable[[], None]:
    """Warm-up for an executor that has none: run zero batches of the sizes it will see."""

    def run() -> None:
        for n in sorted(set(sizes)):
            with torch.inference_mode():
                executor.run_batch(torch.zeros((n, *executor.input_shape)))

    return run


def probe_forward(executor: batching.BatchExecutor) -> Callable[[], object]:
    """One forward of a lone zero frame: what ``engine.intra_op.choose`` times."""

    def run() -> object:
        with torch.inference_mode():
            return executor.run_batch(torch.zeros((1, *executor.input_shape)))

    return run


def create_app(
    config: RuntimeConfig,
    executor: batching.BatchExecutor,
    *,
    plan: plan_mod.BatchPlan | None = None,
    preprocessor: Preprocessor | None = None,
    warmup: Callable[[], object] | None = None,
    engine_info: collectors.EngineStatsSource | None = None,
    extensions: Sequence[Extension] = (),
    gpu_telemetry: telemetry.GpuTelemetry | None = None,
    decode_workers: int | None = None,
) -> web.Application:
    """Build the runtime's application around ``executor`` (see the module docstring).

    ``plan`` is the batch plan the engine was given (derived from ``config`` when not
    given); ``engine_info`` reports the engine's stats (an executor that is not this
    runtime's engine reports ``custom``).
    """
    if plan is None:
        plan = plan_mod.from_config(config.model.batching)
    if preprocessor is None:
        from its_runtime.serving import preprocess

        preprocessor = preprocess
    tele = gpu_telemetry if gpu_telemetry is not None else telemetry.GpuTelemetry()
    holder: dict[str, batching.DynamicBatcher] = {}
    tracker = performance.PerformanceTracker(
        config.slo,
        target_fps=sum(c.fps for c in config.cameras) or None,
        queue_depth=lambda: holder["batcher"].queue_depth,
        gpu_utilization=tele.utilization,
    )
    batcher = batching.DynamicBatcher(
        executor,
        config.model.batching,
        plan=plan,
        observer=metrics.PrometheusSchedulerObserver(),
        listener=tracker,
    )
    holder["batcher"] = batcher
    workers = decode_workers or os.cpu_count() or 2
    services = Services(
        config=config,
        batcher=batcher,
        readiness=readiness.Readiness(),
        performance=tracker,
        preprocessor=preprocessor,
        decode_pool=concurrent.futures.ThreadPoolExecutor(workers, "its-decode"),
        engine=engine_info
        if engine_info is not None
        else engine_stats.FixedStats(engine_stats.EngineStats.custom()),
        telemetry=tele,
    )
    services.readiness.describe("torch_threads", intra_op.describe)
    if warmup is None:
        warmup = default_warmup(executor, batcher.plan.warmup_sizes)
    app = web.Application(
        client_max_size=config.server.max_body_bytes, middlewares=[middleware.observe]
    )
    app[SERVICES] = services
    app[frames.DECODER] = frames.FrameDecoder(
        preprocessor,
        batcher.input_shape,
        resize=config.model.resize,
        requested=config.server.jpeg_decode,
        device=frames.engine_device(executor),
    )
    routes.add_routes(app)
    app.cleanup_ctx.append(_lifecycle(services, warmup, probe_forward(executor)))
    for extension in extensions:
        extension(app, services)
    return app


def _lifecycle(
    services: Services, warmup: Callable[[], object], probe: Callable[[], object]
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def run(app: web.Application) -> AsyncIterator[None]:
        services.telemetry.start()
        scrape_collectors: list[Collector] = [
            collectors.EngineCollector(services.engine),
            collectors.GpuCollector(services.telemetry),
        ]
        for collector in scrape_collectors:
            metrics.REGISTRY.register(collector)
        metrics.READY.set(0)
        metrics.DRAINING.set(0)
        services.batcher.start()
        tasks = [
            asyncio.create_task(_warm_up(services, warmup, probe), name="its-warmup"),
            asyncio.create_task(_watch_alerts(services), name="its-alerts"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.batcher.close()
            services.decode_pool.shutdown(wait=False, cancel_futures=True)
            services.telemetry.close()
            for collector in scrape_collectors:
                metrics.REGISTRY.unregister(collector)

    return run


async def _warm_up(
    services: Services, warmup: Callable[[], object], probe: Callable[[], object]
) -> None:
    start = time.monotonic()
    try:
        await services.batcher.call_in_worker(warmup)
    except Exception as exc:
        log.exception("warm-up failed")
        services.readiness.warmup_error = str(exc) or type(exc).__name__
        services.set_fatal(f"warm-up failed: {services.readiness.warmup_error}")
        return
    elapsed = time.monotonic() - start
    metrics.WARMUP_TIME.set(elapsed)
    try:  # keep the compute thread's intra-op threads only where they pay
        await services.batcher.call_in_worker(lambda: intra_op.choose(probe))
    except Exception:
        log.exception("timing the forward by thread count failed; keeping the reserved count")
    # Before ready: the full collection that start-up's objects would cause mid-serving.
    gc_settle.settle()
    services.readiness.warmed_up = True
    services.warm.set()
    log.info(
        "warm-up done in %.2fs; backend %s; ready to serve",
        elapsed,
        services.engine.stats().backend,
    )


async def _watch_alerts(services: Services) -> None:
    while True:
        await asyncio.sleep(ALERT_INTERVAL_S)
        try:
            services.performance.report()
        except Exception:
            log.exception("performance report failed")


def services_of(app: web.Application) -> Services:
    """The services of an application built by :func:`create_app`."""
    return app[SERVICES]

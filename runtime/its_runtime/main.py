"""``its-runtime --config PATH``: the process the operator deploys.

Order of events, and why:

1. Parse and validate the config; a bad file exits at once (code 2) with the
   validation message naming the field.
2. Start listening *before* the engine is loaded. Loading may build a TensorRT or
   AOTInductor engine for minutes; meanwhile ``/live`` answers (so a startup probe does
   not kill the pod mid-build) and ``/ready`` says "warming up". The engine is loaded and
   warmed on the batcher's worker thread (``engine.lazy.LazyEngine`` stands in until
   then; the one ``BatchPlan`` derived from the config here sizes both the engine and
   the batcher); a load error (wrong input shape, unreadable
   file, no usable backend) exits with code 3 and the engine's message.
3. On SIGTERM (or SIGINT): ``/ready`` turns false, new frames get 503 "draining",
   drain hooks of other layers run (camera readers stop), every queued frame is still
   computed and answered, in-flight responses are written, then the listener closes
   and the process exits 0. ``server.drainTimeoutS`` bounds the whole drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pydantic
from aiohttp import web

# openmp_env first, for its effect: libgomp reads it when torch loads (the imports below).
from its_runtime import openmp_env, redaction  # noqa: F401
from its_runtime.config import DEFAULT_CONFIG_PATH, RuntimeConfig, ServerConfig
from its_runtime.dataplane import camera, plane, queries
from its_runtime.dataplane.analytics import analyzer
from its_runtime.engine import intra_op, lazy
from its_runtime.engine import plan as plan_mod
from its_runtime.observability import metrics
from its_runtime.serving import app as app_mod
from its_runtime.serving.api.services import SERVICES, Services

log = logging.getLogger("its_runtime")

EXIT_CONFIG = 2
EXIT_ENGINE = 3


async def drain(services: Services, timeout_s: float) -> bool:
    """Stop taking work, finish what is queued, wait for responses to be written."""
    deadline = time.monotonic() + timeout_s
    services.readiness.draining = True
    metrics.DRAINING.set(1)
    metrics.READY.set(0)
    log.info(
        "draining: %d frames queued, %d requests admitted",
        services.batcher.queue_depth,
        services.admitting,
    )
    for hook in services.drain_hooks:
        try:
            await asyncio.wait_for(hook(), max(0.0, deadline - time.monotonic()))
        except Exception:
            log.exception("drain hook failed")
    # Requests admitted before the drain began are still reading or decoding: let
    # their frames reach the queue before the batcher closes it (no new ones come:
    # draining refuses them at the door).
    if services.admitting > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(services.admitted.wait(), max(0.0, deadline - time.monotonic()))
    finished = await services.batcher.drain(grace_s=max(0.0, deadline - time.monotonic()))
    # Handlers whose frames just finished still have to write their responses.
    if services.in_flight > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(services.idle.wait(), max(0.0, deadline - time.monotonic()))
    log.info("drained (%s)", "complete" if finished else "timed out")
    return finished


async def serve(app: web.Application, server: ServerConfig) -> int:
    """Run ``app`` until SIGTERM/SIGINT (then drain) or a fatal error; return the exit code."""
    services = app[SERVICES]
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port, shutdown_timeout=5.0)
    await site.start()
    log.info("listening on http://%s:%d", server.host, server.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(services.fatal.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    code = 0
    if services.fatal.is_set():
        log.error("cannot serve: %s", services.fatal_reason)
        code = EXIT_ENGINE
        await services.batcher.close()
    else:
        log.info("signal received; draining for at most %ss", server.drain_timeout_s)
        await drain(services, server.drain_timeout_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    await runner.cleanup()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-runtime", description="ITS camera analytics inference runtime."
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="runtime config YAML")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    # Before torch's first parallel op: only the compute thread runs them in parallel.
    intra_op.reserve()
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Camera URLs carry credentials and FFmpeg's errors quote them: no log line may.
    redaction.install()
    try:
        config = RuntimeConfig.load(args.config)
    except FileNotFoundError:
        log.error("config file %s does not exist", args.config)
        return EXIT_CONFIG
    except (OSError, ValueError, pydantic.ValidationError) as exc:
        log.error("invalid config %s: %s", args.config, exc)
        return EXIT_CONFIG
    # One batch plan (maximum, buckets, warm-up sizes) for the engine and the batcher.
    plan = plan_mod.from_config(config.model.batching)
    executor = lazy.LazyEngine(config, plan)
    application = app_mod.create_app(
        config,
        executor,
        plan=plan,
        warmup=executor.load_and_warm_up,
        engine_info=executor,
        # Cameras decode on the GPU (cameraDecode) only into an engine that runs there.
        extensions=[data_plane_extension(device_frames=lambda: executor.accepts_device_batches)],
    )
    return asyncio.run(serve(application, config.server))


def data_plane_extension(
    *,
    options: camera.PipelineOptions | None = None,
    env: Mapping[str, str] | None = None,
    listener: Callable[[analyzer.FrameAnalysis], None] | None = None,
    device_frames: Callable[[], bool] | None = None,
) -> Callable[[web.Application, Services], None]:
    """Mount the data plane on the serving application (``create_app(extensions=...)``).

    Frames go through the application's own batcher; the query routes, the readiness
    checks (optional dependencies: degraded Redis or PostgreSQL never make the pod
    unready), a drain hook (cameras stop first) and the lifecycle are registered, and
    ``/ready`` shows where the cameras decode (``camera_decode``). ``device_frames``
    says whether the batcher's executor takes CUDA frames (see ``DataPlane``).
    """

    def mount(app: web.Application, services: Services) -> None:
        dp = plane.DataPlane(
            services.config,
            services.batcher,
            options=options,
            env=env,
            listener=listener,
            device_frames=device_frames,
        )
        app[DATA_PLANE] = dp
        queries.add_routes(app, dp.queries)

        async def ownership(_: web.Request) -> web.Response:
            return web.json_response(dp.ownership())

        app.router.add_get("/v1/ownership", ownership)
        services.readiness.register("redis", dp.redis_health, required=False)
        services.readiness.register("database", dp.database_health, required=False)
        services.readiness.register("cameras", dp.cameras_health, required=False)
        services.readiness.describe("camera_decode", dp.decode_state)
        services.drain_hooks.append(dp.stop_cameras)

        async def lifecycle(_: web.Application) -> AsyncIterator[None]:
            await dp.start(services.warm)
            try:
                yield
            finally:
                await dp.stop()

        app.cleanup_ctx.append(lifecycle)

    return mount


DATA_PLANE = web.AppKey("its_data_plane", plane.DataPlane)


if __name__ == "__main__":
    sys.exit(main())

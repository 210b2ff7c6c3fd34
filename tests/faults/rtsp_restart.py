"""Fault scenario: the RTSP server a camera streams from restarts.

A real runtime analyses a real RTSP camera (:class:`its_devenv.rtsp.RtspServer`, the
GStreamer server, on the same port before and after); the server is stopped for
``down_s`` and started again. ``recovery_s`` is the restart until the first frame
analysed after it; every crossing the runtime analysed must be stored exactly once.
"""

from __future__ import annotations

import asyncio
import pathlib
import tempfile
import time

from its_devenv import ports, rtsp
from its_runtime.dataplane.analytics.analyzer import CROSSING, FrameAnalysis
from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.kits import synth
from tests.dataplane.support import camera, crossings_in_db, eventually, runtime_config, serving
from tests.faults.redis_down import private_redis
from tests.faults.scenarios import Outcome, private_postgres


async def rtsp_restart(down_s: float) -> Outcome:
    reason = rtsp.unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    scene = synth.two_lane_scene(12.0)
    with (
        tempfile.TemporaryDirectory(prefix="its-faults-") as tmp,
        private_postgres() as pg,
        private_redis() as redis,
    ):
        video = await asyncio.to_thread(synth.encode_h264, scene, pathlib.Path(tmp) / "scene.ts")
        server = rtsp.RtspServer(video, ports.free_port())
        server.start()
        try:
            config = runtime_config([camera("cam-1", server.url)], journal_dir=pathlib.Path(tmp))
            env = {"ITS_DATABASE_DSN": pg.dsn, "ITS_REDIS_URL": redis.url}
            options = PipelineOptions(reconnect_initial_s=0.3, reconnect_max_s=1.0)
            analysed: list[FrameAnalysis] = []
            async with serving(config, env, options=options, listener=analysed.append) as (
                _,
                plane,
                _client,
            ):
                stats = plane.pipelines["cam-1"].stats
                assert await eventually(lambda: stats.frames_analysed > 60, 30)
                server.stop()
                assert await eventually(lambda: not stats.connected, 10)
                await asyncio.sleep(down_s)
                # Counted after the outage: frames still queued at the disconnect are
                # analysed during it and must not pass for frames of the new session.
                before = stats.frames_analysed
                await asyncio.to_thread(server.start)
                back_at = time.monotonic()
                ok = await eventually(lambda: stats.frames_analysed > before, 30, 0.01)
                recovery_s = time.monotonic() - back_at if ok else float("inf")
                await asyncio.sleep(2.0)
                reconnects = stats.reconnects
                assert plane.writer is not None
                await plane.writer.flush()
                assert await plane.writer.wait_drained(10)
                truth = sum(1 for a in list(analysed) for e in a.events if e.kind == CROSSING)
                stored = await crossings_in_db(pg.dsn)
        finally:
            server.stop()
    keys = {r["event_key"] for r in stored}
    return Outcome(
        name="rtsp_server_restart",
        lost=max(0, truth - len(keys)),
        duplicated=len(stored) - len(keys),
        recovery_s=round(recovery_s, 3),
        details={
            "down_s": down_s,
            "reconnects": reconnects,
            "crossings_analysed": truth,
            "frames_analysed": stats.frames_analysed,
        },
    )

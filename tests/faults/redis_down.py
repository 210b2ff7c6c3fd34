"""Fault scenario: Redis down under a serving runtime, then back.

A real runtime (the serving app with the data plane, one camera analysing a generated
video) answers ``/v1/cameras/{id}/counts`` at ~20 Hz from before Redis is killed until
after it returns. Every answer must be a 200 from L1 or PostgreSQL (never a 500), the
rows the camera analysed all land, and ``recovery_s`` is Redis back until L2 is up again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import aiohttp

from its_devenv import ports, procs
from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.kits import synth
from tests.dataplane.support import (
    MID_LINE,
    camera,
    crossings_in_db,
    eventually,
    runtime_config,
    serving,
)
from tests.faults.scenarios import Outcome, private_postgres


class PrivateRedis:
    """A throw-away ``redis-server`` on its own port; ``kill``/``start`` at will."""

    def __init__(self, root: pathlib.Path) -> None:
        self.port = ports.free_port()
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [redis_server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.proc = subprocess.Popen(
            [*argv, "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.wait_for("Redis", lambda: ports.port_open(self.port), timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="its-faults-redis-"))
    redis = PrivateRedis(root)
    try:
        redis.start()
        yield redis
    finally:
        redis.kill()
        shutil.rmtree(root, ignore_errors=True)


async def _poll_counts(
    client: aiohttp.ClientSession, statuses: collections.Counter[str], stop: asyncio.Event
) -> None:
    params = {"from": str(time.time() - 300), "to": str(time.time() + 600), "interval": "5m"}
    while not stop.is_set():
        async with client.get("/v1/cameras/cam-1/counts", params=params) as resp:
            await resp.read()
            statuses[f"{resp.status} {resp.headers.get('X-Cache', '-')}"] += 1
        await asyncio.sleep(0.05)


async def redis_down(down_s: float) -> Outcome:
    """Redis is killed for ``down_s`` while ``/counts`` is polled."""
    scene = synth.two_lane_scene(12.0)
    with tempfile.TemporaryDirectory(prefix="its-faults-") as tmp, private_postgres() as pg:
        video = synth.encode_h264(scene, pathlib.Path(tmp) / "scene.ts")
        with private_redis() as redis:
            config = runtime_config(
                [camera("cam-1", video.as_uri())], journal_dir=pathlib.Path(tmp)
            )
            env = {"ITS_DATABASE_DSN": pg.dsn, "ITS_REDIS_URL": redis.url}
            options = PipelineOptions(realtime=False, lossless=True)
            async with serving(config, env, options=options) as (_, plane, client):
                await asyncio.wait_for(plane.pipelines["cam-1"].finished.wait(), 30)
                assert plane.writer is not None
                assert plane.cache.l2 is not None
                l2 = plane.cache.l2
                assert await plane.writer.wait_drained(10)
                statuses: collections.Counter[str] = collections.Counter()
                stop = asyncio.Event()
                polling = asyncio.create_task(_poll_counts(client, statuses, stop))
                await asyncio.sleep(1.0)
                redis.kill()
                await asyncio.sleep(down_s)
                noticed_down = not l2.up
                redis.start()
                back_at = time.monotonic()
                up = await eventually(lambda: l2.up, 30, 0.02)
                recovery_s = time.monotonic() - back_at if up else float("inf")
                await asyncio.sleep(1.0)
                stop.set()
                await polling
            stored = await crossings_in_db(pg.dsn)
    expected = len(scene.crossings(MID_LINE))
    keys = {r["event_key"] for r in stored}
    return Outcome(
        name="redis_down",
        lost=max(0, expected - len(keys)),
        duplicated=len(stored) - len(keys),
        recovery_s=round(recovery_s, 3),
        details={
            "down_s": down_s,
            "l2_degraded_during_outage": noticed_down,
            "counts_answers": dict(statuses),
            "answers_5xx": sum(n for k, n in statuses.items() if k.startswith("5")),
        },
    )

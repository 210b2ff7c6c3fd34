"""Fault scenario: one master of a Redis Cluster is killed under ``/counts`` traffic.

A real runtime (the serving app with the data plane, one camera analysing a generated
video) uses a real three-master Redis Cluster (:mod:`its_devenv.redis_cluster`, no
replicas, ``cluster-node-timeout`` 1 s) as its L2, in ``cache.cluster: cluster`` mode
and with no L1 (``l1MaxEntries: 0``), so that every answer crosses L2.
``/v1/cameras/{id}/counts`` is polled at ~20 Hz while the master that owns the polled
key's slot is SIGKILLed (its slots have no owner; a second later the others say
``cluster_state:fail``) and, ``down_s`` later, restarted from its ``nodes.conf``.

Every answer must be a 200 (from L2, or from PostgreSQL while L2 is degraded; never a
5xx) whose crossing counts equal PostgreSQL's truth (the stored crossing events,
counted by line, direction and class); L2 must show as degraded during the outage and
serve again after it; the rows the camera analysed all land; and ``recovery_s`` is the
node's restart until L2 is healthy again.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import pathlib
import tempfile
import time
from typing import Any

import aiohttp
import asyncpg

from its_devenv import redis_cluster as devredis
from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.dataplane.store.queries import align
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

INTERVAL_S = 300
CrossingKey = tuple[str, str, str]  # line, direction, class


async def truth(dsn: str) -> dict[CrossingKey, int]:
    """The crossings stored in PostgreSQL, counted by line, direction and class."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT line, direction, class_name, count(*) AS n FROM traffic_events "
            "WHERE kind = 'crossing' GROUP BY line, direction, class_name"
        )
    finally:
        await conn.close()
    return {(r["line"], r["direction"], r["class_name"]): int(r["n"]) for r in rows}


def answered_crossings(body: dict[str, Any]) -> dict[CrossingKey, int]:
    """A counts body's window totals of crossings, by line, direction and class."""
    out: dict[CrossingKey, int] = collections.Counter()
    for item in body["totals"]["crossings"]:
        out[(item["line"], item["direction"], item["class"])] += item["count"]
    return dict(out)


class Poller:
    """Polls ``/counts`` with one fixed window (so one cache key) and checks each answer."""

    def __init__(self, client: aiohttp.ClientSession, expected: dict[CrossingKey, int]) -> None:
        now = time.time()
        self.start, self.end = now - 300, now + 600
        self.client = client
        self.expected = expected
        self.statuses: collections.Counter[str] = collections.Counter()
        self.wrong: list[dict[CrossingKey, int]] = []
        self.stop = asyncio.Event()
        #: Which part of the scenario the answers belong to, and their cache levels by it.
        self.phase = "before"
        self.levels: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def cache_key(self) -> str:
        """The L2 key of the polled answer (as ``CameraQueries.counts`` names it)."""
        utc = datetime.UTC
        start = align(datetime.datetime.fromtimestamp(self.start, utc), INTERVAL_S)
        end = align(datetime.datetime.fromtimestamp(self.end, utc), INTERVAL_S, up=True)
        return f"counts:cam-1:{int(start.timestamp())}:{int(end.timestamp())}:{INTERVAL_S}"

    async def run(self) -> None:
        params = {"from": str(self.start), "to": str(self.end), "interval": f"{INTERVAL_S}s"}
        while not self.stop.is_set():
            try:
                async with self.client.get("/v1/cameras/cam-1/counts", params=params) as resp:
                    body = await resp.read()
                    level = resp.headers.get("X-Cache", "-")
                    self.statuses[f"{resp.status} {level}"] += 1
                    self.levels[self.phase][level if resp.status == 200 else str(resp.status)] += 1
                    if resp.status == 200:
                        got = answered_crossings(json.loads(body))
                        if got != self.expected:
                            self.wrong.append(got)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.statuses[type(exc).__name__] += 1
            await asyncio.sleep(0.05)


async def redis_cluster_node_down(down_s: float) -> Outcome:
    """The master owning the polled key is SIGKILLed for ``down_s``, then restarted."""
    scene = synth.two_lane_scene(12.0)
    with tempfile.TemporaryDirectory(prefix="its-faults-") as tmp, private_postgres() as pg:
        video = synth.encode_h264(scene, pathlib.Path(tmp) / "scene.ts")
        with devredis.running(pathlib.Path(tmp) / "cluster") as cluster:
            # No L1: every answer crosses L2 (with one, L2 would be asked only when an L1
            # entry expires, and most of the outage would go unnoticed by the requests).
            cache = {
                "cluster": "cluster",
                "l1_max_entries": 0,
                "socket_timeout_ms": 100,
                "connect_timeout_ms": 100,
            }
            config = runtime_config(
                [camera("cam-1", video.as_uri())], journal_dir=pathlib.Path(tmp), cache=cache
            )
            env = {"ITS_DATABASE_DSN": pg.dsn, "ITS_REDIS_URL": cluster.url}
            options = PipelineOptions(realtime=False, lossless=True)
            async with serving(config, env, options=options) as (_, plane, client):
                await asyncio.wait_for(plane.pipelines["cam-1"].finished.wait(), 30)
                assert plane.writer is not None
                assert plane.cache.l2 is not None
                l2 = plane.cache.l2
                assert await plane.writer.wait_drained(10)
                assert await eventually(lambda: l2.up, 10), l2.details()
                expected = await truth(pg.dsn)
                poller = Poller(client, expected)
                victim = cluster.owners([l2.prefix + poller.cache_key()])[
                    l2.prefix + poller.cache_key()
                ]
                polling = asyncio.create_task(poller.run())
                await asyncio.sleep(1.0)
                served_before = poller.statuses.total()
                poller.phase = "down"
                await asyncio.to_thread(cluster.kill, victim)
                killed_at = time.monotonic()
                degraded = await eventually(lambda: not l2.up, down_s, 0.02)
                noticed_s = time.monotonic() - killed_at
                down_error = l2.last_error
                await asyncio.sleep(max(0.0, down_s - (time.monotonic() - killed_at)))
                state_while_down = (await asyncio.to_thread(cluster.info)).get("cluster_state")
                late_error = l2.last_error
                still_degraded = not l2.up
                back_at = time.monotonic()
                await asyncio.to_thread(cluster.restart, victim, wait=False)
                healing = asyncio.create_task(_healed_at(cluster))
                up = await eventually(lambda: l2.up, 30, 0.02)
                recovery_s = time.monotonic() - back_at if up else float("inf")
                healed_s = await healing - back_at
                poller.phase = "after"
                await asyncio.sleep(1.5)
                poller.stop.set()
                await polling
                l2_after = l2.details()
            stored = await crossings_in_db(pg.dsn)
    keys = {r["event_key"] for r in stored}
    statuses = dict(poller.statuses)
    return Outcome(
        name="redis_cluster_node_down",
        lost=max(0, len(scene.crossings(MID_LINE)) - len(keys)),
        duplicated=len(stored) - len(keys),
        recovery_s=round(recovery_s, 3),
        details={
            "down_s": down_s,
            "killed_node": f"127.0.0.1:{victim}",
            "cluster_state_while_down": state_while_down,
            "cluster_ok_after_restart_s": round(healed_s, 3),
            "l2_degraded_during_outage": degraded and still_degraded,
            "l2_degraded_after_s": round(noticed_s, 3),
            "l2_error_first": down_error,
            "l2_error_before_restart": late_error,
            "l2_after": l2_after["status"],
            "counts_answers": statuses,
            "answers_before_kill": served_before,
            "answers_by_phase": {k: dict(v) for k, v in poller.levels.items()},
            "answers_5xx": sum(n for k, n in statuses.items() if k.startswith("5")),
            "answers_not_http": sum(n for k, n in statuses.items() if not k[:1].isdigit()),
            "answers_wrong_counts": len(poller.wrong),
            "crossings_expected": sum(expected.values()),
        },
    )


async def _healed_at(cluster: devredis.RedisCluster) -> float:
    """When every node says ``cluster_state:ok`` again (monotonic clock)."""
    await asyncio.to_thread(cluster.wait_state, "ok")
    return time.monotonic()


if __name__ == "__main__":
    print(asyncio.run(redis_cluster_node_down(5.0)).line())

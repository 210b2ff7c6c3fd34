"""Acceptance of the data plane, end to end, against real PostgreSQL, Redis and RTSP.

Each test runs the real runtime application (``create_app``) with the data plane
mounted as an extension, frames going through the real dynamic batcher into the
hand-weighted torch detector, and talks to it over HTTP on a real port.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from its_devenv import services as devservices
from its_runtime.dataplane.analytics.analyzer import CROSSING, FrameAnalysis
from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.l2 import RedisL2
from its_runtime.dataplane.cache.tiered import TieredCache
from its_runtime.dataplane.camera import PipelineOptions
from its_runtime.dataplane.publish import latest_key
from its_runtime.kits import synth
from tests.dataplane.support import (
    MID_LINE,
    RtspServer,
    camera,
    crossings_in_db,
    eventually,
    runtime_config,
    serving,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]


def env(pg_dsn: str, redis_url: str) -> dict[str, str]:
    return {"ITS_DATABASE_DSN": pg_dsn, "ITS_REDIS_URL": redis_url}


async def db_totals(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM traffic_events) AS events,
                   (SELECT count(DISTINCT event_key) FROM traffic_events) AS distinct_events,
                   (SELECT coalesce(sum(n), 0) FROM interval_counts) AS aggregated,
                   (SELECT count(*) FROM detections) AS detections
            """
        )
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


# 1 ------------------------------------------------------------------------------------------


async def test_an_rtsp_stream_is_ingested_end_to_end_and_postgres_counts_match_the_truth(
    scene: synth.Scene,
    scene_video: pathlib.Path,
    rtsp_server: Callable[[pathlib.Path], RtspServer],
    pg_dsn: str,
    redis_url: str,
    tmp_path: pathlib.Path,
) -> None:
    server = rtsp_server(scene_video)
    config = runtime_config([camera("cam-1", server.url)], journal_dir=tmp_path)
    # Play the stream once: no reconnect (which would replay it) before the test ends.
    options = PipelineOptions(reconnect_initial_s=60.0)
    async with serving(config, env(pg_dsn, redis_url), options=options) as (_, plane, client):
        stats = plane.pipelines["cam-1"].stats
        assert await eventually(lambda: stats.frames_analysed > 0, 20)
        assert await eventually(lambda: stats.connections == 1 and not stats.connected, 40)
        assert plane.writer is not None
        assert await plane.writer.wait_drained(10)
        async with client.get(
            "/v1/cameras/cam-1/counts", params={"from": str(time.time() - 600), "interval": "1h"}
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
    truth = scene.crossings(MID_LINE)
    rows = await crossings_in_db(pg_dsn)
    assert [(r["class_name"], r["direction"]) for r in rows] == [
        (t.class_name, t.direction) for t in truth
    ]
    for row, t in zip(rows, truth, strict=True):
        assert abs(row["media_time"] - t.time) < 0.1
    expected: dict[tuple[str, str], int] = {}
    for t in truth:
        expected[(t.class_name, t.direction)] = expected.get((t.class_name, t.direction), 0) + 1
    assert {(c["class"], c["direction"]): c["count"] for c in body["totals"]["crossings"]} == (
        expected
    )
    assert stats.frames_analysed > 0.8 * scene.frame_count  # a live stream, few drops


# 2 ------------------------------------------------------------------------------------------


async def test_redis_stopped_mid_run_fails_no_request_and_is_used_again_when_back(
    services: devservices.Services,
    scene_video: pathlib.Path,
    pg_dsn: str,
    redis_url: str,
    tmp_path: pathlib.Path,
) -> None:
    config = runtime_config([camera("cam-1", scene_video.as_uri())], journal_dir=tmp_path)
    statuses: list[int] = []
    async with serving(config, env(pg_dsn, redis_url)) as (_, plane, client):
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                for path in ("/v1/cameras/cam-1/latest", "/v1/cameras/cam-1/counts"):
                    async with client.get(path) as resp:
                        statuses.append(resp.status)
                        await resp.read()
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll())
        try:
            assert await eventually(lambda: plane.pipelines["cam-1"].stats.frames_analysed > 30, 15)
            await asyncio.to_thread(services.stop_redis)
            await asyncio.sleep(1.5)
            async with client.get("/ready") as resp:
                ready = await resp.json()
            assert resp.status == 200
            assert ready["ready"] is True
            redis_dep = ready["dependencies"]["redis"]
            assert redis_dep["healthy"] is False
            assert redis_dep["required"] is False
            assert "degraded" in redis_dep["detail"]
            assert plane.cache.l2 is not None
            assert plane.cache.l2.errors > 0
            during = len(statuses)
            await asyncio.sleep(1.0)
            assert len(statuses) > during  # requests kept flowing while Redis was down
            await asyncio.to_thread(services.start_redis)
            assert await eventually(lambda: plane.cache.l2 is not None and plane.cache.l2.up, 10)
            async with client.get("/ready") as resp:
                assert (await resp.json())["dependencies"]["redis"]["healthy"] is True
        finally:
            stop.set()
            await poller
        # Redis is used again: the live view is republished there, and an L1 miss is
        # answered from L2.
        other_replica = TieredCache(L1Cache(10, 5.0), RedisL2(redis_url))
        try:
            assert await eventually_async(
                lambda: other_replica.get(latest_key("cam-1")), lambda r: r.level == "l2", 5
            )
        finally:
            assert other_replica.l2 is not None
            await other_replica.l2.close()
        plane.cache.l1.clear()
        async with client.get("/v1/cameras/cam-1/latest") as resp:
            assert resp.status == 200
            assert resp.headers["X-Cache"] == "l2"
    assert statuses
    assert set(statuses) == {200}


async def eventually_async(
    fetch: Callable[[], Any], check: Callable[[Any], bool], timeout_s: float
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check(await fetch()):
            return True
        await asyncio.sleep(0.1)
    return False


# 3 ------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_postgres_down_for_30_seconds_mid_run_loses_and_duplicates_no_event(
    services: devservices.Services,
    pg_dsn: str,
    redis_url: str,
    tmp_path: pathlib.Path,
) -> None:
    long_scene = synth.two_lane_scene(44.0)
    video = await asyncio.to_thread(synth.encode_h264, long_scene, tmp_path / "long.ts")
    config = runtime_config(
        [camera("cam-1", video.as_uri())],
        journal_dir=tmp_path / "journal",
        database={"acquire_timeout_s": 1.0},
    )
    analysed: list[FrameAnalysis] = []
    async with serving(config, env(pg_dsn, redis_url), listener=analysed.append) as (
        _,
        plane,
        client,
    ):
        pipeline = plane.pipelines["cam-1"]
        writer = plane.writer
        assert writer is not None
        assert await eventually(lambda: pipeline.stats.frames_analysed > 90, 20)
        await asyncio.to_thread(services.stop_postgres)
        down_at = time.monotonic()
        assert await eventually(lambda: writer.rows_spooled > 0, 5)
        async with client.get("/ready") as resp:
            ready = await resp.json()
        assert resp.status == 200
        assert ready["dependencies"]["database"]["healthy"] is False
        await asyncio.sleep(30 - (time.monotonic() - down_at))
        await asyncio.to_thread(services.start_postgres)
        await asyncio.wait_for(pipeline.finished.wait(), 30)
        assert await writer.wait_drained(30)
        details = writer.details()
    events = [e for a in analysed for e in a.events]
    totals = await db_totals(pg_dsn)
    assert details["rows_spooled"] > 0
    assert details["rows_replayed"] == details["rows_spooled"]
    assert details["rows_dropped"] == {}
    assert totals["events"] == totals["distinct_events"] == len(events)
    assert totals["aggregated"] == len(events)
    assert totals["detections"] == sum(len(a.tracks) for a in analysed)
    rows = await crossings_in_db(pg_dsn)
    truth = long_scene.crossings(MID_LINE)
    assert len([e for e in events if e.kind == CROSSING]) == len(rows) == len(truth)


# 4 ------------------------------------------------------------------------------------------


async def test_a_camera_that_disconnects_is_reconnected_and_keeps_being_counted(
    scene_video: pathlib.Path,
    rtsp_server: Callable[[pathlib.Path], RtspServer],
    pg_dsn: str,
    redis_url: str,
    tmp_path: pathlib.Path,
) -> None:
    server = rtsp_server(scene_video)
    config = runtime_config([camera("cam-1", server.url)], journal_dir=tmp_path)
    options = PipelineOptions(reconnect_initial_s=0.3, reconnect_max_s=1.0)
    async with serving(config, env(pg_dsn, redis_url), options=options) as (_, plane, client):
        stats = plane.pipelines["cam-1"].stats
        assert await eventually(lambda: stats.frames_analysed > 60, 20)
        server.stop()
        assert await eventually(lambda: not stats.connected, 10)
        async with client.get("/ready") as resp:
            ready = await resp.json()
        assert resp.status == 200
        assert ready["dependencies"]["cameras"]["healthy"] is False
        analysed_before = stats.frames_analysed
        await asyncio.sleep(1.0)
        server.start()
        assert await eventually(lambda: stats.connected and stats.reconnects >= 1, 20)
        assert await eventually(lambda: stats.frames_analysed > analysed_before + 60, 20)
        async with client.get("/v1/cameras/cam-1/latest") as resp:
            latest = json.loads(await resp.read())
        assert latest["stream"]["reconnects"] >= 1
        assert latest["stream"]["connected"] is True


# 5 ------------------------------------------------------------------------------------------


async def test_counts_and_latest_endpoints_answer_and_repeat_requests_hit_the_cache(
    scene: synth.Scene,
    scene_video: pathlib.Path,
    pg_dsn: str,
    redis_url: str,
    tmp_path: pathlib.Path,
) -> None:
    config = runtime_config([camera("cam-1", scene_video.as_uri())], journal_dir=tmp_path)
    options = PipelineOptions(realtime=False, lossless=True)
    async with serving(config, env(pg_dsn, redis_url), options=options) as (_, plane, client):
        await asyncio.wait_for(plane.pipelines["cam-1"].finished.wait(), 30)
        assert plane.writer is not None
        assert await plane.writer.wait_drained(10)
        params = {"from": str(time.time() - 300), "to": str(time.time() + 60), "interval": "5m"}
        caches = []
        bodies = []
        for _ in range(2):
            async with client.get("/v1/cameras/cam-1/counts", params=params) as resp:
                assert resp.status == 200
                caches.append(resp.headers["X-Cache"])
                bodies.append(await resp.json())
        assert caches == ["miss", "l1"]
        assert bodies[0] == bodies[1]
        plane.cache.l1.clear()  # as another replica would: Redis has it
        async with client.get("/v1/cameras/cam-1/counts", params=params) as resp:
            assert resp.headers["X-Cache"] == "l2"
        counted = sum(c["count"] for c in bodies[0]["totals"]["crossings"])
        assert counted == len(scene.crossings(MID_LINE))
        assert sum(bodies[0]["totals"]["objects"].values()) == len(scene.vehicles)

        async with client.get("/v1/cameras/cam-1/latest") as resp:
            assert resp.status == 200
            assert resp.headers["X-Cache"] in ("l1", "l2")
            latest = await resp.json()
        assert latest["source"] == "live"
        assert latest["stream"]["frames_analysed"] == scene.frame_count
        assert {t["class"] for t in latest["tracks"]} <= {"car", "truck"}

        # Without the live view (a camera this replica does not run), the database
        # answers, and the repeat is a cache hit.
        plane.cache.l1.clear()
        assert plane.cache.l2 is not None
        await plane.cache.l2.set_many({latest_key("cam-1"): b""}, 0.001)
        await asyncio.sleep(0.01)
        sources = []
        for _ in range(2):
            async with client.get("/v1/cameras/cam-1/latest") as resp:
                assert resp.status == 200
                sources.append((resp.headers["X-Cache"], (await resp.json())["source"]))
        assert sources == [("miss", "database"), ("l1", "database")]

        # The data plane's numbers are on the runtime's /metrics.
        async with client.get("/metrics") as resp:
            text = await resp.text()
        for sample in (
            'its_ingest_frames_total{camera="cam-1"}',
            'its_analytics_line_crossings_total{camera="cam-1",class_name="car",direction="in"',
            'its_cache_requests_total{level="l1",result="hit"}',
            'its_cache_requests_total{level="l2",result="hit"}',
            'its_db_pool_connections{state="open"}',
            "its_db_rows_written_total",
            "its_frame_to_row_seconds_bucket",
            "its_cache_l2_up 1.0",
            "its_db_up 1.0",
        ):
            assert sample in text, sample


async def test_bad_query_parameters_get_400_naming_the_field_and_unknown_cameras_404(
    scene_video: pathlib.Path, pg_dsn: str, redis_url: str, tmp_path: pathlib.Path
) -> None:
    config = runtime_config([camera("cam-1", scene_video.as_uri())], journal_dir=tmp_path)
    async with serving(config, env(pg_dsn, redis_url)) as (_, _plane, client):
        cases = [
            ({"interval": "7s"}, "interval"),
            ({"interval": "soon"}, "interval"),
            ({"from": "yesterday"}, "from"),
            ({"to": "2026-13-01T00:00:00"}, "to"),
            ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
            ({"from": "0", "to": "2000000000", "interval": "10s"}, "interval"),
            ({"limit": "5"}, "limit"),
        ]
        for params, field in cases:
            async with client.get("/v1/cameras/cam-1/counts", params=params) as resp:
                assert resp.status == 400, params
                error = (await resp.json())["error"]
                assert error["reason"] == "bad_request"
                assert field in error["message"], (params, error)
        async with client.get("/v1/cameras/nope/counts") as resp:
            assert resp.status == 404
            assert "nope" in (await resp.json())["error"]["message"]
        async with client.get("/v1/cameras/nope/latest") as resp:
            assert resp.status == 404

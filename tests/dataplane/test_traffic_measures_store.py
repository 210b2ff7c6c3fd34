"""Traffic measures go through the COPY path and come back as interval aggregates."""

from __future__ import annotations

import datetime
import json

import pytest

from its_runtime.config import DatabaseConfig
from its_runtime.dataplane import analysis_rows, counts_body
from its_runtime.dataplane.store import bulk, queries
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.rows import RowBatch
from tests.dataplane import traffic_scene as ts
from tests.dataplane.test_traffic_measures import (
    STOPPED,
    camera,
    ground_line,
    ground_polygon,
    queue_scene,
    receding,
)

pytestmark = pytest.mark.services


async def test_measures_are_stored_once_and_answered_per_interval(pg_dsn: str) -> None:
    lanes = [{"name": "a", "start": 0.0, "end": 0.5, "allowedDirection": "in"}]
    cam = camera(
        lines=[ground_line("stop", 30.0, lanes=lanes)],
        regions=[ground_polygon("approach", 0, 0, 10, 25, stopped=STOPPED)],
    )
    results = ts.run(cam, [*queue_scene()[:3], receding(2.5, 1.0)], 40.0)
    batch = RowBatch.of(analysis_rows.frame_rows(r, r.wall_time, detections=False) for r in results)
    db = Database(pg_dsn, DatabaseConfig())
    await db.connect()
    try:
        async with db.acquire() as conn:
            await bulk.write_batch(conn, batch)
            await bulk.write_batch(conn, RowBatch.decode(batch.encode()))  # a replay
            start = queries.align(datetime.datetime.fromtimestamp(1_000_000.0, datetime.UTC), 60)
            end = start + datetime.timedelta(seconds=120)
            rows = await queries.counts(conn, "cam", start, end, 60)
    finally:
        await db.close()
    body = json.loads(json.dumps(counts_body.build("cam", start, end, 60, rows)))
    totals = body["totals"]
    assert totals["crossings"] == [
        {"line": "stop", "lane": "a", "direction": "in", "class": "car", "count": 3,
         "mean_speed_kmh": pytest.approx(36.0, rel=0.05)},
        {"line": "stop", "lane": "a", "direction": "out", "class": "car", "count": 1,
         "mean_speed_kmh": pytest.approx(54.0, rel=0.05)},
    ]  # fmt: skip
    assert [(w["lane"], w["direction"]) for w in totals["wrong_way"]] == [("a", "out")]
    assert [s["count"] for s in totals["stopped_vehicles"]] == [3]
    queue = totals["queues"]["approach"]
    assert queue["max_vehicles"] == 3
    assert queue["max_length_m"] == pytest.approx(14.0, rel=0.05)
    assert sum(totals["congestion"]["seconds"].values()) == 40
    assert totals["congestion"]["seconds"]["congested"] >= 15  # stopped ~6 s to ~31 s

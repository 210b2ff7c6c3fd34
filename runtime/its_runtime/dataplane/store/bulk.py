"""Batched writes: binary COPY into a staging table, then one idempotent merge.

Plain ``COPY`` cannot skip rows that already exist, and replaying the journal (or a
batch whose commit acknowledgement was lost) must not duplicate anything. So each
pooled connection owns temporary staging tables (``ON COMMIT DELETE ROWS``, created
once in the pool's ``init``); a batch is COPYed there in binary and merged with
``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING`` in the same transaction. The
per-interval aggregates are bumped in that transaction from the ``RETURNING`` rows of
the merge, i.e. only from events that were really new: counts stay exact under
replay. Aggregate rows are locked in key order to avoid deadlocks between replicas.
Besides the count, each aggregate keeps the count, sum and maximum of the rows'
``value`` (a sample's value, or a crossing's speed), so intervals have means and peaks.

:func:`insert_rows_one_by_one` is the naive alternative, kept for the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from its_runtime.dataplane.store import rows, schema

_EVENT_STAGE = "_its_events_in"
_DETECTION_STAGE = "_its_detections_in"

_EVENT_COLS = ", ".join(rows.EVENT_COLUMNS)
_DETECTION_COLS = ", ".join(rows.DETECTION_COLUMNS)

_MERGE_EVENTS = f"""
WITH ins AS (
    INSERT INTO traffic_events ({_EVENT_COLS})
    SELECT {_EVENT_COLS} FROM {_EVENT_STAGE}
    ON CONFLICT (event_key) DO NOTHING
    RETURNING camera, ts, kind, line, direction, class_name, lane, region, destination,
              coalesce(value, speed_kmh) AS v
), agg AS (
    INSERT INTO interval_counts AS c
        (camera, bucket, kind, line, direction, class_name, lane, region, destination,
         n, valued, total, peak)
    SELECT camera,
           date_bin('{schema.BUCKET_SECONDS} seconds', ts, TIMESTAMPTZ '{schema.BUCKET_ORIGIN}'),
           kind, line, direction, class_name, lane, region, destination,
           count(*), count(v), coalesce(sum(v), 0), max(v)
    FROM ins
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (camera, bucket, kind, line, direction, class_name, lane, region, destination)
    DO UPDATE SET n = c.n + EXCLUDED.n, valued = c.valued + EXCLUDED.valued,
                  total = c.total + EXCLUDED.total, peak = greatest(c.peak, EXCLUDED.peak)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins)
"""

_MERGE_DETECTIONS = f"""
INSERT INTO detections ({_DETECTION_COLS})
SELECT {_DETECTION_COLS} FROM {_DETECTION_STAGE}
ON CONFLICT (det_key) DO NOTHING
"""


@dataclass(frozen=True)
class WriteResult:
    events: int
    detections: int


async def prepare_connection(conn: Any) -> None:
    """Pool ``init``: this connection's staging tables (they live as long as it does)."""
    await conn.execute(
        f"""
        CREATE TEMP TABLE IF NOT EXISTS {_EVENT_STAGE}
            (LIKE traffic_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS {_DETECTION_STAGE}
            (LIKE detections INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
        """
    )


async def write_batch(conn: Any, batch: rows.RowBatch) -> WriteResult:
    """Write a batch exactly once (idempotent); returns the rows that were new."""
    new_events = new_detections = 0
    async with conn.transaction():
        if batch.events:
            await conn.copy_records_to_table(
                _EVENT_STAGE, records=rows.copy_records(batch.events), columns=rows.EVENT_COLUMNS
            )
            new_events = int(await conn.fetchval(_MERGE_EVENTS))
        if batch.detections:
            await conn.copy_records_to_table(
                _DETECTION_STAGE,
                records=rows.copy_records(batch.detections),
                columns=rows.DETECTION_COLUMNS,
            )
            status = await conn.execute(_MERGE_DETECTIONS)
            new_detections = int(status.rsplit(" ", 1)[-1])
    return WriteResult(new_events, new_detections)


async def insert_rows_one_by_one(conn: Any, batch: rows.RowBatch) -> int:
    """The naive path (one INSERT per detection row, autocommit); for comparison only."""
    placeholders = ", ".join(f"${i + 1}" for i in range(len(rows.DETECTION_COLUMNS)))
    sql = (
        f"INSERT INTO detections ({_DETECTION_COLS}) VALUES ({placeholders}) "
        "ON CONFLICT (det_key) DO NOTHING"
    )
    for row in rows.copy_records(batch.detections):
        await conn.execute(sql, *row)
    return len(batch.detections)

"""Reads behind the query API, shaped for the indexes the schema defines.

Counts are sums of the stored 10-second buckets re-binned with ``date_bin`` onto the
requested interval's grid (same origin as the buckets), so a 60-second interval is
exactly six stored buckets and never splits one. The range scan is on the
``interval_counts`` primary key (camera, bucket, ...); latest events use the
(camera, ts) index of ``traffic_events`` (samples are not events, so they are left out).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from its_runtime.dataplane.store import schema

ORIGIN = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

_COUNTS = f"""
SELECT date_bin($4::interval, bucket, TIMESTAMPTZ '{schema.BUCKET_ORIGIN}') AS start,
       kind, line, direction, class_name, lane, region, destination,
       sum(n)::bigint AS n, sum(valued)::bigint AS valued, sum(total) AS total,
       max(peak) AS peak
FROM interval_counts
WHERE camera = $1 AND bucket >= $2 AND bucket < $3
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
"""

_LATEST_EVENTS = """
SELECT event_key, ts, media_time, kind, line, direction, class_name, track_id, speed_kmh,
       lane, region, destination, value
FROM traffic_events
WHERE camera = $1 AND kind NOT IN ('queue', 'queue_m', 'congestion')
ORDER BY ts DESC
LIMIT $2
"""


@dataclass(frozen=True)
class CountRow:
    start: datetime.datetime
    kind: str
    line: str
    direction: str
    class_name: str
    n: int
    lane: str = ""
    region: str = ""
    destination: str = ""
    #: Rows with a value (a sample's, or a crossing's speed), their sum and maximum.
    valued: int = 0
    total: float = 0.0
    peak: float | None = None

    @property
    def mean(self) -> float | None:
        return self.total / self.valued if self.valued else None


def align(ts: datetime.datetime, interval_s: int, *, up: bool = False) -> datetime.datetime:
    """``ts`` moved onto the interval grid (down, or up with ``up``)."""
    offset = (ts - ORIGIN).total_seconds()
    steps = offset // interval_s
    if up and offset % interval_s:
        steps += 1
    return ORIGIN + datetime.timedelta(seconds=steps * interval_s)


async def counts(
    conn: Any,
    camera: str,
    start: datetime.datetime,
    end: datetime.datetime,
    interval_s: int,
) -> list[CountRow]:
    """Counts per interval in [start, end), both already aligned to ``interval_s``."""
    records = await conn.fetch(_COUNTS, camera, start, end, datetime.timedelta(seconds=interval_s))
    return [
        CountRow(
            start=r["start"],
            kind=r["kind"],
            line=r["line"],
            direction=r["direction"],
            class_name=r["class_name"],
            n=int(r["n"]),
            lane=r["lane"],
            region=r["region"],
            destination=r["destination"],
            valued=int(r["valued"]),
            total=float(r["total"]),
            peak=None if r["peak"] is None else float(r["peak"]),
        )
        for r in records
    ]


async def latest_events(conn: Any, camera: str, limit: int = 20) -> list[dict[str, Any]]:
    records = await conn.fetch(_LATEST_EVENTS, camera, limit)
    return [
        {
            "event_key": str(r["event_key"]),
            "ts": r["ts"].isoformat(),
            "media_time": r["media_time"],
            "kind": r["kind"],
            "line": r["line"],
            "direction": r["direction"],
            "class": r["class_name"],
            "track_id": r["track_id"],
            "speed_kmh": r["speed_kmh"],
            **{k: r[k] for k in ("lane", "region", "destination") if r[k]},
            **({} if r["value"] is None else {"value": r["value"]}),
        }
        for r in records
    ]

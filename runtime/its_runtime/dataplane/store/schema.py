"""The database schema, as an ordered list of immutable, versioned migrations.

A migration is never edited once released: its checksum is recorded when applied,
and a mismatch stops the runtime with a clear error instead of leaving replicas on
silently different schemas. Changes go into a new, higher version.

Design of the tables:

* ``traffic_events``: line crossings and new objects, keyed by the idempotency key,
  indexed by (camera, ts) for the per-camera time-range queries.
* ``detections``: tracked boxes per analysed frame (what the events were derived
  from), same key and index scheme.
* ``interval_counts``: per-camera, per-10-second aggregates by kind, line, direction
  and class. Its primary key starts with (camera, bucket), so it is also the index
  for ``/counts``; coarser intervals are sums of these buckets. It is maintained in
  the same transaction as the events, from the rows actually inserted, so a replayed
  duplicate never counts twice.
* ``replica`` (migration 3) on events and detections: the runtime pod that analysed
  the frame, so a count can be traced to the replica that held the camera then.
* Traffic measures (migration 4): events gain the kinds ``wrong_way``,
  ``stopped_vehicle``, ``od`` (turning movement) and the once-a-second samples
  ``queue``, ``queue_m`` and ``congestion``, and the columns ``lane``, ``region``,
  ``destination`` and ``value``. The aggregates are keyed by those too and also keep
  ``valued`` (rows with a value or speed), ``total`` (their sum) and ``peak`` (their
  maximum), so an interval answers mean queue length, mean crossing speed and
  seconds spent at each congestion level from the same table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

#: Width of the stored aggregate buckets; query intervals must be multiples of it.
BUCKET_SECONDS = 10
#: The grid origin of all buckets and query intervals (UTC).
BUCKET_ORIGIN = "2000-01-01 00:00:00+00"
#: pg_advisory_xact_lock key for migrations ("its-migr" as an int64).
MIGRATION_LOCK_KEY = int.from_bytes(b"its-migr", "big") & ((1 << 63) - 1)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "traffic events and detections",
        """
        CREATE TABLE traffic_events (
            event_key   uuid PRIMARY KEY,
            camera      text NOT NULL,
            ts          timestamptz NOT NULL,
            media_time  double precision,
            kind        text NOT NULL CHECK (kind IN ('crossing', 'object')),
            line        text NOT NULL DEFAULT '',
            direction   text NOT NULL DEFAULT '',
            class_name  text NOT NULL,
            track_id    bigint NOT NULL,
            speed_kmh   real,
            frame_seq   bigint NOT NULL,
            written_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX traffic_events_camera_ts ON traffic_events (camera, ts);

        CREATE TABLE detections (
            det_key     uuid PRIMARY KEY,
            camera      text NOT NULL,
            ts          timestamptz NOT NULL,
            frame_seq   bigint NOT NULL,
            track_id    bigint NOT NULL,
            class_name  text NOT NULL,
            score       real NOT NULL,
            x1 real NOT NULL, y1 real NOT NULL, x2 real NOT NULL, y2 real NOT NULL,
            speed_kmh   real,
            written_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX detections_camera_ts ON detections (camera, ts);
        """,
    ),
    Migration(
        2,
        "per-interval aggregates",
        """
        CREATE TABLE interval_counts (
            camera      text NOT NULL,
            bucket      timestamptz NOT NULL,
            kind        text NOT NULL,
            line        text NOT NULL,
            direction   text NOT NULL,
            class_name  text NOT NULL,
            n           bigint NOT NULL,
            PRIMARY KEY (camera, bucket, kind, line, direction, class_name)
        );
        """,
    ),
    Migration(
        3,
        "the replica that produced each row",
        """
        ALTER TABLE traffic_events ADD COLUMN replica text NOT NULL DEFAULT '';
        ALTER TABLE detections ADD COLUMN replica text NOT NULL DEFAULT '';
        """,
    ),
    Migration(
        4,
        "traffic measures: lanes, wrong way, stops, queues, movements, congestion",
        """
        ALTER TABLE traffic_events DROP CONSTRAINT traffic_events_kind_check;
        ALTER TABLE traffic_events ADD CONSTRAINT traffic_events_kind_check CHECK (kind IN (
            'crossing', 'object', 'wrong_way', 'stopped_vehicle', 'od',
            'queue', 'queue_m', 'congestion'));
        ALTER TABLE traffic_events
            ADD COLUMN lane        text NOT NULL DEFAULT '',
            ADD COLUMN region      text NOT NULL DEFAULT '',
            ADD COLUMN destination text NOT NULL DEFAULT '',
            ADD COLUMN value       real;
        ALTER TABLE interval_counts
            ADD COLUMN lane        text NOT NULL DEFAULT '',
            ADD COLUMN region      text NOT NULL DEFAULT '',
            ADD COLUMN destination text NOT NULL DEFAULT '',
            ADD COLUMN valued      bigint NOT NULL DEFAULT 0,
            ADD COLUMN total       double precision NOT NULL DEFAULT 0,
            ADD COLUMN peak        real;
        ALTER TABLE interval_counts DROP CONSTRAINT interval_counts_pkey;
        ALTER TABLE interval_counts ADD PRIMARY KEY
            (camera, bucket, kind, line, direction, class_name, lane, region, destination);
        """,
    ),
)

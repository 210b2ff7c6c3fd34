"""PostgreSQL persistence: migrations, pool settings, idempotent COPY, the journal."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
import time

import asyncpg
import pytest

from its_devenv import services as devservices
from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store import bulk, migrations, schema
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.journal import Journal, JournalLockedError
from its_runtime.dataplane.store.rows import DetectionRow, EventRow, FrameRows, RowBatch
from its_runtime.dataplane.store.writer import RowWriter
from tests.dataplane.support import eventually


def frame_rows(camera: str, seq: int, *, at: float | None = None, events: int = 1) -> FrameRows:
    ts = time.time() if at is None else at
    return FrameRows(
        decoded_at=ts,
        events=[
            EventRow.new(
                camera=camera,
                ts=ts,
                media_time=seq / 30,
                kind="crossing",
                line="mid",
                direction="in",
                class_name="car",
                track_id=i,
                speed_kmh=42.0,
                frame_seq=seq,
            )
            for i in range(events)
        ],
        detections=[
            DetectionRow.new(
                camera=camera,
                ts=ts,
                frame_seq=seq,
                track_id=1,
                class_name="car",
                score=0.9,
                box=(0.1, 0.2, 0.3, 0.4),
                speed_kmh=None,
            ),
            DetectionRow.new(
                camera=camera,
                ts=ts,
                frame_seq=seq,
                track_id=2,
                class_name="truck",
                score=0.8,
                box=(0.5, 0.2, 0.7, 0.4),
                speed_kmh=50.0,
            ),
        ],
    )


async def table_counts(dsn: str) -> tuple[int, int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM traffic_events"),
            await conn.fetchval("SELECT count(DISTINCT event_key) FROM traffic_events"),
            await conn.fetchval("SELECT count(*) FROM detections"),
            await conn.fetchval("SELECT coalesce(sum(n), 0) FROM interval_counts"),
        )
    finally:
        await conn.close()


# -- migrations --------------------------------------------------------------------------


@pytest.mark.services
async def test_replicas_starting_together_apply_each_migration_exactly_once(pg_dsn: str) -> None:
    conns = [await asyncpg.connect(pg_dsn) for _ in range(6)]
    try:
        applied = await asyncio.gather(*(migrations.migrate(c) for c in conns))
        assert sorted(v for a in applied for v in a) == [m.version for m in schema.MIGRATIONS]
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in schema.MIGRATIONS]
        assert await migrations.migrate(conns[0]) == []  # a restart applies nothing
    finally:
        for c in conns:
            await c.close()


@pytest.mark.services
async def test_a_released_migration_that_was_edited_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrations.migrate(conn)
        edited = (
            dataclasses.replace(schema.MIGRATIONS[0], sql="SELECT 1"),
            *schema.MIGRATIONS[1:],
        )
        with pytest.raises(migrations.MigrationError, match="migration 1"):
            await migrations.migrate(conn, edited)
        known = ", ".join(str(m.version) for m in schema.MIGRATIONS)
        with pytest.raises(migrations.MigrationError, match=re.escape(f"[{known}]")):
            await migrations.migrate(conn, ())
    finally:
        await conn.close()


# -- pool ---------------------------------------------------------------------------------


@pytest.mark.services
async def test_pool_sizes_timeouts_and_session_settings_come_from_the_config(
    pg_dsn: str,
) -> None:
    config = DatabaseConfig(
        pool_min_size=2,
        pool_max_size=3,
        acquire_timeout_s=0.3,
        statement_timeout_ms=700,
        lock_timeout_ms=567,
        idle_in_transaction_timeout_ms=8901,
    )
    db = Database(pg_dsn, config)
    await db.connect()
    try:
        assert db.pool_stats() == {"open": 2, "idle": 2, "in_use": 0, "max": 3}
        for _ in range(2):  # the settings survive the pool's reset between uses
            async with db.acquire() as conn:
                assert await conn.fetchval("SHOW statement_timeout") == "700ms"
                assert await conn.fetchval("SHOW lock_timeout") == "567ms"
                assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "8901ms"
                with pytest.raises(asyncpg.QueryCanceledError):
                    await conn.execute("SELECT pg_sleep(2)")
        async with db.acquire(), db.acquire(), db.acquire():
            assert db.pool_stats()["in_use"] == 3
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                async with db.acquire():
                    pass
            assert 0.25 < time.monotonic() - start < 2.0
    finally:
        await db.close()


# -- idempotent COPY ----------------------------------------------------------------------


@pytest.mark.services
async def test_a_batch_written_twice_is_stored_and_counted_once(pg_dsn: str) -> None:
    db = Database(pg_dsn, DatabaseConfig())
    await db.connect()
    try:
        batch = RowBatch.of(frame_rows("cam-a", seq, events=2) for seq in range(50))
        # A replayed duplicate inside the same batch must not count either.
        batch.events.append(batch.events[0])
        async with db.acquire() as conn:
            first = await bulk.write_batch(conn, batch)
            again = await bulk.write_batch(conn, RowBatch.decode(batch.encode()))
        assert (first.events, first.detections) == (100, 100)
        assert (again.events, again.detections) == (0, 0)
        assert await table_counts(pg_dsn) == (100, 100, 100, 100)
    finally:
        await db.close()


# -- journal --------------------------------------------------------------------------------


def test_a_full_journal_drops_the_oldest_rows_and_counts_them(tmp_path: pathlib.Path) -> None:
    journal = Journal(tmp_path, max_bytes=4096, segment_bytes=1024, fsync=False)
    dropped = 0
    for i in range(60):
        dropped += journal.append(f"record-{i:04d}".encode() * 10, rows=10).rows
    assert journal.size_bytes <= 4096
    assert dropped > 0
    assert dropped + journal.rows == 600  # every row is kept or counted
    kept = []
    while (segment := journal.oldest()) is not None:
        records, damaged = journal.read(segment)
        assert damaged == 0
        kept += [int(payload[7:11]) for payload, _ in records]
        journal.remove(segment)
    assert kept == list(range(60 - len(kept), 60))  # the newest survive, in order
    journal.close()


def test_the_journal_survives_a_restart_and_stops_at_a_torn_record(
    tmp_path: pathlib.Path,
) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        journal.append(RowBatch.of([frame_rows("cam", i)]).encode(), rows=3)
    journal.close()
    segment_file = next(tmp_path.glob("*.jnl"))
    data = segment_file.read_bytes()
    segment_file.write_bytes(data[:-20])  # power cut in the middle of the last write

    reopened = Journal(tmp_path, max_bytes=1 << 20)
    assert reopened.rows == 6
    segment = reopened.oldest()
    assert segment is not None
    records, damaged = reopened.read(segment)
    assert [RowBatch.decode(p).events[0].frame_seq for p, _ in records] == [0, 1]
    assert damaged == 3  # the torn record's rows, known from its intact header
    # New appends go to a new segment, never after the torn tail.
    reopened.append(b"x" * 10, rows=1)
    assert len(list(tmp_path.glob("*.jnl"))) == 2
    reopened.close()


def test_a_journal_directory_has_one_owner(tmp_path: pathlib.Path) -> None:
    first = Journal(tmp_path, max_bytes=1 << 20)
    try:
        with pytest.raises(JournalLockedError, match="in use"):
            Journal(tmp_path, max_bytes=1 << 20)
    finally:
        first.close()
    Journal(tmp_path, max_bytes=1 << 20).close()


# -- outage ---------------------------------------------------------------------------------


@pytest.mark.services
async def test_rows_written_during_an_outage_are_journalled_then_replayed_exactly_once(
    services: devservices.Services, pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    config = DatabaseConfig(
        batch_max_rows=50, flush_interval_s=0.1, acquire_timeout_s=1.0, journal_dir=str(tmp_path)
    )
    db = Database(pg_dsn, config)
    await db.connect()
    journal = Journal(tmp_path, config.journal_max_bytes)
    writer = RowWriter(db, journal, config, recovery_backoff=Backoff(initial_s=0.2, max_s=0.5))
    writer.start()
    seq = 0

    async def produce(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            writer.submit(frame_rows("cam-b", seq))
            seq += 1
            await asyncio.sleep(0.005)

    try:
        await produce(40)
        await asyncio.to_thread(services.stop_postgres)
        await produce(80)  # the database is gone: these spool to disk
        assert await eventually(lambda: writer.rows_spooled > 0, 5)
        assert not db.up
        await asyncio.to_thread(services.start_postgres)
        await produce(40)
        assert await writer.wait_drained(30)
    finally:
        await writer.close()
        await db.close()
        journal.close()
    assert writer.rows_replayed == writer.rows_spooled
    assert writer.rows_dropped == {}
    assert await table_counts(pg_dsn) == (160, 160, 320, 160)

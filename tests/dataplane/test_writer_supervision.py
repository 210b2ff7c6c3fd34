"""The row writer never stops silently: a full disk, bad rows and bugs cost only what they must.

Against the real PostgreSQL of the test services. An outage is a shut
:class:`~tests.dataplane.pg_gate.PgGate` in front of it (the shared server keeps
running); a full disk is the real ``EFBIG`` of ``RLIMIT_FSIZE`` in a process of its
own (:mod:`tests.dataplane.writer_disk_full`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pathlib
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store import classify
from its_runtime.dataplane.store.database import Database, DatabaseUnavailableError
from its_runtime.dataplane.store.deadletter import DeadLetters
from its_runtime.dataplane.store.journal import Journal
from its_runtime.dataplane.store.rows import FrameRows, RowBatch
from its_runtime.dataplane.store.writer import RowWriter
from its_runtime.observability.metrics import REGISTRY
from tests.dataplane.pg_gate import PgGate
from tests.dataplane.support import eventually
from tests.dataplane.test_store import frame_rows, table_counts

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = DatabaseConfig(batch_max_rows=500, flush_interval_s=0.05, acquire_timeout_s=1.0)


def dead_lettered_metric(table: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "its_rows_dead_lettered_total", {"table": table, "reason": reason}
    )
    return value or 0.0


def spoil_event(rows: FrameRows, how: str) -> FrameRows:
    """The frame with its event made into one the database (or asyncpg) must refuse."""
    event = rows.events[0]
    bad = {
        "check_violation": event._replace(kind="no-such-kind"),  # CHECK (kind IN ...)
        "nul_byte": event._replace(class_name="car\x00"),  # text cannot hold NUL
        "client_data_error": event._replace(track_id=2**70),  # not an int8: asyncpg
        "nan_time": event._replace(ts=math.nan),  # not a datetime (Python side)
    }[how]
    rows.events[0] = bad
    return rows


def writer_for(
    db: Database, journal: Journal, tmp_path: pathlib.Path, config: DatabaseConfig = CONFIG
) -> RowWriter:
    return RowWriter(
        db,
        journal,
        config,
        recovery_backoff=Backoff(initial_s=0.1, max_s=0.3),
        dead_letters=DeadLetters(tmp_path / "dead-letters.jsonl"),
    )


# -- classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), classify.Failure.OUTAGE),
        (TimeoutError(), classify.Failure.OUTAGE),
        (DatabaseUnavailableError("not reached yet"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.DiskFullError("server disk full"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.InterfaceError("connection is closed"), classify.Failure.OUTAGE),
        (asyncpg.exceptions.CheckViolationError("check"), classify.Failure.BAD_DATA),
        (asyncpg.exceptions.UniqueViolationError("dup"), classify.Failure.BAD_DATA),
        (asyncpg.exceptions.CharacterNotInRepertoireError("NUL"), classify.Failure.BAD_DATA),
        (asyncpg.exceptions._base.DataError("client side"), classify.Failure.BAD_DATA),
        (ValueError("year is out of range"), classify.Failure.BAD_DATA),
        (RuntimeError("a bug"), classify.Failure.UNKNOWN),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.value,
)
def test_errors_are_classified_as_outage_bad_data_or_unknown(
    exc: BaseException, kind: classify.Failure
) -> None:
    assert classify.classify(exc) is kind


def test_an_error_text_never_carries_the_dsn_password() -> None:
    exc = OSError("could not connect to postgresql://its:s3cret-pass@db:5432/its")
    assert "s3cret" not in classify.describe(exc)


# -- bad rows ---------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize("how", ["check_violation", "nul_byte", "client_data_error", "nan_time"])
async def test_one_bad_row_is_dead_lettered_and_every_good_row_of_its_batch_lands(
    pg_dsn: str, tmp_path: pathlib.Path, how: str
) -> None:
    db = Database(pg_dsn, CONFIG)
    await db.connect()
    journal = Journal(tmp_path / "journal", CONFIG.journal_max_bytes)
    writer = writer_for(db, journal, tmp_path)
    reason_before = {r: dead_lettered_metric("traffic_events", r) for r in _REASONS}
    writer.start()
    try:
        for seq in range(40):  # one batch: 40 frames, the 20th with a bad event
            rows = frame_rows("cam-bad", seq)
            writer.submit(spoil_event(rows, how) if seq == 20 else rows)
        await writer.flush()
        for seq in range(40, 50):  # and the batches after it are not held up
            writer.submit(frame_rows("cam-bad", seq))
        assert await writer.wait_drained(10)
        health = writer.health()
    finally:
        await writer.close()
        await db.close()
        journal.close()
    events, _, detections, counted = await table_counts(pg_dsn)
    assert (events, detections, counted) == (49, 100, 49)  # all but the one bad row
    letters = writer.delivery.dead_letters.read()
    assert len(letters) == 1
    assert letters[0]["table"] == "traffic_events"
    assert letters[0]["row"]["frame_seq"] == 20
    reason = letters[0]["reason"]
    assert dead_lettered_metric("traffic_events", reason) - reason_before.get(reason, 0) == 1
    assert writer.rows_dropped == {}
    assert writer.rows_spooled == 0
    assert health.healthy
    assert "1 rows dead-lettered" in health.detail


_REASONS = (
    "CheckViolationError",
    "CharacterNotInRepertoireError",
    "DataError",
    "ValueError",
    "OverflowError",
)


@pytest.mark.services
async def test_a_bad_batch_already_in_the_journal_is_replayed_once_and_blocks_nothing(
    pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    journal_dir = tmp_path / "journal"
    old = Journal(journal_dir, CONFIG.journal_max_bytes)  # spooled by an older runtime
    bad = RowBatch.of(
        spoil_event(frame_rows("cam-j", s), "client_data_error")
        if s == 3
        else frame_rows("cam-j", s)
        for s in range(10)
    )
    old.append(bad.encode(), len(bad))
    good = RowBatch.of(frame_rows("cam-j", s) for s in range(10, 20))
    old.append(good.encode(), len(good))
    old.close()

    db = Database(pg_dsn, CONFIG)
    await db.connect()
    journal = Journal(journal_dir, CONFIG.journal_max_bytes)
    writer = writer_for(db, journal, tmp_path)
    writer.start()
    try:
        for seq in range(20, 30):
            writer.submit(frame_rows("cam-j", seq))
        assert await writer.wait_drained(10), writer.details()
        assert db.up
    finally:
        await writer.close()
        await db.close()
        journal.close()
    events, _, detections, _ = await table_counts(pg_dsn)
    assert (events, detections) == (29, 60)
    assert journal.empty
    assert not list(journal_dir.glob("*.jnl"))
    assert [d["row"]["frame_seq"] for d in writer.delivery.dead_letters.read()] == [3]


# -- outages ----------------------------------------------------------------------------


@pytest.mark.services
async def test_a_refused_connection_is_an_outage_journalled_and_replayed_not_dead_lettered(
    pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    gate = PgGate(pg_dsn)
    await gate.open()
    db = Database(gate.dsn, CONFIG)
    await db.connect()
    journal = Journal(tmp_path / "journal", CONFIG.journal_max_bytes)
    writer = writer_for(db, journal, tmp_path)
    writer.start()
    try:
        await gate.shut()
        for seq in range(30):
            writer.submit(frame_rows("cam-o", seq))
        assert await eventually(lambda: writer.rows_spooled == 90, 10)
        health = writer.health()
        assert not health.healthy
        assert health.detail.startswith("degraded, journalling")
        assert "its:" not in health.detail  # no credentials in /ready
        await gate.open()
        assert await writer.wait_drained(15)
    finally:
        await writer.close()
        await db.close()
        journal.close()
        await gate.shut()
    assert (await table_counts(pg_dsn))[0] == 30
    assert writer.rows_replayed == 90
    assert writer.delivery.dead_letters.read() == []


@pytest.mark.services
async def test_an_unexpected_error_is_shown_while_live_rows_keep_landing(
    pg_dsn: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_dir = tmp_path / "journal"
    old = Journal(journal_dir, CONFIG.journal_max_bytes)
    spooled = RowBatch.of(frame_rows("cam-u", s) for s in range(5))
    old.append(spooled.encode(), len(spooled))
    old.close()
    journal = Journal(journal_dir, CONFIG.journal_max_bytes)
    failures = {"left": 3}
    real_read = journal.read

    def flaky_read(segment: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("controller reset on the journal volume")
        return real_read(segment)

    monkeypatch.setattr(journal, "read", flaky_read)
    db = Database(pg_dsn, CONFIG)
    await db.connect()
    writer = writer_for(db, journal, tmp_path)
    writer.start()
    seen: list[str] = []
    try:
        for seq in range(5, 25):
            writer.submit(frame_rows("cam-u", seq))
            seen.append(writer.health().detail)
            await asyncio.sleep(0.02)
        assert any("failing: journal replay failed: RuntimeError" in d for d in seen), seen
        assert await writer.wait_drained(15)
        assert writer.health().detail == "ok"
    finally:
        await writer.close()
        await db.close()
        journal.close()
    assert (await table_counts(pg_dsn))[0] == 25
    assert writer.supervisor.running is False  # closed on request, not crashed


@pytest.mark.services
@pytest.mark.slow
def test_a_full_disk_during_an_outage_counts_lost_rows_and_writing_resumes(
    pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.dataplane.writer_disk_full", pg_dsn, str(tmp_path), "16384"],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    during = out["during"]
    assert out["written_before"]
    assert during["running"], "the writer task died"
    assert during["spooled"] > 0
    assert during["lost"] > 0
    assert during["lost_metric"] == during["lost"]
    assert not during["healthy"]
    assert during["detail"].startswith("failing:"), during["detail"]
    assert "File too large" in during["detail"]
    assert f"{during['lost']} rows lost" in during["detail"]
    assert out["drained"], "writing did not resume when the database came back"
    assert out["after"] == {"healthy": True, "detail": "ok"}
    assert out["replayed"] == out["spooled"]
    events, _, detections, _ = asyncio.run(table_counts(pg_dsn))
    lost = sum(out["dropped"].values())
    assert events + detections == out["submitted_rows"] - lost, out

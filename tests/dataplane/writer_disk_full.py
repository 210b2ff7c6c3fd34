"""A disk-full journal while PostgreSQL is unreachable, run in a process of its own.

``python -m tests.dataplane.writer_disk_full DSN ROOT LIMIT`` limits the size of every
file this process writes to ``LIMIT`` bytes (``RLIMIT_FSIZE``, with ``SIGXFSZ``
ignored: a write past it fails with the real ``EFBIG``, as on a full volume) and then
runs the row writer through: rows written; the database gone (a shut
:class:`~tests.dataplane.pg_gate.PgGate`) while the journal fills up and stops
taking writes; the database back. It prints what it saw as one JSON object; the
test (``test_writer_supervision.py``) holds it to what a user must see. A process of
its own because the limit is per process: the test runner itself must still write.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import resource
import signal
import sys
from typing import Any

from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.journal import Journal
from its_runtime.dataplane.store.writer import RowWriter
from its_runtime.observability.metrics import REGISTRY
from tests.dataplane.pg_gate import PgGate
from tests.dataplane.support import eventually
from tests.dataplane.test_store import frame_rows

ROWS_PER_FRAME = 3  # frame_rows: one event, two detections


async def scenario(dsn: str, root: pathlib.Path, limit: int) -> dict[str, Any]:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    gate = PgGate(dsn)
    await gate.open()
    config = DatabaseConfig(
        batch_max_rows=30, flush_interval_s=0.05, acquire_timeout_s=1.0, journal_dir=str(root)
    )
    db = Database(gate.dsn, config)
    await db.connect()
    # The journal believes it has 1 MiB; the file system refuses past ``limit``.
    journal = Journal(root / "pod-a", max_bytes=1 << 20)
    writer = RowWriter(db, journal, config, recovery_backoff=Backoff(initial_s=0.1, max_s=0.3))
    writer.start()
    out: dict[str, Any] = {"frames": 0}

    def produce(n: int) -> None:
        for _ in range(n):
            writer.submit(frame_rows("cam-full", out["frames"]))
            out["frames"] += 1

    try:
        produce(20)
        out["written_before"] = await eventually(lambda: writer.rows_written == 60, 10)
        await gate.shut()
        for _ in range(600):  # the database is gone: spool until the disk is full
            produce(1)
            await asyncio.sleep(0.005)
            if writer.rows_dropped.get("journal_unwritable", 0) >= 60:
                break
        await asyncio.sleep(0.3)
        during = _health(writer, db)
        out["during"] = {
            "running": _running(writer),
            "healthy": during.healthy,
            "detail": during.detail,
            "spooled": writer.rows_spooled,
            "lost": writer.rows_dropped.get("journal_unwritable", 0),
            "lost_metric": REGISTRY.get_sample_value(
                "its_journal_dropped_rows_total", {"reason": "journal_unwritable"}
            ),
        }
        await gate.open()
        produce(20)
        out["drained"] = await writer.wait_drained(20)
        after = _health(writer, db)
        out["after"] = {"healthy": after.healthy, "detail": after.detail}
    finally:
        await writer.close()
        await db.close()
        journal.close()
        await gate.shut()
    out.update(
        submitted_rows=out["frames"] * ROWS_PER_FRAME,
        written=writer.rows_written,
        spooled=writer.rows_spooled,
        replayed=writer.rows_replayed,
        dropped=writer.rows_dropped,
    )
    return out


def _running(writer: RowWriter) -> bool:
    supervisor = getattr(writer, "supervisor", None)  # absent before supervision
    task = supervisor.task if supervisor is not None else getattr(writer, "_task", None)
    return task is not None and not task.done()


def _health(writer: RowWriter, db: Database) -> Any:
    if hasattr(writer, "health"):
        return writer.health()
    # Before supervision /ready's entry was the database's flag and the journal size.
    detail = "ok" if db.up else f"degraded, journalling ({writer.journal.rows} rows spooled)"
    return type("Health", (), {"healthy": db.up, "detail": detail})()


if __name__ == "__main__":
    result = asyncio.run(scenario(sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps(result))

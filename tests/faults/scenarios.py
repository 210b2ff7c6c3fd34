"""Fault scenarios shared by the fault tests and ``benchmarks/faults.py``.

Each scenario breaks a real server that it started itself (never the shared
PostgreSQL/Redis other tests use), keeps the runtime's row path busy through the
fault, and compares what reached PostgreSQL with the ground truth of what the
runtime analysed: every row submitted, by key. It returns a :class:`Outcome` with
what was lost and duplicated (both must be 0) and how long recovery took; the tests
run it with short durations and assert, the benchmark runs it with the issue's
durations and writes the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg

from its_devenv import ports
from its_devenv import services as devservices
from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store.adoption import Adoption, pod_journal
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.journal import Journal
from its_runtime.dataplane.store.rows import DetectionRow, EventRow, FrameRows
from its_runtime.dataplane.store.writer import RowWriter


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one fault cost: the ``scenarios`` entry of ``faults.json``."""

    name: str
    lost: int
    duplicated: int
    recovery_s: float
    details: dict[str, Any]

    def line(self) -> str:
        return (
            f"[fault] {self.name}: lost={self.lost} duplicated={self.duplicated} "
            f"recovery_s={self.recovery_s:.2f} {self.details}"
        )


# -- a private PostgreSQL -----------------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL on its own port and data directory, to stop at will.

    Same binaries and settings as :mod:`its_devenv.services`; run as the ``postgres``
    user when we are root (PostgreSQL refuses root), in a folder that user can reach.
    """

    def __init__(self) -> None:
        self.port = ports.free_port()
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="its-faults-pg-", dir="/var/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{devservices.PG_USER}@127.0.0.1:{self.port}/its"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        user = "postgres" if os.geteuid() == 0 else None
        return subprocess.run(argv, user=user, text=True, capture_output=True, cwd="/", timeout=90)

    def init(self) -> None:
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
        bin_dir = devservices.pg_bin_dir()
        argv = [str(bin_dir / "initdb"), "-D", str(self.data), "-U", devservices.PG_USER]
        proc = self._run([*argv, "--auth=trust", "--encoding=UTF8", "--no-sync"])
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stderr}")
        self.start()
        psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        proc = self._run(
            [*psql, "-U", devservices.PG_USER, "-d", "postgres", "-c", "CREATE DATABASE its"]
        )
        if proc.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {proc.stderr}")

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.data} -c fsync=off -c synchronous_commit=off"
        )
        pg_ctl = str(devservices.pg_bin_dir() / "pg_ctl")
        proc = self._run(
            [pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start"]
        )
        if proc.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {proc.stderr}")

    def stop(self) -> None:
        pg_ctl = str(devservices.pg_bin_dir() / "pg_ctl")
        self._run([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.init()
        yield pg
    finally:
        pg.remove()


# -- a runtime replica's row path ---------------------------------------------------------


def frame_rows(camera: str, seq: int) -> FrameRows:
    """One analysed frame: a line crossing and two detections."""
    ts = time.time()
    event = EventRow.new(
        camera=camera, ts=ts, media_time=seq / 30, kind="crossing", line="mid",
        direction="in", class_name="car", track_id=seq, speed_kmh=40.0, frame_seq=seq,
    )  # fmt: skip
    detections = [
        DetectionRow.new(
            camera=camera,
            ts=ts,
            frame_seq=seq,
            track_id=i,
            class_name="car",
            score=0.9,
            box=(0.1, 0.2, 0.3, 0.4),
            speed_kmh=None,
        )
        for i in range(2)
    ]
    return FrameRows(decoded_at=ts, events=[event], detections=detections)


@contextlib.asynccontextmanager
async def replica(dsn: str, root: pathlib.Path, pod: str) -> AsyncIterator[RowWriter]:
    """A runtime pod's writer on the shared journal volume, adopting dead pods' journals.

    Starts whether or not the database answers (as a pod scheduled during an outage
    does); leaving the block is the pod's graceful shutdown: pending rows are written
    or journalled, and the journal's lock is released.
    """
    config = DatabaseConfig(
        batch_max_rows=50, flush_interval_s=0.05, acquire_timeout_s=1.0, journal_dir=str(root)
    )
    db = Database(dsn, config)
    try:
        await asyncio.wait_for(db.connect(), 3)
    except Exception as exc:  # the outage: the writer journals and probes with backoff
        db.mark_down(exc)
    journal: Journal = pod_journal(root, pod, config.journal_max_bytes)
    writer = RowWriter(
        db,
        journal,
        config,
        orphans=Adoption.beside(journal, scan_interval_s=0.2),
        recovery_backoff=Backoff(initial_s=0.2, max_s=0.5),
    )
    writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await db.close()
        journal.close()


async def stored_events(dsn: str) -> tuple[int, set[str], int]:
    """(event rows, distinct event keys, detection rows) in PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT event_key::text AS k FROM traffic_events")
        detections = await conn.fetchval("SELECT count(*) FROM detections")
        return len(rows), {r["k"].replace("-", "") for r in rows}, int(detections)
    finally:
        await conn.close()


class Camera:
    """Feeds analysed frames to whichever replica is current; the ground truth."""

    def __init__(self, name: str, fps: float) -> None:
        self.name, self.interval_s = name, 1 / fps
        self.keys: set[str] = set()
        self.target: RowWriter | None = None
        self._seq = 0

    async def run(self) -> None:
        while True:
            if self.target is not None:
                rows = frame_rows(self.name, self._seq)
                self._seq += 1
                self.keys.add(rows.events[0].event_key.hex)
                self.target.submit(rows)
            await asyncio.sleep(self.interval_s)


# -- (1) PostgreSQL down, with a pod deleted in the middle --------------------------------


async def postgres_down_with_pod_deletion(down_s: float, *, fps: float = 60.0) -> Outcome:
    """PostgreSQL stops for ``down_s``; half-way, pod A is deleted and pod B replaces it.

    A journals while the database is down and is shut down gracefully (the deletion);
    B starts during the outage and, once PostgreSQL returns, replays its own journal
    and adopts A's. ``recovery_s``: PostgreSQL back until every analysed row is stored.
    """
    with private_postgres() as pg:
        root = pathlib.Path(tempfile.mkdtemp(prefix="its-faults-journal-"))
        camera = Camera("cam-fault", fps)
        feeding = asyncio.create_task(camera.run())
        try:
            async with replica(pg.dsn, root, "ring-road-a") as a:
                camera.target = a
                await asyncio.sleep(1.0)
                await asyncio.to_thread(pg.stop)
                down_at = time.monotonic()
                await asyncio.sleep(down_s / 2)
                camera.target = None  # the pod is deleted: its camera moves with it
            deleted_after_s = time.monotonic() - down_at
            async with replica(pg.dsn, root, "ring-road-b") as b:
                camera.target = b
                await asyncio.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
                await asyncio.to_thread(pg.start)
                back_at = time.monotonic()
                recovery_s = await _until_stored(pg.dsn, camera, timeout_s=60 + down_s)
                camera.target = None
                await b.flush()
                assert await b.wait_drained(30)
                details_b = b.details()
            events, keys, detections = await stored_events(pg.dsn)
            left = sorted(await asyncio.to_thread(os.listdir, root))
        finally:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
            shutil.rmtree(root, ignore_errors=True)
    return Outcome(
        name="postgres_down_with_pod_deletion",
        lost=len(camera.keys - keys),
        duplicated=(events - len(keys)) + (detections - 2 * events),
        recovery_s=round(recovery_s, 3),
        details={
            "down_s": round(back_at - down_at, 2),
            "pod_deleted_after_s": round(deleted_after_s, 2),
            "rows_analysed": len(camera.keys) * 3,
            "events_stored": events,
            "adopted_journals": details_b["adopted_journals"],
            "adopted_rows_replayed": details_b["adopted_rows_replayed"],
            "journals_left": left,
        },
    )


async def _until_stored(dsn: str, camera: Camera, timeout_s: float) -> float:
    """Seconds until PostgreSQL holds every key the camera analysed up to now."""
    start = time.monotonic()
    want = set(camera.keys)
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            if want <= (await stored_events(dsn))[1]:
                return time.monotonic() - start
        await asyncio.sleep(0.1)
    return float("inf")

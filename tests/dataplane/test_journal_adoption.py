"""Rows survive the pod: orphaned journals on a shared root are adopted and replayed.

Real files, real ``flock`` between real processes, real PostgreSQL. A "pod" that dies
is a child process killed with SIGKILL (the kernel drops its lock, as it does for a
deleted pod); a live or SIGSTOP-ed owner is a child process that keeps its journal
open. Rows are counted by key in PostgreSQL: every journalled row lands exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from its_devenv import services as devservices
from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store import bulk
from its_runtime.dataplane.store.adoption import (
    Adoption,
    owner_name,
    pod_directory_name,
    pod_journal,
)
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.journal import Journal, JournalLockedError, segment_files
from its_runtime.dataplane.store.rows import DetectionRow, EventRow, FrameRows, RowBatch
from its_runtime.dataplane.store.writer import RowWriter
from its_runtime.observability import metrics
from tests.dataplane.support import eventually

REPO = pathlib.Path(__file__).resolve().parents[2]
_HEADER = struct.Struct("<IIII")  # the journal's record header: magic, length, rows, crc32

#: A runtime pod's row path in a child process. ``spool``: the database is down, so
#: every row goes to its journal; it prints SPOOLED and waits to be killed. ``hold``:
#: it just keeps its journal (with rows in it) open, as a live owner does.
POD = r"""
import asyncio, json, sys, time
from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store.adoption import pod_journal
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.rows import DetectionRow, EventRow, FrameRows, RowBatch
from its_runtime.dataplane.store.writer import RowWriter

mode, dsn, root, pod, frames, keys_path = sys.argv[1:]

def frame(seq):
    ts = time.time()
    event = EventRow.new(camera="cam-" + pod, ts=ts, media_time=seq / 30, kind="crossing",
                         line="mid", direction="in", class_name="car", track_id=seq,
                         speed_kmh=40.0, frame_seq=seq)
    dets = [DetectionRow.new(camera="cam-" + pod, ts=ts, frame_seq=seq, track_id=i,
                             class_name="car", score=0.9, box=(0.1, 0.2, 0.3, 0.4),
                             speed_kmh=None) for i in range(2)]
    return FrameRows(decoded_at=ts, events=[event], detections=dets)

async def main():
    config = DatabaseConfig(batch_max_rows=30, flush_interval_s=0.05, acquire_timeout_s=1.0,
                            journal_dir=root)
    rows = [frame(seq) for seq in range(int(frames))]
    with open(keys_path, "w") as f:
        json.dump([r.events[0].event_key.hex for r in rows], f)
    journal = pod_journal(root, pod, config.journal_max_bytes, segment_bytes=8192)
    if mode == "hold":
        for i in range(0, len(rows), 10):
            batch = RowBatch.of(rows[i : i + 10])
            journal.append(batch.encode(), len(batch))
        print("READY", journal.rows, flush=True)
        await asyncio.sleep(3600)
    db = Database(dsn, config)
    try:
        await asyncio.wait_for(db.connect(), 2)
    except Exception as exc:
        db.mark_down(exc)
    assert not db.up, "the database should be down for this pod"
    writer = RowWriter(db, journal, config, recovery_backoff=Backoff(initial_s=60, max_s=60))
    writer.start()
    for r in rows:
        writer.submit(r)
        await asyncio.sleep(0.001)
    await writer.flush()
    print("SPOOLED", writer.rows_spooled, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


# -- helpers ------------------------------------------------------------------------------


def frame_rows(camera: str, seq: int) -> FrameRows:
    ts = time.time()
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
                track_id=seq,
                speed_kmh=40.0,
                frame_seq=seq,
            )
        ],
        detections=[
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
        ],
    )


def orphan(
    root: pathlib.Path, pod: str, batches: int, *, per_batch: int = 5, segment_bytes: int = 8192
) -> list[RowBatch]:
    """A dead pod's journal: ``batches`` records written, then the owner is gone."""
    journal = pod_journal(root, pod, 1 << 30, segment_bytes=segment_bytes, fsync=False)
    out = []
    for b in range(batches):
        batch = RowBatch.of(frame_rows(f"cam-{pod}", b * per_batch + i) for i in range(per_batch))
        journal.append(batch.encode(), len(batch))
        out.append(batch)
    journal.close()
    return out


def event_keys(batches: list[RowBatch]) -> set[str]:
    return {r.event_key.hex for b in batches for r in b.events}


async def stored(dsn: str) -> tuple[int, set[str], int, int]:
    """(event rows, distinct event keys, detection rows, interval count total)."""
    conn = await asyncpg.connect(dsn)
    try:
        keys = {r["k"] for r in await conn.fetch("SELECT event_key::text AS k FROM traffic_events")}
        return (
            await conn.fetchval("SELECT count(*) FROM traffic_events"),
            {k.replace("-", "") for k in keys},
            await conn.fetchval("SELECT count(*) FROM detections"),
            await conn.fetchval("SELECT coalesce(sum(n), 0) FROM interval_counts"),
        )
    finally:
        await conn.close()


def config_for(root: pathlib.Path) -> DatabaseConfig:
    return DatabaseConfig(
        batch_max_rows=50, flush_interval_s=0.05, acquire_timeout_s=1.0, journal_dir=str(root)
    )


@contextlib.asynccontextmanager
async def adopting_writer(
    dsn: str, root: pathlib.Path, pod: str, *, scan_interval_s: float = 0.1
) -> AsyncIterator[RowWriter]:
    """A live pod's writer (database up) that adopts orphans under ``root``."""
    config = config_for(root)
    db = Database(dsn, config)
    await db.connect()
    journal = pod_journal(root, pod, config.journal_max_bytes)
    orphans = Adoption.beside(journal, scan_interval_s=scan_interval_s)
    writer = RowWriter(
        db, journal, config, orphans=orphans, recovery_backoff=Backoff(initial_s=0.2, max_s=0.5)
    )
    writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await db.close()
        journal.close()


def adoption_of(writer: RowWriter) -> Adoption:
    assert writer.orphans is not None
    return writer.orphans


class Pod:
    """A runtime pod's row path in a child process (see :data:`POD`)."""

    def __init__(self, mode: str, dsn: str, root: pathlib.Path, name: str, frames: int) -> None:
        self.keys_path = root.parent / f"{name}.keys.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                POD,
                mode,
                dsn,
                str(root),
                name,
                str(frames),
                str(self.keys_path),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def wait_for(self, word: str, timeout_s: float = 60) -> int:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout_s)
        if not line.startswith(word):
            self.kill()
            assert self.proc.stderr is not None
            pytest.fail(f"pod said {line!r}: {self.proc.stderr.read()[-3000:]}")
        return int(line.split()[1])

    def keys(self) -> set[str]:
        return set(json.loads(self.keys_path.read_text()))

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no cleanup, the kernel releases the lock
        self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        with contextlib.suppress(ProcessLookupError):
            pod.send(signal.SIGCONT)
        pod.close()


def adopted_rows_metric() -> float:
    return metrics.REGISTRY.get_sample_value("its_journal_adopted_rows_total") or 0.0


# -- (a) a pod killed during an outage ----------------------------------------------------


@pytest.mark.services
async def test_a_pod_killed_during_an_outage_has_its_rows_adopted_exactly_once(
    services: devservices.Services, pg_dsn: str, tmp_path: pathlib.Path, pods: list[Pod]
) -> None:
    root = tmp_path / "journal"
    dead, survivor = "ring-road-6f7c9d-x2k4q", "ring-road-6f7c9d-h8w3n"
    await asyncio.to_thread(services.stop_postgres)
    try:
        pod = Pod("spool", pg_dsn, root, dead, frames=120)
        pods.append(pod)
        assert await pod.wait_for("SPOOLED") == 360  # 120 frames x (1 event + 2 detections)
        pod.kill()  # deleted during the outage: nothing flushed, nothing replayed
    finally:
        await asyncio.to_thread(services.start_postgres)
    assert segment_files(root / dead), "the dead pod's journal is on the shared volume"
    metric_before = adopted_rows_metric()

    async with adopting_writer(pg_dsn, root, survivor) as writer:
        assert await eventually(
            lambda: not (root / dead).exists() and adoption_of(writer).current is None, 30
        )
        details = writer.details()
    assert details["adopted_journals"] == 1
    assert details["adopted_rows_replayed"] == 360
    assert details["rows_dropped"] == {}
    assert adopted_rows_metric() - metric_before == 360
    events, keys, detections, counted = await stored(pg_dsn)
    assert keys == pod.keys()  # every row of the dead pod, by key
    assert (events, detections, counted) == (120, 240, 120)  # and each exactly once
    assert sorted(p.name for p in root.iterdir()) == [survivor]


# -- (b) a live owner is never adopted ----------------------------------------------------


@pytest.mark.services
async def test_a_live_or_stopped_owners_journal_is_never_adopted(
    pg_dsn: str, tmp_path: pathlib.Path, pods: list[Pod]
) -> None:
    root = tmp_path / "journal"
    owner = Pod("hold", pg_dsn, root, "ring-road-live-1", frames=60)
    pods.append(owner)
    assert await owner.wait_for("READY") == 180
    files = sorted(segment_files(root / "ring-road-live-1"))

    async with adopting_writer(pg_dsn, root, "ring-road-live-2", scan_interval_s=0.05) as writer:
        orphans = adoption_of(writer)
        assert await eventually(lambda: orphans.scans >= 5, 10)
        owner.send(signal.SIGSTOP)  # frozen, not dead: it still holds the lock
        scans = orphans.scans
        assert await eventually(lambda: orphans.scans >= scans + 5, 10)
        assert orphans.journals_adopted == 0
        assert sorted(segment_files(root / "ring-road-live-1")) == files
        assert (await stored(pg_dsn))[0] == 0

        owner.send(signal.SIGCONT)
        owner.kill()  # now it is gone: its journal is an orphan
        assert await eventually(lambda: not (root / "ring-road-live-1").exists(), 30)
    assert orphans.journals_adopted == 1
    events, keys, detections, _ = await stored(pg_dsn)
    assert (events, keys, detections) == (60, owner.keys(), 120)


# -- (c) two adopters racing --------------------------------------------------------------


@pytest.mark.services
async def test_two_adopters_racing_store_every_row_once_and_only_one_adopts(
    pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    root = tmp_path / "journal"
    batches = orphan(root, "ring-road-gone", batches=40, segment_bytes=16384)
    assert len(segment_files(root / "ring-road-gone")) > 3
    # An earlier adopter committed the first two batches, then died before it deleted
    # their segment: replaying them again must not store them twice.
    config = config_for(root)
    db = Database(pg_dsn, config)
    await db.connect()
    async with db.acquire() as conn:
        for batch in batches[:2]:
            await bulk.write_batch(conn, batch)
    await db.close()

    async with (
        adopting_writer(pg_dsn, root, "ring-road-a", scan_interval_s=0.02) as a,
        adopting_writer(pg_dsn, root, "ring-road-b", scan_interval_s=0.02) as b,
    ):
        assert await eventually(lambda: not (root / "ring-road-gone").exists(), 30)
        assert await eventually(
            lambda: adoption_of(a).current is None and adoption_of(b).current is None, 10
        )
        assert adoption_of(a).scans >= 1  # both tried
        assert adoption_of(b).scans >= 1
    assert adoption_of(a).journals_adopted + adoption_of(b).journals_adopted == 1
    assert a.replay.rows_adopted + b.replay.rows_adopted == 40 * 15
    events, keys, detections, counted = await stored(pg_dsn)
    assert keys == event_keys(batches)
    assert (events, detections, counted) == (200, 400, 200)


def test_of_many_simultaneous_adopters_exactly_one_gets_the_journal(
    tmp_path: pathlib.Path,
) -> None:
    def adopt(adoption: Adoption, start: threading.Barrier, got: list[Journal]) -> None:
        start.wait()
        journal = adoption.adopt_next()
        if journal is not None:
            got.append(journal)

    for round_ in range(20):
        root = tmp_path / f"r{round_}"
        orphan(root, "gone", batches=2)
        adopters = [Adoption(root, own=root / f"live-{i}") for i in range(8)]
        start = threading.Barrier(len(adopters))
        got: list[Journal] = []
        threads = [threading.Thread(target=adopt, args=(a, start, got)) for a in adopters]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 1, round_
        assert got[0].rows == 30
        got[0].close()


# -- (d) a damaged orphan -----------------------------------------------------------------


def record_offsets(path: pathlib.Path) -> list[tuple[int, int]]:
    """(offset, rows) of each record of an intact segment file."""
    data, out, offset = path.read_bytes(), [], 0
    while offset < len(data):
        _, length, rows, _ = _HEADER.unpack_from(data, offset)
        out.append((offset, rows))
        offset += _HEADER.size + length
    return out


@pytest.mark.services
async def test_damaged_records_of_an_orphan_are_counted_and_the_rest_is_replayed(
    pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    root = tmp_path / "journal"
    batches = orphan(root, "ring-road-damaged", batches=12, per_batch=4, segment_bytes=8192)
    files = segment_files(root / "ring-road-damaged")
    assert len(files) >= 2
    first, last = files[0], files[-1]
    # A flipped byte inside the second record of the first segment (bad checksum)...
    offsets = record_offsets(first)
    data = bytearray(first.read_bytes())
    data[offsets[1][0] + _HEADER.size + 10] ^= 0xFF
    first.write_bytes(bytes(data))
    # ... and a torn last write at the end of the last one.
    torn_offset, torn_rows = record_offsets(last)[-1]
    last.write_bytes(last.read_bytes()[:-7])
    records_first = len(offsets)
    records_before_last = sum(len(record_offsets(f)) for f in files[:-1])
    lost = {1, records_before_last + len(record_offsets(last)) - 1}
    assert torn_offset > 0
    assert torn_rows == 12
    # ... and a record whose checksum holds but whose payload is not a row batch.
    garbage = pod_journal(root, "ring-road-damaged", 1 << 30, fsync=False)
    garbage.append(b'{"not": "rows"}', rows=7)
    garbage.close()
    assert records_first > 2

    async with adopting_writer(pg_dsn, root, "ring-road-ok") as writer:
        assert await eventually(lambda: not (root / "ring-road-damaged").exists(), 30)
        details = writer.details()
    assert details["rows_dropped"] == {"corrupt": 12 + 12 + 7}
    kept = [b for i, b in enumerate(batches) if i not in lost]
    assert details["adopted_rows_replayed"] == 12 * len(kept)
    events, keys, detections, _ = await stored(pg_dsn)
    assert keys == event_keys(kept)  # records after the damaged one were replayed too
    assert (events, detections) == (4 * len(kept), 8 * len(kept))


def test_a_damaged_record_in_the_middle_costs_only_its_own_rows(tmp_path: pathlib.Path) -> None:
    journal = Journal(tmp_path, 1 << 20, fsync=False)
    for i in range(5):
        journal.append(RowBatch.of([frame_rows("cam", i)]).encode(), rows=3)
    journal.close()
    segment = segment_files(tmp_path)[0]
    offsets = record_offsets(segment)
    data = bytearray(segment.read_bytes())
    data[offsets[2][0] + 1] ^= 0xFF  # the middle record's header (its magic) is damaged
    segment.write_bytes(bytes(data))

    reopened = Journal(tmp_path, 1 << 20, fsync=False)
    assert reopened.rows == 12
    assert not reopened.empty
    first = reopened.oldest()
    assert first is not None
    records, damaged = reopened.read(first)
    assert [RowBatch.decode(p).events[0].frame_seq for p, _ in records] == [0, 1, 3, 4]
    assert damaged == 0
    assert reopened.corrupt_records == 1
    reopened.close()


def test_a_segment_with_only_a_damaged_record_is_read_before_it_is_deleted(
    tmp_path: pathlib.Path,
) -> None:
    journal = Journal(tmp_path, 1 << 20, fsync=False)
    journal.append(RowBatch.of([frame_rows("cam", 0)]).encode(), rows=3)
    journal.close()
    segment = segment_files(tmp_path)[0]
    segment.write_bytes(segment.read_bytes()[:-5])  # its only record is torn

    reopened = Journal(tmp_path, 1 << 20, fsync=False)
    assert not reopened.empty  # the loss must still be read (and counted) once
    first = reopened.oldest()
    assert first is not None
    assert reopened.read(first) == ([], 3)
    reopened.remove(first)
    assert reopened.empty
    reopened.close()


# -- (e) the old layout -------------------------------------------------------------------


@pytest.mark.services
async def test_segments_of_the_old_layout_in_the_root_are_adopted(
    pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    root = tmp_path / "journal"
    old = Journal(root, 1 << 30, fsync=False)  # the single journal of an older runtime
    batches = [RowBatch.of(frame_rows("cam-old", b * 5 + i) for i in range(5)) for b in range(8)]
    for batch in batches:
        old.append(batch.encode(), len(batch))

    async with adopting_writer(pg_dsn, root, "ring-road-new", scan_interval_s=0.05) as writer:
        orphans = adoption_of(writer)
        # While the older runtime still runs (a rollout in progress) it keeps its rows.
        assert await eventually(lambda: orphans.scans >= 5, 10)
        assert orphans.journals_adopted == 0
        old.close()
        assert await eventually(lambda: not segment_files(root) and orphans.current is None, 30)
        assert writer.details()["adopted_rows_replayed"] == 120
    events, keys, detections, _ = await stored(pg_dsn)
    assert (events, keys, detections) == (40, event_keys(batches), 80)
    assert (root / "ring-road-new").is_dir()  # the root and the live journal stay


# -- the per-pod layout -------------------------------------------------------------------


def test_pod_names_become_safe_distinct_directory_names() -> None:
    for pod in ("ring-road-6f7c9d-x2k4q", "its-runtime-0", "node1.example.com"):
        assert pod_directory_name(pod) == pod  # Kubernetes pod and host names as they are
    odd = ["", ".", "..", "../etc", "a/b", "a/../b", ".hidden", "LOCK", "x.jnl", "é", "a" * 300]
    names = [pod_directory_name(p) for p in odd]
    assert len(set(names)) == len(odd)
    for name in names:
        assert "/" not in name
        assert not name.startswith(".")
        assert ".." not in name
        assert 0 < len(name.encode()) <= 200
        assert name not in ("LOCK",)
        assert "~" in name
    assert pod_directory_name("a/b") == pod_directory_name("a/b")  # stable across restarts
    assert owner_name({"POD_NAME": "ring-road-abc"}) == "ring-road-abc"
    assert owner_name({}) != ""


def test_a_pod_whose_directory_is_being_adopted_takes_a_fallback(tmp_path: pathlib.Path) -> None:
    adopter = Journal(tmp_path / "pod-a", 1 << 20)  # a sibling replays the old journal
    try:
        restarted = pod_journal(tmp_path, "pod-a", 1 << 20)
        assert restarted.directory == tmp_path / "pod-a~1"
        with pytest.raises(JournalLockedError):
            Journal(tmp_path / "pod-a~1", 1 << 20)
        restarted.close()
    finally:
        adopter.close()


def test_empty_orphan_directories_are_cleaned_only_once_settled(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pod-new").mkdir()  # a pod that is creating its journal right now
    fresh = Adoption(tmp_path, own=tmp_path / "me", settle_s=60)
    assert fresh.adopt_next() is None
    assert (tmp_path / "pod-new").is_dir()
    settled = Adoption(tmp_path, own=tmp_path / "me", settle_s=0)
    assert settled.adopt_next() is None
    assert not (tmp_path / "pod-new").exists()
    assert settled.directories_removed == 1
    assert settled.journals_adopted == 0


def test_an_adopter_never_recreates_a_directory_another_one_removed(
    tmp_path: pathlib.Path,
) -> None:
    orphan(tmp_path, "gone", batches=1)
    adoption = Adoption(tmp_path, own=tmp_path / "me")
    winner = adoption.try_adopt(tmp_path / "gone")
    assert winner is not None
    while (segment := winner.oldest()) is not None:
        winner.remove(segment)
    assert winner.discard()
    assert Adoption(tmp_path).try_adopt(tmp_path / "gone") is None
    assert not (tmp_path / "gone").exists()
    with pytest.raises(FileNotFoundError):
        Journal(tmp_path / "gone", 1 << 20, create=False)

"""A bounded on-disk journal that holds row batches while the database is down.

Shape and guarantees:

* **Segments.** Records are appended to the newest of several segment files; a
  segment is replayed and then deleted as a whole. Segments are small (a quarter of
  the cap at most), so the cap can be kept by deleting whole old segments.
* **Bounded, oldest dropped first, always counted.** When appending would pass
  ``max_bytes``, the oldest segments are deleted and their rows counted as dropped
  (the newest data is the most valuable to traffic operators, and the count makes the
  loss visible instead of silent). A single record larger than the cap is dropped
  and counted too.
* **Crash-safe.** Each record is ``magic, length, rows, crc32`` then the payload, and
  appends are fsynced. A torn tail (power cut mid-write) or a damaged record costs
  only its own rows (counted; the scan resumes at the next intact record), never the
  rest. The journal is found again at start, so rows spooled before a restart are
  replayed after it. An append that fails (disk full: ``ENOSPC``, ``EFBIG``) raises
  ``OSError`` after cutting its partial bytes off again, so the segment stays intact
  and later appends still work once there is room; the writer counts those rows.
* **One owner.** An exclusive ``flock`` on the directory's lock file stops two
  processes from replaying (or deleting) each other's segments. After taking it, the
  owner checks that the lock file it locked is still the one at that path (an adopter
  may have just removed the directory), and retries otherwise.

**Layout: one journal per pod under a shared root.** ``database.journalDir`` is the
*root*, a volume all replicas of a pipeline share; each process keeps its journal in
``<root>/<pod>/`` and the journals of pods that are gone are adopted by the others
(:mod:`.adoption` describes the layout and the protocol). This class is one such
directory; ``create=False`` opens one without making it (an adopter's open), and
:meth:`Journal.discard` removes a replayed one.

The class is synchronous on purpose (plain file I/O); the writer calls it from a
worker thread and never concurrently.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pathlib
import struct
import zlib
from dataclasses import dataclass

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIII")  # magic, payload length, rows, crc32
_MAGIC = 0x4A535449  # "ITSJ"
_MAGIC_BYTES = struct.pack("<I", _MAGIC)
SUFFIX = ".jnl"
LOCK_NAME = "LOCK"
_LOCK_ATTEMPTS = 5


def segment_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The segment files directly in ``directory`` (none if it is gone)."""
    try:
        return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.is_file())
    except OSError:
        return []


class JournalLockedError(RuntimeError):
    """Another process owns this journal directory."""


@dataclass
class Segment:
    seq: int
    path: pathlib.Path
    size: int = 0
    rows: int = 0
    records: int = 0
    #: Ends in a damaged record (found when the journal was opened): it must still be
    #: read once, so that the loss is counted, before it is deleted.
    damaged: bool = False

    @property
    def pending(self) -> bool:
        return self.records > 0 or self.damaged


@dataclass(frozen=True)
class Dropped:
    rows: int
    records: int


class Journal:
    def __init__(
        self,
        directory: str | pathlib.Path,
        max_bytes: int,
        *,
        segment_bytes: int | None = None,
        fsync: bool = True,
        create: bool = True,
    ) -> None:
        """Open (``create``: and make) the journal in ``directory`` and lock it.

        Raises :class:`JournalLockedError` when another open journal holds the lock,
        and (``create=False``) :class:`FileNotFoundError` when the directory is gone.
        """
        self.directory = pathlib.Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(512, max_bytes // 4)
        self._fsync = fsync
        self._lock_fd = self._lock(create)
        self._segments: list[Segment] = []
        self._sealed_through = 0  # segments with seq <= this are not appended to
        self.corrupt_records = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            segment = Segment(seq, path, size=path.stat().st_size)
            records, _, regions = self._scan(segment)
            if regions:
                log.warning("journal segment %s holds %d damaged record(s)", path.name, regions)
            segment.records = len(records)
            segment.rows = sum(rows for _, rows in records)
            segment.damaged = regions > 0
            self._segments.append(segment)
        if self._segments:
            self._sealed_through = self._segments[-1].seq  # never append to an old file
        self.closed = False

    # -- state ----------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def empty(self) -> bool:
        return not any(s.pending for s in self._segments)

    def close(self) -> None:
        if not self.closed:
            os.close(self._lock_fd)
            self.closed = True

    def discard(self, *, directory: bool = True) -> bool:
        """Delete the (empty) segments, and the directory too; unlock. True when gone.

        Only for a journal with nothing left to replay (an adopted orphan); raises
        otherwise. ``directory=False`` keeps the directory and its lock file (the root,
        when it held the older single-journal layout). The lock file is unlinked while
        still locked, so a process that opened it meanwhile sees a different (or no)
        file at that path and retries (see :meth:`_lock`). Files this class did not
        write are left, and then so is the directory.
        """
        if not self.empty:
            raise RuntimeError(f"journal {self.directory} still holds records")
        for segment in list(self._segments):
            self._delete(segment)
        for path in segment_files(self.directory):
            path.unlink(missing_ok=True)
        gone = True
        if directory:
            (self.directory / LOCK_NAME).unlink(missing_ok=True)
            try:
                self.directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("journal directory %s not removed: %s", self.directory, exc)
                gone = False
        self.close()
        return gone

    def _lock(self, create: bool) -> int:
        path = self.directory / LOCK_NAME
        for _ in range(_LOCK_ATTEMPTS):
            if create:
                self.directory.mkdir(parents=True, exist_ok=True)
            elif not self.directory.is_dir():
                raise FileNotFoundError(f"journal directory {str(self.directory)!r} is gone")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue  # removed between the check and the open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalLockedError(
                    f"journal directory {str(self.directory)!r} is in use by another process"
                ) from None
            if _same_file(fd, path):
                return fd
            os.close(fd)  # locked a lock file an adopter had just removed: try again
        raise JournalLockedError(f"journal directory {str(self.directory)!r} keeps vanishing")

    # -- appending ------------------------------------------------------------------

    def append(self, payload: bytes, rows: int) -> Dropped:
        """Add one record; returns what had to be dropped to stay within the cap."""
        record = _HEADER.pack(_MAGIC, len(payload), rows, zlib.crc32(payload)) + payload
        if len(record) > self.max_bytes:
            log.error(
                "journal record of %d bytes exceeds the cap; %d rows dropped", len(record), rows
            )
            return Dropped(rows, 1)
        active = self._active()
        if active.size > 0 and active.size + len(record) > self.segment_bytes:
            self._sealed_through = active.seq
            active = self._active()
        dropped_rows = dropped_records = 0
        while self.size_bytes + len(record) > self.max_bytes:
            victim = next((s for s in self._segments if s is not active), None)
            if victim is None:
                break
            dropped_rows += victim.rows
            dropped_records += victim.records
            self._delete(victim)
        try:
            with open(active.path, "ab") as f:
                f.write(record)
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
        except OSError:
            self._cut_back(active)
            raise
        active.size += len(record)
        active.rows += rows
        active.records += 1
        if dropped_rows or dropped_records:
            log.warning(
                "journal full (%d bytes): dropped the oldest %d rows", self.max_bytes, dropped_rows
            )
        return Dropped(dropped_rows, dropped_records)

    def _cut_back(self, segment: Segment) -> None:
        """After a failed append (disk full): drop its partial bytes, keep the segment."""
        try:
            os.truncate(segment.path, segment.size)
        except OSError as exc:  # the torn tail is then skipped (and counted) on replay
            log.warning("cannot cut the failed append off %s: %s", segment.path, exc)

    def _active(self) -> Segment:
        if self._segments and self._segments[-1].seq > self._sealed_through:
            return self._segments[-1]
        seq = (self._segments[-1].seq if self._segments else self._sealed_through) + 1
        segment = Segment(seq, self.directory / f"{seq:016d}{SUFFIX}")
        segment.path.touch()
        self._segments.append(segment)
        return segment

    # -- replaying ------------------------------------------------------------------

    def oldest(self) -> Segment | None:
        """The oldest segment, sealed so that new appends go to a fresh one."""
        while self._segments and not self._segments[0].pending and len(self._segments) > 1:
            self._delete(self._segments[0])
        if not self._segments or not self._segments[0].pending:
            return None
        first = self._segments[0]
        if first.seq > self._sealed_through:
            self._sealed_through = first.seq
        return first

    def read(self, segment: Segment) -> tuple[list[tuple[bytes, int]], int]:
        """(intact records as (payload, rows), rows of the damaged records).

        Each damaged stretch is counted in ``corrupt_records``; its rows are known
        only when its header survived (else it adds none to the count).
        """
        records, damaged, regions = self._scan(segment)
        self.corrupt_records += regions
        return records, damaged

    def remove(self, segment: Segment) -> None:
        """Forget a segment whose records are safely in the database."""
        if segment in self._segments:
            self._delete(segment)

    def _delete(self, segment: Segment) -> None:
        self._segments.remove(segment)
        segment.path.unlink(missing_ok=True)

    def _scan(self, segment: Segment) -> tuple[list[tuple[bytes, int]], int, int]:
        """(intact records, rows of the damaged ones, how many damaged stretches).

        Past a damaged stretch the scan resumes at the next intact record (a header
        with the magic whose payload's checksum holds), so one bad record costs only
        its own rows. A damaged record's rows are known from its header when that
        looks intact (magic, and no more rows than payload bytes), else 0 (unknown).
        """
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            return [], 0, 0
        out: list[tuple[bytes, int]] = []
        damaged_rows = regions = 0
        offset = 0
        while offset < len(data):
            record = _record_at(data, offset)
            if record is not None:
                out.append((record[0], record[1]))
                offset = record[2]
                continue
            regions += 1
            damaged_rows += _rows_claimed(data, offset)
            offset = _next_record(data, offset + 1)
        return out, damaged_rows, regions


def _same_file(fd: int, path: pathlib.Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def _record_at(data: bytes, offset: int) -> tuple[bytes, int, int] | None:
    """(payload, rows, end offset) of an intact record at ``offset``, else None."""
    if offset + _HEADER.size > len(data):
        return None
    magic, length, rows, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    payload = data[start : start + length]
    if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return payload, rows, start + length


def _rows_claimed(data: bytes, offset: int) -> int:
    if offset + _HEADER.size > len(data):
        return 0
    magic, length, rows, _ = _HEADER.unpack_from(data, offset)
    return rows if magic == _MAGIC and rows <= length else 0


def _next_record(data: bytes, start: int) -> int:
    """The offset of the next intact record at or after ``start`` (or the end)."""
    at = data.find(_MAGIC_BYTES, start)
    while at != -1:
        if _record_at(data, at) is not None:
            return at
        at = data.find(_MAGIC_BYTES, at + 1)
    return len(data)

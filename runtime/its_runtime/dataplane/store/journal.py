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
  appends are fsynced. A torn tail (power cut mid-write) or a damaged record ends
  the segment's replay at that point and is counted, not fatal. The journal is found
  again at start, so rows spooled before a restart are replayed after it.
* **One owner.** An exclusive ``flock`` on the directory's lock file stops two
  processes from replaying (or deleting) each other's segments.

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
_SUFFIX = ".jnl"


class JournalLockedError(RuntimeError):
    """Another process owns this journal directory."""


@dataclass
class Segment:
    seq: int
    path: pathlib.Path
    size: int = 0
    rows: int = 0
    records: int = 0


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
    ) -> None:
        self.directory = pathlib.Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(512, max_bytes // 4)
        self._fsync = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalLockedError(
                f"journal directory {str(self.directory)!r} is in use by another process"
            ) from None
        self._segments: list[Segment] = []
        self._sealed_through = 0  # segments with seq <= this are not appended to
        self.corrupt_records = 0
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            segment = Segment(seq, path, size=path.stat().st_size)
            records, damaged = self._scan(segment)
            if damaged is not None:
                log.warning("journal segment %s ends in a damaged record", path.name)
            segment.records = len(records)
            segment.rows = sum(rows for _, rows in records)
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
        return not any(s.records for s in self._segments)

    def close(self) -> None:
        if not self.closed:
            os.close(self._lock_fd)
            self.closed = True

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
        with open(active.path, "ab") as f:
            f.write(record)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        active.size += len(record)
        active.rows += rows
        active.records += 1
        if dropped_rows or dropped_records:
            log.warning(
                "journal full (%d bytes): dropped the oldest %d rows", self.max_bytes, dropped_rows
            )
        return Dropped(dropped_rows, dropped_records)

    def _active(self) -> Segment:
        if self._segments and self._segments[-1].seq > self._sealed_through:
            return self._segments[-1]
        seq = (self._segments[-1].seq if self._segments else self._sealed_through) + 1
        segment = Segment(seq, self.directory / f"{seq:016d}{_SUFFIX}")
        segment.path.touch()
        self._segments.append(segment)
        return segment

    # -- replaying ------------------------------------------------------------------

    def oldest(self) -> Segment | None:
        """The oldest segment, sealed so that new appends go to a fresh one."""
        while self._segments and self._segments[0].records == 0 and len(self._segments) > 1:
            self._delete(self._segments[0])
        if not self._segments or self._segments[0].records == 0:
            return None
        first = self._segments[0]
        if first.seq > self._sealed_through:
            self._sealed_through = first.seq
        return first

    def read(self, segment: Segment) -> tuple[list[tuple[bytes, int]], int]:
        """(intact records as (payload, rows), rows lost to damage at the segment's end).

        Rows lost to a damaged record are known only when its header survived; a
        damaged header is counted in ``corrupt_records`` with no row count.
        """
        records, damaged = self._scan(segment)
        if damaged is not None:
            self.corrupt_records += 1
        return records, damaged or 0

    def remove(self, segment: Segment) -> None:
        """Forget a segment whose records are safely in the database."""
        if segment in self._segments:
            self._delete(segment)

    def _delete(self, segment: Segment) -> None:
        self._segments.remove(segment)
        segment.path.unlink(missing_ok=True)

    def _scan(self, segment: Segment) -> tuple[list[tuple[bytes, int]], int | None]:
        """(intact records, None) or (records before the damage, rows of the damaged one)."""
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            return [], None
        out: list[tuple[bytes, int]] = []
        offset = 0
        while offset < len(data):
            if offset + _HEADER.size > len(data):
                return out, 0
            magic, length, rows, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if magic != _MAGIC:
                return out, 0
            if len(payload) != length or zlib.crc32(payload) != crc:
                return out, rows
            out.append((payload, rows))
            offset = start + length
        return out, None

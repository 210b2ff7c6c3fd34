"""Replaying journal segments into PostgreSQL: the writer's own, and adopted orphans'.

The :class:`~its_runtime.dataplane.store.writer.RowWriter` calls :class:`JournalReplay`
from its one task, one segment per loop turn, only while the database is up. A
segment is removed only once every record of it is in the database (the write path is
idempotent, so a segment replayed again after a crash stores nothing twice). A
damaged record (torn tail, bad checksum) or a payload that does not decode costs only
its own rows: they are counted as dropped (``corrupt``) and logged, and the rest of
the segment is replayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from its_runtime.dataplane.store.adoption import Adoption
from its_runtime.dataplane.store.journal import Journal
from its_runtime.dataplane.store.rows import RowBatch
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)


class JournalReplay:
    """Replays journal segments (the writer's own and adopted orphans'), one per call.

    Batches go through ``write`` (the writer's idempotent path; False when the
    database went away, and the segment then stays). A segment is removed only once
    all of its records are in the database; the rows of its damaged or undecodable
    records are then counted as dropped (``corrupt``) through ``count_dropped``.
    """

    def __init__(
        self,
        write: Callable[[RowBatch], Awaitable[bool]],
        observer: dataplane_stats.StoreObserver,
        count_dropped: Callable[[str, int], None],
    ) -> None:
        self._write = write
        self._observer = observer
        self._count_dropped = count_dropped
        self.rows_own = 0
        self.rows_adopted = 0

    async def segment(self, journal: Journal, *, adopted: bool = False) -> None:
        """Replay (and then remove) the oldest segment of ``journal``, if any."""
        segment = journal.oldest()
        if segment is None:
            return
        unknown = journal.corrupt_records
        records, damaged_rows = await asyncio.to_thread(journal.read, segment)
        batches, lost = _decode(records, segment.path)
        for batch in batches:
            if not await self._write(batch):
                return  # down again: the segment stays for the next recovery
            self._observer.rows_replayed(len(batch))
            if adopted:
                self.rows_adopted += len(batch)
                self._observer.rows_adopted(len(batch))
            else:
                self.rows_own += len(batch)
        if journal.corrupt_records > unknown:
            log.error(
                "journal segment %s holds %d damaged record(s): %s rows lost",
                segment.path,
                journal.corrupt_records - unknown,
                damaged_rows or "an unknown number of",
            )
        if damaged_rows + lost:
            self._count_dropped("corrupt", damaged_rows + lost)
        await asyncio.to_thread(journal.remove, segment)

    async def orphan(self, orphans: Adoption) -> None:
        """One turn of adoption: scan when due, then replay one segment of the orphan."""
        before = orphans.journals_adopted
        try:
            journal = await asyncio.to_thread(orphans.adopt_next)
        except Exception:
            log.exception("scanning for orphaned journals failed")
            return
        if journal is None:
            return
        if orphans.journals_adopted > before:
            self._observer.journal_adopted()
        await self.segment(journal, adopted=True)
        if journal.empty:
            await asyncio.to_thread(orphans.finish)


def _decode(records: list[tuple[bytes, int]], where: object) -> tuple[list[RowBatch], int]:
    """(decoded batches, rows of the records that could not be decoded: logged)."""
    batches: list[RowBatch] = []
    lost = 0
    for payload, rows in records:
        try:
            batches.append(RowBatch.decode(payload))
        except Exception as exc:
            log.error("undecodable journal record in %s (%d rows lost): %r", where, rows, exc)
            lost += rows
    return batches, lost

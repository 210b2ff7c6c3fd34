"""Writing one batch so that its good rows always land, whatever its bad rows do.

A batch is one transaction (:func:`.bulk.write_batch`), so one bad row fails all of
them. When a write fails, :mod:`.classify` says why:

* an **outage**: the database is marked down and the caller journals the batch (the
  write path is idempotent, so rows of it that did land are not stored twice when
  it is replayed);
* **bad data**: the batch is split in halves, and each half written again, recursively,
  until every failing piece is one row; those rows go to the dead letters
  (:mod:`.deadletter`) with their reason, and everything else is in the database.
  ``k`` bad rows in ``n`` cost about ``2 k log2 n`` small transactions, once;
* **unknown**: logged with its traceback, then the database is asked whether it
  still answers (``SELECT 1``): no, an outage; yes, the rows are the problem and the
  batch is split as for bad data (a row that still fails alone is dead-lettered with
  the exception's type as its reason).

So no batch is ever retried forever and none blocks the ones behind it: a journal
record holding a bad row is replayed once, its good rows land, and its segment goes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from its_runtime.dataplane.store import bulk, classify
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.deadletter import DeadLetter, DeadLetters
from its_runtime.dataplane.store.rows import RowBatch
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)

#: The table each row list of a :class:`RowBatch` is written to (others: their name).
TABLES = {"events": "traffic_events", "detections": "detections"}


@dataclasses.dataclass
class Report:
    """What a delivered batch became: new rows by table, and dead letters."""

    events: int = 0
    detections: int = 0
    dead_lettered: int = 0


class Delivery:
    def __init__(
        self,
        database: Database,
        dead_letters: DeadLetters,
        observer: dataplane_stats.StoreObserver,
        count_dropped: Callable[[str, int], None],
    ) -> None:
        self.database = database
        self.dead_letters = dead_letters
        self._observer = observer
        self._count_dropped = count_dropped
        #: Dead-lettered rows by (table, reason), for ``details()`` and ``/ready``.
        self.dead_lettered: dict[tuple[str, str], int] = {}

    async def write(self, batch: RowBatch) -> Report | None:
        """The batch is in the database or dead-lettered (a Report), or None: an outage."""
        report = Report()
        try:
            await self._attempt(batch, report)
        except Exception as exc:
            if not await self._is_data_problem(exc, len(batch)):
                return None
            self._observer.write_failed("rejected")
            log.warning(
                "a batch of %d rows was refused (%s); splitting it to isolate the bad rows",
                len(batch),
                classify.describe(exc),
            )
            if not await self._isolate(batch, exc, report):
                return None
        return report

    async def _attempt(self, batch: RowBatch, report: Report) -> None:
        async with self.database.acquire() as conn:
            result = await bulk.write_batch(conn, batch)
        report.events += result.events
        report.detections += result.detections

    async def _is_data_problem(self, exc: Exception, rows: int) -> bool:
        """True for bad data (or an unknown error while the database answers)."""
        kind = classify.classify(exc)
        if kind is classify.Failure.BAD_DATA:
            return True
        if kind is classify.Failure.UNKNOWN:
            log.error("unexpected error writing %d rows", rows, exc_info=exc)
            self._observer.write_failed("unknown")
            return await self.database.ensure()
        self._observer.write_failed("unavailable")
        self.database.mark_down(exc)
        return False

    async def _isolate(self, batch: RowBatch, exc: Exception, report: Report) -> bool:
        """Write what can be written of a refused batch; False on an outage meanwhile."""
        pieces = split(batch)
        if pieces is None:
            await self._dead_letter(batch, exc, report)
            return True
        for piece in pieces:
            try:
                await self._attempt(piece, report)
            except Exception as piece_exc:
                if not await self._is_data_problem(piece_exc, len(piece)):
                    return False
                if not await self._isolate(piece, piece_exc, report):
                    return False
        return True

    async def _dead_letter(self, batch: RowBatch, exc: Exception, report: Report) -> None:
        reason = classify.reason(exc)
        error = classify.describe(exc)
        letters = [
            DeadLetter(TABLES.get(name, name), reason, error, row)
            for name, rows in row_lists(batch).items()
            for row in rows
        ]
        log.error("dead-lettered %d row(s): %s", len(letters), error)
        stored = await asyncio.to_thread(self.dead_letters.add, letters)
        for letter in letters:
            key = (letter.table, letter.reason)
            self.dead_lettered[key] = self.dead_lettered.get(key, 0) + 1
            self._observer.rows_dead_lettered(letter.table, letter.reason, 1)
        self._observer.rows_rejected(len(letters))
        report.dead_lettered += len(letters)
        if not stored:
            self._count_dropped("dead_letter_unwritable", len(letters))


def row_lists(batch: RowBatch) -> dict[str, list[Any]]:
    """The batch's rows by list name (``events``, ``detections``, ...)."""
    return {
        f.name: getattr(batch, f.name) for f in dataclasses.fields(batch) if f.name != "decoded_at"
    }


def split(batch: RowBatch) -> tuple[RowBatch, RowBatch] | None:
    """The batch's rows in two halves (no frame times), or None for a single row."""
    items = [(name, row) for name, rows in row_lists(batch).items() for row in rows]
    if len(items) <= 1:
        return None
    middle = len(items) // 2
    halves: list[RowBatch] = []
    for part in (items[:middle], items[middle:]):
        half = RowBatch()
        for name, row in part:
            getattr(half, name).append(row)
        halves.append(half)
    return halves[0], halves[1]

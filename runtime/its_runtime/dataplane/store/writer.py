"""The row writer: batches rows into COPYs, spools to the journal, replays on recovery.

One asyncio task owns every database write and journal operation, so the journal is
never used concurrently and rows leave in a predictable order. Its loop:

* wait until a batch is due (``batchMaxRows`` rows pending, or the oldest pending
  row is ``flushIntervalS`` old);
* database up: replay one journal segment if there is one (oldest first), then write
  the due batch with :func:`its_runtime.dataplane.store.bulk.write_batch`;
* database down (or a write just failed): append the batch to the journal and let
  the recovery task probe the database with backoff until it answers.

``submit`` never blocks the pipeline. Memory is bounded too: past
``max_pending_rows`` the oldest pending rows go to the journal on the next loop turn
(and past twice that, while a write hangs, the oldest are dropped and counted).
**Failures are classified, never fatal** (:mod:`.classify`, :mod:`.delivery`). An
outage journals the batch; rows the database refuses as bad data are isolated by
splitting the batch and go to the dead letters (:mod:`.deadletter`), so the good
rows of a batch always land and a bad batch (a journalled one too) is never replayed
forever. A journal that cannot be written (disk full) costs the rows that could not
be spooled, counted as dropped (``journal_unwritable``), not the writer. Every row is
thus written, journalled, dead-lettered or counted as dropped.

**Supervised.** Each step of a turn is guarded: an unexpected error is logged with its
traceback, counted (``its_row_writer_errors_total{reason}``), shown, and the loop goes
on after a backoff; should the task still end unexpectedly it is restarted.
:meth:`RowWriter.health` is the ``database`` entry of ``/ready``: ``failing: <cause>``
while rows are being lost or the writer is failing, ``degraded`` while journalling.
What happened is kept as numbers (``details()``) and reported to the database's
:class:`~its_runtime.observability.dataplane_stats.StoreObserver`.

**Orphaned journals.** The journal lives in ``<root>/<pod>/`` of a volume all replicas
share (:func:`~its_runtime.dataplane.store.adoption.pod_journal`). Given an
``orphans`` :class:`~its_runtime.dataplane.store.adoption.Adoption`, the writer also
replays the journals of pods that are gone, after its own backlog and only while
the database is up: a scan at start and at most every few seconds, one adopted
segment per loop turn (interleaved with the live batches), through the same
idempotent write path, then the orphan's directory is deleted. A record that cannot
be read or decoded (its own journal's or an orphan's) costs only its rows, counted
as dropped (``corrupt``) and logged. On close an unfinished adopted journal is
unlocked, not deleted, so another pod (or this one, restarted) finishes it. The
protocol is described in :mod:`~its_runtime.dataplane.store.adoption`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from typing import Any

from its_runtime import health
from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store import classify
from its_runtime.dataplane.store.adoption import Adoption
from its_runtime.dataplane.store.database import Database
from its_runtime.dataplane.store.deadletter import DeadLetters
from its_runtime.dataplane.store.delivery import Delivery
from its_runtime.dataplane.store.journal import Journal
from its_runtime.dataplane.store.replay import JournalReplay
from its_runtime.dataplane.store.rows import FrameRows, RowBatch
from its_runtime.dataplane.store.supervision import Recovery, Supervisor, WriterState, verdict
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)


class RowWriter:
    def __init__(
        self,
        database: Database,
        journal: Journal,
        config: DatabaseConfig,
        *,
        max_pending_rows: int | None = None,
        recovery_backoff: Backoff | None = None,
        observer: dataplane_stats.StoreObserver | None = None,
        orphans: Adoption | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self._observer = observer or database.observer
        self.orphans = orphans
        self.database = database
        self.journal = journal
        self.config = config
        self.max_pending_rows = max_pending_rows or 20 * config.batch_max_rows
        self._pending: collections.deque[FrameRows] = collections.deque()
        self._pending_rows = 0
        self._oldest_at: float | None = None
        self._wake = asyncio.Event()
        self._io = asyncio.Lock()
        self._recovery = Recovery(
            database, recovery_backoff or Backoff(initial_s=0.5, max_s=5.0), self._wake.set
        )
        self._closing = False
        self.supervisor = Supervisor(self._run, self._observer)
        self._replay_after = 0.0  # monotonic time before which replay is not retried
        #: The journal's last write error (cleared by a successful spool).
        self.journal_error: str | None = None
        # What happened to rows, for tests, /ready details and the benchmark.
        self.rows_written = 0
        self.rows_duplicate = 0
        self.rows_spooled = 0
        self.rows_dropped: dict[str, int] = {}
        self.rows_rejected = 0
        self.recent_lags: collections.deque[float] = collections.deque(maxlen=10_000)
        self.delivery = Delivery(
            database,
            dead_letters or DeadLetters.beside(journal.directory),
            self._observer,
            self._count_dropped,
        )
        self.replay = JournalReplay(
            functools.partial(self._write, replay=True), self._observer, self._count_dropped
        )
        self._publish_journal_state()

    @property
    def rows_replayed(self) -> int:
        """Rows replayed from this writer's own journal."""
        return self.replay.rows_own

    # -- producer side --------------------------------------------------------------

    def submit(self, rows: FrameRows) -> None:
        """Queue one frame's rows (never blocks, never raises for a down database)."""
        if not len(rows):
            return
        if self._oldest_at is None:
            self._oldest_at = time.monotonic()
        self._pending.append(rows)
        self._pending_rows += len(rows)
        hard_cap = 2 * self.max_pending_rows
        while self._pending_rows > hard_cap and len(self._pending) > 1:
            victim = self._pending.popleft()
            self._pending_rows -= len(victim)
            self._count_dropped("memory", len(victim))
        if self._pending_rows >= self.config.batch_max_rows or self._closing:
            self._wake.set()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.supervisor.start()
        if not self.database.up:
            self._recovery.start()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write (or journal) everything pending, then stop."""
        self._closing = True
        self._wake.set()
        await self.supervisor.stop(timeout_s)
        await self._recovery.stop()
        async with self._io:
            await self._spool(self._take(everything=True))
            if self.orphans is not None:
                await asyncio.to_thread(self.orphans.release)

    async def flush(self) -> None:
        """Write (or journal) everything pending now."""
        async with self._io:
            while self._pending:
                await self._write_or_spool(self._take(everything=False))

    async def wait_drained(self, timeout_s: float) -> bool:
        """Until nothing is pending and the journal is empty (database up); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._pending and self.journal.empty and self.database.up:
                async with self._io:
                    if not self._pending and self.journal.empty:
                        return True
            self._wake.set()
            await asyncio.sleep(0.05)
        return False

    def health(self) -> health.DependencyHealth:
        """The ``database`` entry of ``/ready`` (:func:`.supervision.verdict`)."""
        return verdict(_state(self))

    def details(self) -> dict[str, Any]:
        return _details(self)

    # -- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._wait_until_due()
                async with self._io:
                    clean = await self._turn()
            except Exception as exc:  # a bug: log, show, back off, go on
                self.supervisor.failed("the writer loop", exc)
                await self.supervisor.pause()
                continue
            if clean and self.supervisor.failure is not None:
                self.supervisor.recovered()
            if self._closing and not self._pending:
                return

    async def _wait_until_due(self) -> None:
        while not self._closing:
            if self._pending_rows >= self.config.batch_max_rows:
                return
            if self._oldest_at is not None:
                age = time.monotonic() - self._oldest_at
                if age >= self.config.flush_interval_s:
                    return
                wait = self.config.flush_interval_s - age
            else:
                wait = self.config.flush_interval_s
            if (
                self.database.up
                and time.monotonic() >= self._replay_after
                and (not self.journal.empty or (self.orphans is not None and self.orphans.due()))
            ):
                return  # replay (or an orphan scan) is due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _turn(self) -> bool:
        """One turn; False when its replay step failed (logged, retried after a backoff)."""
        if self._pending_rows > self.max_pending_rows:
            await self._spool(self._take(everything=True))
        clean = True
        if self.database.up and time.monotonic() >= self._replay_after:
            try:
                if not self.journal.empty:
                    await self.replay.segment(self.journal)
                    self._publish_journal_state()
                elif self.orphans is not None:
                    await self.replay.orphan(self.orphans)
            except Exception as exc:  # the live rows below must not wait on it
                self.supervisor.failed("journal replay", exc)
                self._replay_after = time.monotonic() + self.supervisor.backoff.next_delay()
                clean = False
        if self._pending:
            await self._write_or_spool(self._take(everything=False))
        return clean

    def _take(self, *, everything: bool) -> RowBatch:
        batch = RowBatch()
        while self._pending and (everything or len(batch) < self.config.batch_max_rows):
            batch.add(self._pending.popleft())
        self._pending_rows -= len(batch)
        self._oldest_at = time.monotonic() if self._pending else None
        return batch

    async def _write_or_spool(self, batch: RowBatch) -> None:
        if not len(batch):
            return
        if not self.database.up:
            await self._spool(batch)
            return
        if not await self._write(batch, replay=False):
            await self._spool(batch)

    async def _write(self, batch: RowBatch, *, replay: bool) -> bool:
        """True when the batch is in the database (its bad rows in the dead letters)."""
        start = time.perf_counter()
        result = await self.delivery.write(batch)
        if result is None:  # an outage: the caller journals the batch (or keeps it)
            self._recovery.start()
            return False
        self._observer.batch_written(time.perf_counter() - start)
        self._observer.rows_written("traffic_events", result.events)
        self._observer.rows_written("detections", result.detections)
        new = result.events + result.detections
        self.rows_written += new
        self.rows_rejected += result.dead_lettered
        self.rows_duplicate += len(batch) - new - result.dead_lettered
        now = time.time()
        for decoded_at in batch.decoded_at:
            lag = now - decoded_at
            self._observer.frame_committed(lag)
            if not replay:
                self.recent_lags.append(lag)
        return True

    async def _spool(self, batch: RowBatch) -> None:
        """Journal the batch; rows that cannot be (disk full) are counted as lost."""
        if not len(batch):
            return
        try:
            payload = batch.encode()
            dropped = await asyncio.to_thread(self.journal.append, payload, len(batch))
        except Exception as exc:
            if self.journal_error is None:
                log.error("the journal cannot be written, rows are lost: %s", exc)
            self.journal_error = classify.describe(exc)
            self._count_dropped("journal_unwritable", len(batch))
            return
        if self.journal_error is not None:
            log.info("the journal can be written again")
            self.journal_error = None
        self.rows_spooled += len(batch)
        self._observer.rows_spooled(len(batch))
        if dropped.rows:
            self._count_dropped("journal_full", dropped.rows)
        self._publish_journal_state()

    def _count_dropped(self, reason: str, n: int) -> None:
        self.rows_dropped[reason] = self.rows_dropped.get(reason, 0) + n
        self._observer.rows_dropped(reason, n)
        log.warning("dropped %d rows (%s)", n, reason)

    def _publish_journal_state(self) -> None:
        self._observer.journal_size(self.journal.size_bytes, self.journal.rows)


def _state(w: RowWriter) -> WriterState:
    return WriterState(
        stopped=w.supervisor.stopped_unasked,
        failure=w.supervisor.failure,
        database_up=w.database.up,
        database_error=w.database.last_error,
        journal_error=w.journal_error,
        journal_rows=w.journal.rows,
        rows_lost=w.rows_dropped.get("journal_unwritable", 0),
        dead_lettered=sum(w.delivery.dead_lettered.values()),
        dead_letters=str(w.delivery.dead_letters.path),
    )


def _details(w: RowWriter) -> dict[str, Any]:
    return {
        "pending_rows": w.pending_rows,
        "journal_rows": w.journal.rows,
        "journal_bytes": w.journal.size_bytes,
        "rows_written": w.rows_written,
        "rows_spooled": w.rows_spooled,
        "rows_replayed": w.rows_replayed,
        "adopted_journals": 0 if w.orphans is None else w.orphans.journals_adopted,
        "adopted_rows_replayed": w.replay.rows_adopted,
        "rows_dropped": dict(w.rows_dropped),
        "rows_rejected": w.rows_rejected,
        "rows_dead_lettered": {
            f"{table}/{reason}": n for (table, reason), n in w.delivery.dead_lettered.items()
        },
        "dead_letters": str(w.delivery.dead_letters.path),
        "failure": w.supervisor.failure,
        "journal_error": w.journal_error,
        "restarts": w.supervisor.restarts,
    }

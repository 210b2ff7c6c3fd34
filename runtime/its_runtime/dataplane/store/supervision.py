"""Keeping the row writer's one task alive, and saying in ``/ready`` when it is not well.

Everything the store writes goes through one asyncio task (:mod:`.writer`); if it
dies, rows pile up in memory and are lost while the pod looks healthy. So the loop
is supervised the way a camera's analysis is:

* an unexpected error in a step of a turn is **logged** with its traceback,
  **counted** (``its_row_writer_errors_total{reason}``), **shown** (``failure``, in
  ``/ready``), and the loop goes on after a backoff (0.2 s doubling to 5 s); a clean
  turn clears it;
* should the task still end (a bug past those guards) it is **restarted** at once
  and the restart is shown too.

:func:`verdict` turns the writer's state into the ``database`` entry of ``/ready``:
``ok``; ``degraded, journalling`` while the database is away and rows are safe on
disk; ``failing: <cause>`` while rows are being lost (database away *and* journal
unwritable) or the writer itself fails. Causes are texts from
:func:`.classify.describe`, which removes credentials (a DSN holds a password).
:class:`Recovery` is the other task: it probes the database with backoff while it is
down and wakes the writer once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from its_runtime import health
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.dataplane.store import classify
from its_runtime.dataplane.store.database import Database
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)


class Supervisor:
    """Runs ``run()`` as a task, restarts it if it ends unasked, records failures."""

    def __init__(
        self,
        run: Callable[[], Coroutine[Any, Any, None]],
        observer: dataplane_stats.StoreObserver,
        *,
        name: str = "its-row-writer",
    ) -> None:
        self._run = run
        self._observer = observer
        self._name = name
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.backoff = Backoff(initial_s=0.2, max_s=5.0)
        #: The last unexpected error (cleared by :meth:`recovered`).
        self.failure: str | None = None
        self.restarts = 0

    def start(self) -> None:
        if self.task is not None:
            raise RuntimeError("writer already started")
        self._launch()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def stopped_unasked(self) -> bool:
        return self.task is not None and not self.running and not self.stopping

    def failed(self, step: str, exc: BaseException) -> None:
        """Log, count and show an unexpected error of ``step``."""
        self.failure = f"{step} failed: {classify.describe(exc)}"
        self._observer.writer_error(classify.reason(exc))
        log.error("row writer: %s failed", step, exc_info=exc)

    def recovered(self) -> None:
        if self.failure is not None:
            log.info("the row writer works again (was: %s)", self.failure)
        self.failure = None
        self.backoff.reset()

    async def pause(self) -> None:
        await asyncio.sleep(self.backoff.next_delay())

    async def stop(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the task to finish (it was told to), then cancel."""
        self.stopping = True
        task = self.task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _launch(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping or task.cancelled() or task is not self.task:
            return
        exc = task.exception()
        cause = "it returned" if exc is None else classify.describe(exc)
        self.failure = f"the row writer stopped ({cause}) and was restarted"
        self.restarts += 1
        self._observer.writer_error("stopped")
        log.error("the row writer stopped (%s); restarting it", cause, exc_info=exc)
        self._launch()


@dataclass(frozen=True)
class WriterState:
    """What :func:`verdict` needs to know about a writer."""

    stopped: bool
    failure: str | None
    database_up: bool
    database_error: str | None
    journal_error: str | None
    journal_rows: int
    rows_lost: int
    dead_lettered: int
    dead_letters: str


def verdict(s: WriterState) -> health.DependencyHealth:
    note = f" ({s.dead_lettered} rows dead-lettered to {s.dead_letters})" if s.dead_lettered else ""
    if s.stopped:
        return health.DependencyHealth(False, f"failing: the row writer stopped{note}")
    if s.failure is not None:
        return health.DependencyHealth(False, f"failing: {s.failure}{note}")
    if not s.database_up and s.journal_error is not None:
        return health.DependencyHealth(
            False,
            f"failing: the database is unreachable ({s.database_error}) and the journal "
            f"cannot be written ({s.journal_error}): {s.rows_lost} rows lost{note}",
        )
    if not s.database_up:
        return health.DependencyHealth(
            False,
            f"degraded, journalling ({s.journal_rows} rows spooled): {s.database_error}{note}",
        )
    return health.DependencyHealth(True, f"ok{note}")


class Recovery:
    """Probes the database with backoff until it answers, then wakes the writer."""

    def __init__(self, database: Database, backoff: Backoff, wake: Callable[[], None]) -> None:
        self._database = database
        self._backoff = backoff
        self._wake = wake
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="its-db-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        self._backoff.reset()
        while True:
            if await self._database.ensure():
                break
            await asyncio.sleep(self._backoff.next_delay())
        self._wake()

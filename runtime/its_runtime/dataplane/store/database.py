"""The asyncpg pool: settings from config, migrations first, health, statistics.

* Session settings (``statement_timeout``, ``lock_timeout``,
  ``idle_in_transaction_session_timeout``) are sent as connection *startup*
  parameters, so they are the session defaults: the pool's ``RESET ALL`` on release
  returns to them instead of dropping them.
* ``command_timeout`` (client side) is the statement timeout plus a second: a server
  that stops answering without closing the socket still cannot hang a writer.
* Migrations run on a dedicated connection before the pool exists, so every pooled
  connection can prepare its COPY staging tables in ``init``.
* Health is a flag the writer flips on an outage (:mod:`.classify`); its error text
  has credentials removed (:mod:`its_runtime.redaction`), since it is shown in
  ``/ready``; a recovery loop (the writer's) calls
  :meth:`Database.ensure` with backoff. The pool reconnects dead connections by
  itself on acquire, so after a server restart no new pool is needed.
* Health, acquire times and pool sizes are reported to a
  :class:`~its_runtime.observability.dataplane_stats.StoreObserver` (the writer
  reports to the database's, so one store reports to one place).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from its_runtime import redaction
from its_runtime.config import DatabaseConfig
from its_runtime.dataplane.store import bulk, migrations
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)


class DatabaseUnavailableError(ConnectionError):
    """No pool yet, or the database could not be reached."""


class Database:
    def __init__(
        self,
        dsn: str,
        config: DatabaseConfig,
        *,
        application_name: str = "its-runtime",
        observer: dataplane_stats.StoreObserver | None = None,
    ) -> None:
        self.observer = observer or dataplane_stats.PROMETHEUS.store
        self.dsn = dsn
        redaction.remember(dsn)  # its password never reaches a log line or /ready
        self.config = config
        self.application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self.up = False
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.migrated: list[int] = []
        self.observer.database_available(False)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def server_settings(self) -> dict[str, str]:
        c = self.config
        return {
            "application_name": self.application_name,
            "statement_timeout": str(c.statement_timeout_ms),
            "lock_timeout": str(c.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(c.idle_in_transaction_timeout_ms),
        }

    async def connect(self) -> None:
        """Apply migrations and open the pool; raises if the database is unreachable."""
        if self._pool is not None:
            return
        timeout = self.config.acquire_timeout_s
        conn = await asyncpg.connect(
            self.dsn, timeout=timeout, server_settings={"application_name": self.application_name}
        )
        try:
            self.migrated = await migrations.migrate(conn)
        finally:
            await conn.close()
        if self.migrated:
            log.info("applied schema migrations %s", self.migrated)
        command_timeout = (
            self.config.statement_timeout_ms / 1000.0 + 1.0
            if self.config.statement_timeout_ms
            else None
        )
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.config.pool_min_size,
            max_size=self.config.pool_max_size,
            timeout=timeout,
            command_timeout=command_timeout,
            server_settings=self.server_settings,
            init=bulk.prepare_connection,
        )
        self.mark_up()

    async def ensure(self) -> bool:
        """Connect if needed and check the server answers; True when healthy."""
        try:
            if self._pool is None:
                await self.connect()
            async with self.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:  # anything here means "not yet"
            self.mark_down(exc)
            return False
        self.mark_up()
        return True

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=5.0)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()
        self.up = False
        self.observer.database_available(False)

    # -- use ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailableError("the database has not been reached yet")
        start = time.perf_counter()
        async with pool.acquire(timeout=self.config.acquire_timeout_s) as conn:
            self.observer.pool_acquired(time.perf_counter() - start)
            self.report_pool()
            yield conn
        self.report_pool()

    def mark_down(self, exc: BaseException) -> None:
        self.last_error = redaction.redact(f"{type(exc).__name__}: {exc}")[:300]
        if self.up or self.down_since is None:
            self.down_since = time.time()
            log.warning("database unavailable: %s", self.last_error)
        self.up = False
        self.observer.database_available(False)

    def mark_up(self) -> None:
        if not self.up and self.down_since is not None:
            log.info("database available again after %.1fs", time.time() - self.down_since)
        self.up = True
        self.down_since = None
        self.observer.database_available(True)

    # -- statistics -----------------------------------------------------------------

    def pool_stats(self) -> dict[str, int]:
        pool = self._pool
        if pool is None:
            return {"open": 0, "idle": 0, "in_use": 0, "max": self.config.pool_max_size}
        size, idle = pool.get_size(), pool.get_idle_size()
        return {"open": size, "idle": idle, "in_use": size - idle, "max": pool.get_max_size()}

    def report_pool(self) -> None:
        self.observer.pool_connections(self.pool_stats())

    def details(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.up else "degraded",
            "error": None if self.up else self.last_error,
            "down_since": self.down_since,
            "pool": self.pool_stats(),
        }

"""L2: Redis through ``redis.asyncio``, pooled, pipelined, standalone or cluster.

* **Pool and pipelining.** One client with a bounded connection pool per process;
  multi-key reads and writes go through one non-transactional pipeline (one round
  trip; in a cluster redis-py splits it per node, so keys in different slots work).
* **Cluster support.** A ``redis://`` URL is probed with ``INFO cluster`` on first
  use: a node with ``cluster_enabled:1`` is switched to ``RedisCluster``, which
  follows MOVED/ASK redirects and discovers the other nodes. ``cluster=True/False``
  skips the probe.
* **Fail fast, degrade, come back.** Socket timeouts are short and redis-py's own
  retries are off: a dead Redis must cost a request milliseconds, not seconds. After a
  failure L2 is *degraded*: calls fail immediately (the caller falls back to L1 and
  the database) until the retry time, when one call probes again; a background task
  also probes, so L2 recovers even without traffic. Errors are counted by operation.
* **Reports, not metrics.** Health, errors and latencies go to a
  :class:`~its_runtime.observability.dataplane_stats.CacheObserver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)

_FAILURES = (redis.exceptions.RedisError, OSError, TimeoutError)


class L2UnavailableError(RuntimeError):
    """Redis is degraded; the caller should use L1 and the database."""


class RedisL2:
    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 64,
        socket_timeout_s: float = 0.25,
        connect_timeout_s: float = 0.25,
        cluster: bool | None = None,
        key_prefix: str = "its:",
        backoff: Backoff | None = None,
        observer: dataplane_stats.CacheObserver | None = None,
    ) -> None:
        self._observer = observer or dataplane_stats.PROMETHEUS.cache
        self.url = url
        self.max_connections = max_connections
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.cluster = cluster
        self.prefix = key_prefix
        self._backoff = backoff or Backoff(initial_s=0.2, max_s=5.0)
        self._client: Any = None
        self._lock = asyncio.Lock()
        self.up = True
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.errors = 0
        self._retry_at = 0.0
        self._monitor: asyncio.Task[None] | None = None
        self._observer.l2_available(True)

    # -- connection -----------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.connect_timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "max_connections": self.max_connections,
        }

    async def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            cluster = self.cluster
            if cluster is None:
                probe = aioredis.Redis.from_url(self.url, **self._options())
                try:
                    info = await probe.info("cluster")
                finally:
                    await probe.aclose()
                cluster = bool(int(info.get("cluster_enabled", 0)))
            if cluster:
                self._client = RedisCluster.from_url(self.url, **self._options())
                await self._client.initialize()
            else:
                self._client = aioredis.Redis.from_url(self.url, **self._options())
            self.cluster = cluster
            log.info("redis L2 at %s (%s)", self.url, "cluster" if cluster else "standalone")
            return self._client

    def start(self) -> None:
        """Start the background probe that brings L2 back without traffic."""
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(), name="its-redis-monitor"
            )

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_FAILURES):
                await client.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(max(0.1, self._retry_at - time.monotonic()) if not self.up else 1.0)
            if not self.up and time.monotonic() >= self._retry_at:
                with contextlib.suppress(L2UnavailableError):
                    await self.ping()

    # -- state ----------------------------------------------------------------------

    def _check(self) -> None:
        if not self.up and time.monotonic() < self._retry_at:
            raise L2UnavailableError(f"redis degraded: {self.last_error}")

    def _failed(self, op: str, exc: BaseException) -> L2UnavailableError:
        self.errors += 1
        self._observer.l2_failed(op)
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.up:
            self.down_since = time.time()
            log.warning("redis L2 degraded (%s); serving from L1 and the database", self.last_error)
        self.up = False
        self._retry_at = time.monotonic() + self._backoff.next_delay()
        self._observer.l2_available(False)
        return L2UnavailableError(f"redis degraded: {self.last_error}")

    def _succeeded(self) -> None:
        if not self.up:
            log.info("redis L2 is back after %.1fs", time.time() - (self.down_since or 0.0))
        self.up = True
        self.down_since = None
        self._backoff.reset()
        self._observer.l2_available(True)

    def details(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.up else "degraded",
            "mode": None if self.cluster is None else ("cluster" if self.cluster else "standalone"),
            "error": None if self.up else self.last_error,
            "down_since": self.down_since,
            "errors": self.errors,
        }

    # -- operations -----------------------------------------------------------------

    async def ping(self) -> None:
        self._check()
        try:
            client = await self._ensure_client()
            await client.ping()
        except _FAILURES as exc:
            raise self._failed("ping", exc) from exc
        self._succeeded()

    async def get_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        """(value, remaining ttl in seconds) per key, in one pipelined round trip."""
        self._check()
        if not keys:
            return []
        start = time.perf_counter()
        try:
            client = await self._ensure_client()
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(self.prefix + key)
                    pipe.pttl(self.prefix + key)
                replies = await pipe.execute()
        except _FAILURES as exc:
            raise self._failed("get", exc) from exc
        self._succeeded()
        self._observer.cache_latency("l2", "get", time.perf_counter() - start)
        out: list[tuple[bytes | None, float | None]] = []
        for i in range(0, len(replies), 2):
            value, pttl = replies[i], replies[i + 1]
            ttl = pttl / 1000.0 if isinstance(pttl, int) and pttl > 0 else None
            out.append((value if isinstance(value, bytes) else None, ttl))
        return out

    async def set_many(
        self, items: Mapping[str, bytes], ttl_s: float, ttls: Mapping[str, float] | None = None
    ) -> None:
        """Set every item (one pipelined round trip) for ``ttl_s``, or ``ttls[key]``."""
        self._check()
        if not items:
            return
        start = time.perf_counter()
        ttls = ttls or {}
        try:
            client = await self._ensure_client()
            async with client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    px = max(1, int(ttls.get(key, ttl_s) * 1000))
                    pipe.set(self.prefix + key, value, px=px)
                await pipe.execute()
        except _FAILURES as exc:
            raise self._failed("set", exc) from exc
        self._succeeded()
        self._observer.cache_latency("l2", "set", time.perf_counter() - start)

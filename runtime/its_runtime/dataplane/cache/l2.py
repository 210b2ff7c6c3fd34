"""L2: Redis through ``redis.asyncio``, pooled, pipelined, standalone or cluster.

* **Pool and pipelining.** One client with a bounded connection pool per process (per
  node in a cluster); multi-key reads and writes go through one non-transactional
  pipeline (one round trip; in a cluster redis-py splits it per node, so keys in
  different slots work).
* **Cluster support.** ``cluster=None`` (``cache.cluster: auto``) asks the URL's node
  whether it is in a cluster and picks ``RedisCluster`` or ``Redis``; ``True``/``False``
  (``cluster``/``standalone``) skip the question (:mod:`.redis_client`).
* **Fail fast, degrade, come back.** Socket timeouts are short and redis-py's own
  retries are off: a dead Redis must cost a request milliseconds, not seconds. Any
  exception from the client is a failure (cluster errors included, which are not all
  ``RedisError``s): L2 is then *degraded*, callers get :class:`L2UnavailableError`
  (and use L1 and the database), and calls fail immediately until the retry time,
  when one call probes again. A background task probes too (at the retry time while
  degraded, every ``health_interval_s`` while up), so L2 recovers without traffic
  and a cluster that went down shows as degraded before a request finds out. The
  task survives anything a probe raises. Errors are counted by operation.
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

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from its_runtime.config import CacheConfig
from its_runtime.dataplane.cache import redis_client
from its_runtime.dataplane.ingest.backoff import Backoff
from its_runtime.observability import dataplane_stats

log = logging.getLogger(__name__)

#: ``cache.cluster`` of the runtime config -> ``RedisL2(cluster=...)``.
CLUSTER_MODES: dict[str, bool | None] = {"auto": None, "standalone": False, "cluster": True}


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
        health_interval_s: float = 5.0,
        observer: dataplane_stats.CacheObserver | None = None,
    ) -> None:
        self._observer = observer or dataplane_stats.PROMETHEUS.cache
        self.url = url
        self.max_connections = max_connections
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.cluster = cluster
        self.prefix = key_prefix
        self.health_interval_s = health_interval_s
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

    @classmethod
    def from_config(
        cls,
        url: str,
        config: CacheConfig,
        *,
        observer: dataplane_stats.CacheObserver | None = None,
    ) -> RedisL2:
        """The L2 that the runtime config's ``cache`` section describes."""
        return cls(
            url,
            max_connections=config.max_connections,
            socket_timeout_s=config.socket_timeout_ms / 1000.0,
            connect_timeout_s=config.connect_timeout_ms / 1000.0,
            cluster=CLUSTER_MODES[config.cluster],
            observer=observer,
        )

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
            client, cluster = await redis_client.connect(self.url, self._options(), self.cluster)
            self._client, self.cluster = client, cluster
            log.info("redis L2 at %s (%s)", self.url, "cluster" if cluster else "standalone")
            return client

    def start(self) -> None:
        """Start the background probe that brings L2 back without traffic."""
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(), name="its-redis-monitor"
            )

    @property
    def watching(self) -> bool:
        """Whether the background probe is running."""
        return self._monitor is not None and not self._monitor.done()

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _watch(self) -> None:
        """Probe at the retry time while degraded, every ``health_interval_s`` while up.
        Nothing a probe raises ends the loop: it is logged and the next probe comes."""
        next_probe = time.monotonic() + self.health_interval_s
        while True:
            try:
                now = time.monotonic()
                if self.up:
                    await asyncio.sleep(max(0.1, min(1.0, next_probe - now)))
                else:
                    await asyncio.sleep(max(0.1, self._retry_at - now))
                now = time.monotonic()
                if now >= (next_probe if self.up else self._retry_at):
                    next_probe = now + self.health_interval_s
                    with contextlib.suppress(L2UnavailableError):
                        await self.ping()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis L2 health probe failed unexpectedly; probing on")

    # -- state ----------------------------------------------------------------------

    def _check(self) -> None:
        if not self.up and time.monotonic() < self._retry_at:
            raise L2UnavailableError(f"redis degraded: {self.last_error}")

    def _failed(self, op: str, exc: BaseException) -> L2UnavailableError:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not isinstance(exc, redis_client.FAILURES):
            log.error("redis L2 %s raised an unexpected error", op, exc_info=exc)
        if self.up:
            self.down_since = time.time()
            log.warning("redis L2 degraded (%s); serving from L1 and the database", self.last_error)
        self.up = False
        self._retry_at = time.monotonic() + self._backoff.next_delay()
        self._observer.l2_failed(op)
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
        """Probe: ``PING`` standalone; in a cluster, every node's ``cluster_state``."""
        self._check()
        try:
            client = await self._ensure_client()
            await redis_client.probe(client, bool(self.cluster))
        except Exception as exc:
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
        except Exception as exc:
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
        except Exception as exc:
            raise self._failed("set", exc) from exc
        self._succeeded()
        self._observer.cache_latency("l2", "set", time.perf_counter() - start)

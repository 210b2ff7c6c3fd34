"""L1 then L2: the cache the pipeline and the query API use.

Lookups try L1, then L2 (one pipelined round trip for all L1 misses), and copy L2
hits into L1 for the rest of their remaining TTL (never longer, so L1 cannot serve a
value that L2 already expired). Writes go to both. A degraded L2 costs nothing but a
counted error: the result is a miss and the caller computes the value (from the
database) as if there were no L2. Hit, miss and error counts and latencies are
reported per level to a :class:`~its_runtime.observability.dataplane_stats.CacheObserver`
(by default L1's, so one cache reports to one place).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.l2 import L2UnavailableError, RedisL2
from its_runtime.observability import dataplane_stats


@dataclass(frozen=True)
class CacheResult:
    value: bytes | None
    #: "l1", "l2", or None for a miss.
    level: str | None


class TieredCache:
    def __init__(
        self,
        l1: L1Cache,
        l2: RedisL2 | None = None,
        *,
        observer: dataplane_stats.CacheObserver | None = None,
    ) -> None:
        self._observer = observer or l1.observer
        self.l1 = l1
        self.l2 = l2
        self.l2_hits = 0

    @property
    def ttl_s(self) -> float:
        return self.l1.ttl_s

    async def get(self, key: str) -> CacheResult:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[CacheResult]:
        out: list[CacheResult | None] = []
        missing: list[int] = []
        for i, key in enumerate(keys):
            start = time.perf_counter()
            value = self.l1.get(key)
            self._observer.cache_latency("l1", "get", time.perf_counter() - start)
            if value is not None:
                self._observer.cache_lookup("l1", "hit")
                out.append(CacheResult(value, "l1"))
            else:
                self._observer.cache_lookup("l1", "miss")
                out.append(None)
                missing.append(i)
        if missing and self.l2 is not None:
            try:
                found = await self.l2.get_many([keys[i] for i in missing])
            except L2UnavailableError:
                self._observer.cache_lookup("l2", "error", len(missing))
            else:
                for i, (value, ttl) in zip(missing, found, strict=True):
                    if value is None:
                        self._observer.cache_lookup("l2", "miss")
                        continue
                    self._observer.cache_lookup("l2", "hit")
                    self.l2_hits += 1
                    self.l1.set(keys[i], value, min(ttl or self.l1.ttl_s, self.l1.ttl_s))
                    out[i] = CacheResult(value, "l2")
        return [r if r is not None else CacheResult(None, None) for r in out]

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        await self.set_many({key: value}, ttl_s=ttl_s)

    async def set_many(
        self,
        items: Mapping[str, bytes],
        *,
        ttl_s: float | None = None,
        l2: bool = True,
        ttls: Mapping[str, float] | None = None,
    ) -> None:
        """Set ``items`` in both levels for ``ttl_s`` (default: the cache's), or for
        ``ttls[key]`` where a key has its own lifetime."""
        ttl = self.l1.ttl_s if ttl_s is None else ttl_s
        ttls = ttls or {}
        start = time.perf_counter()
        for key, value in items.items():
            self.l1.set(key, value, ttls.get(key, ttl))
        self._observer.cache_latency("l1", "set", time.perf_counter() - start)
        if l2 and self.l2 is not None:
            with contextlib.suppress(L2UnavailableError):
                await self.l2.set_many(items, ttl, ttls)

    def details(self) -> dict[str, Any]:
        return {
            "l1": {"entries": len(self.l1), "hits": self.l1.hits, "misses": self.l1.misses},
            "l2": self.l2.details() if self.l2 is not None else {"status": "disabled"},
        }

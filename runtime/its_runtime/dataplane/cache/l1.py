"""L1: an in-process LRU cache with a per-entry time to live.

An ``OrderedDict`` gives O(1) get/set/evict; expiry is checked on access (no timer
thread), and the least recently used entry goes when the capacity is reached. The
clock is injectable so tests can expire entries without sleeping. Size and evictions
are reported to a :class:`~its_runtime.observability.dataplane_stats.CacheObserver`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from its_runtime.observability import dataplane_stats


class L1Cache:
    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        observer: dataplane_stats.CacheObserver | None = None,
    ) -> None:
        self.observer = observer or dataplane_stats.PROMETHEUS.cache
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._data[key]
            self.observer.l1_evicted("expired")
            self.observer.l1_entries(len(self._data))
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if self.max_entries <= 0:
            return
        ttl = self.ttl_s if ttl_s is None else ttl_s
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.observer.l1_evicted("capacity")
        self.observer.l1_entries(len(self._data))

    def delete(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self.observer.l1_entries(len(self._data))

    def clear(self) -> None:
        self._data.clear()
        self.observer.l1_entries(0)

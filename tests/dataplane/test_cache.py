"""The two-level cache: L1 LRU+TTL, Redis L2 (pipelined, cluster-aware), degradation."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from its_devenv import redis_cluster as devredis
from its_devenv import services as devservices
from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.l2 import RedisL2
from its_runtime.dataplane.cache.tiered import TieredCache
from its_runtime.dataplane.ingest.backoff import Backoff
from tests.dataplane.support import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_l1_entries_expire_after_their_ttl_and_the_least_recently_used_go_first() -> None:
    clock = Clock()
    l1 = L1Cache(max_entries=3, ttl_s=5.0, clock=clock)
    for key in "abc":
        l1.set(key, key.encode())
    assert l1.get("a") == b"a"  # "a" is now the most recently used
    l1.set("d", b"d")
    assert l1.get("b") is None  # "b" was least recently used: evicted
    assert [l1.get(k) for k in "acd"] == [b"a", b"c", b"d"]
    ttl = L1Cache(max_entries=10, ttl_s=5.0, clock=clock)
    ttl.set("long", b"l")
    ttl.set("short", b"s", ttl_s=1.0)
    clock.now += 1.5
    assert ttl.get("short") is None
    assert ttl.get("long") == b"l"  # reading does not extend the lifetime
    clock.now += 4.0
    assert ttl.get("long") is None
    assert len(ttl) == 0


@pytest.mark.services
async def test_a_value_cached_by_one_replica_is_an_l2_hit_for_another(redis_url: str) -> None:
    one = TieredCache(L1Cache(100, 5.0), RedisL2(redis_url))
    two = TieredCache(L1Cache(100, 5.0), RedisL2(redis_url))
    try:
        await one.set_many({f"k{i}": f"v{i}".encode() for i in range(5)}, ttl_s=2.0)
        first = await two.get_many(["k0", "k3", "nope"])
        assert [(r.value, r.level) for r in first] == [(b"v0", "l2"), (b"v3", "l2"), (None, None)]
        again = await two.get_many(["k0", "k3"])
        assert [r.level for r in again] == ["l1", "l1"]
        # L1 keeps an L2 value no longer than Redis does.
        await asyncio.sleep(2.1)
        assert (await two.get("k0")).value is None
    finally:
        await one.l2.close()  # type: ignore[union-attr]
        await two.l2.close()  # type: ignore[union-attr]


@pytest.mark.services
async def test_a_redis_outage_degrades_to_l1_fails_fast_and_recovers_by_itself(
    services: devservices.Services, redis_url: str
) -> None:
    l2 = RedisL2(redis_url, backoff=Backoff(initial_s=0.2, max_s=0.5))
    cache = TieredCache(L1Cache(100, 30.0), l2)
    l2.start()
    try:
        await cache.set("warm", b"1")
        await asyncio.to_thread(services.stop_redis)
        start = time.perf_counter()
        assert (await cache.get("warm")).level == "l1"
        cold = await cache.get("cold")  # an L2 lookup against a dead server: a miss
        assert cold.value is None
        assert not l2.up
        assert l2.details()["status"] == "degraded"
        errors = l2.errors
        for _ in range(20):  # while degraded, calls do not even try: no timeouts piling up
            assert (await cache.get("cold")).value is None
        assert time.perf_counter() - start < 1.0
        assert l2.errors <= errors + 1
        await cache.set("while-down", b"2")  # writes still land in L1
        assert (await cache.get("while-down")).level == "l1"
        await asyncio.to_thread(services.start_redis)
        assert await eventually(lambda: l2.up, 10)  # the monitor reconnected, no traffic
        await cache.set("after", b"3")
        client = aioredis.from_url(redis_url)
        try:
            assert await client.get("its:after") == b"3"
        finally:
            await client.aclose()
    finally:
        await l2.close()


@pytest.fixture
def redis_cluster(tmp_path: pathlib.Path) -> Iterator[str]:
    """A real three-master Redis Cluster of this test's own (``its_devenv.redis_cluster``)."""
    with devredis.running(tmp_path / "cluster") as cluster:
        yield cluster.url


@pytest.mark.slow
async def test_a_redis_cluster_is_detected_and_keys_spread_over_its_nodes(
    redis_cluster: str,
) -> None:
    l2 = RedisL2(redis_cluster)
    try:
        items = {f"camera-{i}": f"value-{i}".encode() for i in range(30)}
        await l2.set_many(items, ttl_s=10)
        got = await l2.get_many(list(items))
        assert [v for v, _ in got] == list(items.values())
        assert all(ttl is not None and 0 < ttl <= 10 for _, ttl in got)
        assert l2.details()["mode"] == "cluster"
    finally:
        await l2.close()

"""L2 against a real Redis Cluster: found, used across slots, broken in every way.

Three ``redis-server --cluster-enabled yes`` masters on loopback per test
(``its_devenv.redis_cluster``, cluster-node-timeout 1 s): a node SIGKILLed (its slots
fail fast, then ``cluster_state:fail``), SIGSTOPped (calls wait no longer than the
configured timeouts), every node gone, and no node there at all at start (``RedisCluster
.initialize()`` raises ``RedisClusterException``, which is no ``RedisError``). In every
case L2 degrades with the cause, callers get L1 or the database, the HTTP API answers
200, and the health watcher keeps probing and brings L2 back.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.exceptions

from its_devenv import redis_cluster as devredis
from its_operator.api import crdgen, resource
from its_operator.builders import configmap
from its_runtime import config as rc
from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.l2 import L2UnavailableError, RedisL2
from its_runtime.dataplane.cache.tiered import TieredCache
from its_runtime.dataplane.ingest.backoff import Backoff
from tests.dataplane.support import camera, eventually, runtime_config, serving

#: Measured fail-fast times, printed at the end of the session with ``-s``/``-rA``.
TIMINGS: dict[str, float] = {}


def _cluster_error_names(cls: type[BaseException]) -> set[str]:
    return {cls.__name__}.union(*(_cluster_error_names(sub) for sub in cls.__subclasses__()))


def _names_a_cluster_error(text: str) -> bool:
    """The error names ``RedisClusterException`` (redis-py 7) or one of its subclasses
    (redis-py 8 raises ``RedisClusterUnreachableError`` when no startup node answers)."""
    names = _cluster_error_names(redis.exceptions.RedisClusterException)
    return any(name in text for name in names)


def quick_backoff() -> Backoff:
    return Backoff(initial_s=0.05, max_s=0.2, jitter=0.0)


def closed_url() -> str:
    """A loopback URL nothing listens on (nor on its cluster-bus port)."""
    return f"redis://127.0.0.1:{devredis.free_node_ports(1)[0]}/0"


async def slowest_failure(calls: list[Callable[[], Awaitable[Any]]], l2: RedisL2) -> float:
    """Run each call (each must reach Redis and fail); return the slowest one's time."""
    worst = 0.0
    for call in calls:
        errors = l2.errors
        start = time.perf_counter()
        with pytest.raises(L2UnavailableError):
            await call()
        worst = max(worst, time.perf_counter() - start)
        assert l2.errors == errors + 1, "the call was refused without trying Redis"
    return worst


# (a) ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_auto_finds_the_cluster_and_pipelines_reads_and_writes_across_its_slots(
    redis_cluster: devredis.RedisCluster,
) -> None:
    settings = rc.CacheConfig(max_connections=8, socket_timeout_ms=200, connect_timeout_ms=100)
    l2 = RedisL2.from_config(redis_cluster.url, settings)
    other = TieredCache(L1Cache(100, 5.0), RedisL2(redis_cluster.url_of(redis_cluster.ports[2])))
    try:
        items = {f"camera-{i}": f"value-{i}".encode() for i in range(60)}
        await l2.set_many(items, ttl_s=10, ttls={"camera-0": 2})
        owners = redis_cluster.owners(l2.prefix + k for k in items)
        assert set(owners.values()) == set(redis_cluster.ports)  # every node holds some
        got = await l2.get_many([*items, "absent"])
        assert [v for v, _ in got] == [*items.values(), None]
        assert got[0][1] is not None
        assert 0 < got[0][1] <= 2
        assert all(ttl is not None and 2 < ttl <= 10 for _, ttl in got[1:-1])
        assert got[-1][1] is None
        await l2.ping()  # the cluster probe: every node answers cluster_state:ok
        assert l2.details() == {
            "status": "ok",
            "mode": "cluster",
            "error": None,
            "down_since": None,
            "errors": 0,
        }
        assert (l2.max_connections, l2.socket_timeout_s, l2.connect_timeout_s) == (8, 0.2, 0.1)
        # Another replica, through another startup node: L2 hits for keys of every slot.
        found = await other.get_many(list(items))
        assert {r.level for r in found} == {"l2"}
        assert [r.value for r in found] == list(items.values())
    finally:
        await l2.close()
        assert other.l2 is not None
        await other.l2.close()


# (b) ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_killed_node_fails_its_keys_fast_and_degrades_l2_until_it_is_back(
    redis_cluster: devredis.RedisCluster,
) -> None:
    l2 = RedisL2(redis_cluster.url, backoff=quick_backoff(), health_interval_s=0.2)
    # A second client with no backoff and no watcher: every call really goes to Redis.
    direct = RedisL2(redis_cluster.url, backoff=Backoff(initial_s=0.0, max_s=0.0))
    cache = TieredCache(L1Cache(1000, 60.0), l2)
    l2.start()
    try:
        items = {f"camera-{i}": f"value-{i}".encode() for i in range(30)}
        await cache.set_many(items)
        await direct.get_many(list(items))
        owners = redis_cluster.owners(l2.prefix + k for k in items)
        victim = owners[l2.prefix + "camera-0"]
        on_victim = [k for k in items if owners[l2.prefix + k] == victim]
        await asyncio.to_thread(redis_cluster.kill, victim)

        # Its keys fail fast: refused connections, no redis-py retries, no waiting.
        calls: list[Callable[[], Awaitable[Any]]] = []
        for _ in range(5):
            calls.append(lambda: direct.get_many(on_victim))
            calls.append(lambda: direct.set_many({k: b"new" for k in on_victim}, 5.0))
        TIMINGS["killed node, per call"] = worst = await slowest_failure(calls, direct)
        assert worst < 1.0
        assert f"127.0.0.1:{victim}" in (direct.last_error or "")

        # The watcher finds the dead node without traffic and L2 stays degraded (a PING
        # to a live node would say "up" and make it flap); L1 answers meanwhile.
        assert await eventually(lambda: not l2.up, 3)
        assert f"127.0.0.1:{victim} unreachable" in (l2.last_error or "")
        errors, flapped = l2.errors, False
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            flapped |= l2.up
            await asyncio.sleep(0.02)
        assert not flapped
        assert l2.errors > errors  # still probing
        assert l2.watching
        warm = await cache.get_many(list(items))
        assert [(r.value, r.level) for r in warm] == [(v, "l1") for v in items.values()]
        assert (await cache.get("never-cached")).value is None
        await cache.set("written-while-down", b"1")
        assert (await cache.get("written-while-down")).level == "l1"

        # The others give up on it: cluster_state:fail, CLUSTERDOWN for every key. That
        # is a degraded L2 with that cause, not a crash.
        await asyncio.to_thread(redis_cluster.wait_state, "fail")
        assert await eventually(lambda: "cluster_state:fail" in (l2.last_error or ""), 3)
        assert l2.details()["status"] == "degraded"
        elsewhere = [k for k in items if owners[l2.prefix + k] != victim]
        worst = await slowest_failure([lambda: direct.get_many(elsewhere)] * 3, direct)
        TIMINGS["cluster down (CLUSTERDOWN), per call"] = worst
        assert worst < 1.0
        assert "ClusterDownError" in (direct.last_error or "")
        assert l2.watching

        # Back: the watcher sees the cluster heal and L2 serves again, no traffic needed.
        await asyncio.to_thread(redis_cluster.restart, victim)
        assert await eventually(lambda: l2.up, 10)
        assert l2.watching
        await cache.set("after", b"2")
        fresh = TieredCache(L1Cache(10, 5.0), l2)
        assert (await fresh.get("after")).level == "l2"
    finally:
        await l2.close()
        await direct.close()


@pytest.mark.slow
async def test_a_hung_node_costs_a_call_no_more_than_the_configured_timeouts(
    redis_cluster: devredis.RedisCluster,
) -> None:
    l2 = RedisL2(
        redis_cluster.url,
        socket_timeout_s=0.15,
        connect_timeout_s=0.15,
        backoff=Backoff(initial_s=0.0, max_s=0.0),  # every call tries Redis
    )
    try:
        keys = [f"camera-{i}" for i in range(30)]
        await l2.set_many(dict.fromkeys(keys, b"v"), 10.0)
        owners = redis_cluster.owners(l2.prefix + k for k in keys)
        victim = owners[l2.prefix + keys[0]]
        on_victim = [k for k in keys if owners[l2.prefix + k] == victim]
        redis_cluster.pause(victim)
        try:
            worst = await slowest_failure([lambda: l2.get_many(on_victim)] * 3, l2)
        finally:
            redis_cluster.resume(victim)
        TIMINGS["hung node (150 ms timeouts), per call"] = worst
        assert 0.1 < worst < 1.0  # it did wait for the socket timeout, and no longer
        assert "Timeout" in (l2.last_error or "")
    finally:
        await l2.close()


@pytest.mark.slow
async def test_the_watcher_survives_a_vanished_cluster_and_brings_l2_back(
    redis_cluster: devredis.RedisCluster,
) -> None:
    l2 = RedisL2(redis_cluster.url, backoff=quick_backoff(), health_interval_s=0.2)
    l2.start()
    try:
        await l2.set_many({"k": b"v"}, 10.0)
        await asyncio.to_thread(redis_cluster.stop)
        assert await eventually(lambda: not l2.up, 3)
        errors = l2.errors
        # Each probe now finds no node: RedisCluster.initialize() raises
        # RedisClusterException (redis-py 7), or (redis-py 8) the client is kept and the
        # health probe names every node unreachable. The watcher counts it and probes on.
        assert await eventually(lambda: l2.errors >= errors + 4, 5)
        assert l2.watching
        last = l2.last_error or ""
        assert _names_a_cluster_error(last) or (
            last.startswith("ClusterUnhealthyError") and "unreachable" in last
        ), last
        for port in redis_cluster.ports[:-1]:
            await asyncio.to_thread(redis_cluster.restart, port, wait=False)
        await asyncio.to_thread(redis_cluster.restart, redis_cluster.ports[-1])
        assert await eventually(lambda: l2.up, 10)
        await l2.set_many({"k": b"again"}, 10.0)
        assert (await l2.get_many(["k"]))[0][0] == b"again"
    finally:
        await l2.close()


async def test_the_watcher_logs_whatever_a_probe_raises_and_keeps_probing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    l2 = RedisL2(closed_url(), cluster=True, backoff=quick_backoff(), health_interval_s=0.05)
    probes = 0
    real_ping = l2.ping

    async def ping() -> None:
        nonlocal probes
        probes += 1
        if probes <= 3:
            raise RuntimeError("a probe bug")
        await real_ping()

    l2.ping = ping  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "its_runtime.dataplane.cache.l2"):
        l2.start()
        try:
            assert await eventually(lambda: probes >= 6, 5)
            assert l2.watching
            assert not l2.up  # the real probes (no node there) found L2 down
        finally:
            await l2.close()
    assert "a probe bug" in caplog.text
    assert not l2.watching


# (c) ------------------------------------------------------------------------------------


async def test_a_cluster_unreachable_at_start_degrades_l2_and_nothing_escapes() -> None:
    l2 = RedisL2(closed_url(), cluster=True, backoff=Backoff(initial_s=0.0, max_s=0.0))
    cache = TieredCache(L1Cache(10, 5.0), l2)
    try:
        start = time.perf_counter()
        with pytest.raises(L2UnavailableError) as info:
            await l2.get_many(["a"])
        cause = info.value.__cause__
        # What the old code let through: it is not a RedisError.
        assert isinstance(cause, redis.exceptions.RedisClusterException)
        assert not isinstance(cause, redis.exceptions.RedisError)
        with pytest.raises(L2UnavailableError):
            await l2.set_many({"a": b"1"}, 5.0)
        with pytest.raises(L2UnavailableError):
            await l2.ping()
        details = l2.details()
        assert details["status"] == "degraded"
        assert details["mode"] == "cluster"
        assert details["errors"] == 3
        assert _names_a_cluster_error(details["error"])
        assert "cannot be connected" in details["error"]
        # Through the tiered cache: a miss and an L1 write, never an exception.
        assert (await cache.get("b")).value is None
        await cache.set("b", b"2")
        assert (await cache.get("b")).level == "l1"
        TIMINGS["cluster unreachable at start, 5 calls"] = time.perf_counter() - start
        assert time.perf_counter() - start < 1.0
    finally:
        await l2.close()


@pytest.mark.slow
async def test_cluster_mode_against_a_standalone_server_is_degraded_with_the_reason(
    standalone_redis: str,
) -> None:
    l2 = RedisL2(standalone_redis, cluster=True)
    try:
        with pytest.raises(L2UnavailableError):
            await l2.get_many(["a"])
        assert "Cluster mode is not enabled" in (l2.last_error or "")
    finally:
        await l2.close()


@pytest.mark.slow
async def test_counts_answer_from_the_database_while_the_cluster_is_unreachable(
    scene_video: pathlib.Path, pg_dsn: str, tmp_path: pathlib.Path
) -> None:
    config = runtime_config(
        [camera("cam-1", scene_video.as_uri())],
        journal_dir=tmp_path,
        cache={"cluster": "cluster", "socket_timeout_ms": 100, "connect_timeout_ms": 100},
    )
    env = {"ITS_DATABASE_DSN": pg_dsn, "ITS_REDIS_URL": closed_url()}
    async with serving(config, env) as (_, plane, client):
        params = {"from": str(time.time() - 600), "interval": "1h"}
        levels = []
        for _ in range(3):
            async with client.get("/v1/cameras/cam-1/counts", params=params) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["camera"] == "cam-1"
                levels.append(resp.headers["X-Cache"])
        assert levels == ["miss", "l1", "l1"]  # the database, then this replica's L1
        async with client.get("/v1/cameras/cam-1/latest") as resp:
            assert resp.status == 200, await resp.text()
        async with client.get("/ready") as resp:
            assert resp.status == 200
            redis_dep = (await resp.json())["dependencies"]["redis"]
        assert redis_dep["healthy"] is False
        assert _names_a_cluster_error(redis_dep["detail"])
        assert plane.cache.l2 is not None
        assert plane.cache.l2.cluster is True
        assert plane.cache.l2.watching


# The CR -----------------------------------------------------------------------------------


def _pipeline(cache: dict[str, Any]) -> resource.Pipeline:
    return resource.parse(
        {
            "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-1"},
            "spec": {
                "model": {"path": "/models/det.pt2"},
                "runtime": {"image": "registry.local/its-runtime:0.1.0"},
                "cameras": [{"name": "cam-1", "url": "rtsp://cams.local/1"}],
                "cache": cache,
            },
        }
    )


def _rendered(cache: dict[str, Any]) -> rc.CacheConfig:
    """The ``cache`` section of the runtime config the operator renders for the CR."""
    config_map = configmap.build(_pipeline(cache))
    return rc.RuntimeConfig.from_yaml(config_map["data"][rc.CONFIGMAP_KEY]).cache


def _client_settings(l2: RedisL2) -> tuple[bool | None, int, float, float]:
    return (l2.cluster, l2.max_connections, l2.socket_timeout_s, l2.connect_timeout_s)


def test_the_cr_cache_section_sets_topology_pool_and_timeouts_of_the_runtime() -> None:
    url = "redis://redis.its:6379"
    cache = _rendered(
        {
            "redisUrl": url,
            "cluster": "cluster",
            "maxConnections": 16,
            "socketTimeoutMs": 120,
            "connectTimeoutMs": 80,
        }
    )
    assert (cache.cluster, cache.max_connections) == ("cluster", 16)
    assert (cache.socket_timeout_ms, cache.connect_timeout_ms) == (120, 80)
    assert _client_settings(RedisL2.from_config(url, cache)) == (True, 16, 0.12, 0.08)
    for mode, flag in (("auto", None), ("standalone", False)):
        assert (
            RedisL2.from_config(url, _rendered({"redisUrl": url, "cluster": mode})).cluster is flag
        )
    # Left out: today's client settings.
    default = RedisL2.from_config(url, _rendered({"redisUrl": url}))
    assert _client_settings(default) == (None, 64, 0.25, 0.25)
    for bad in ({"cluster": "sentinel"}, {"socketTimeoutMs": 0}, {"maxConnections": 0}):
        with pytest.raises(resource.InvalidSpecError, match=r"spec\.cache"):
            _pipeline({"redisUrl": url, **bad})
    schema = crdgen.pipeline_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["spec"]["properties"]["cache"]["properties"]
    modes = typing.get_args(rc.CacheConfig.model_fields["cluster"].annotation)
    assert fields["cluster"]["enum"] == list(modes) == ["auto", "standalone", "cluster"]
    timeout = fields["socketTimeoutMs"]
    assert (timeout["minimum"], timeout["maximum"], timeout["default"]) == (10, 60_000, 250)
    assert fields["maxConnections"]["default"] == 64


@pytest.fixture(scope="module", autouse=True)
def _report_timings() -> Any:
    yield
    for what, seconds in TIMINGS.items():
        print(f"\n[fail-fast] {what}: {seconds * 1000:.1f} ms")

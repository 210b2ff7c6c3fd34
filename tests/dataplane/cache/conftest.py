"""Fixtures of the L2 cache tests: a real Redis Cluster of one's own (three masters on
loopback, ``its_devenv.redis_cluster``), started per test since tests kill its nodes."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from its_devenv import redis_cluster as devredis


@pytest.fixture
def redis_cluster(tmp_path: pathlib.Path) -> Iterator[devredis.RedisCluster]:
    try:
        devredis.binaries()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    with devredis.running(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
def standalone_redis(tmp_path: pathlib.Path) -> Iterator[str]:
    """A plain redis-server of this test's own (not the shared one others' tests use)."""
    with devredis.standalone(tmp_path) as url:
        yield url

"""The redis-py side of L2: which client to build, and what "healthy" means for it.

* **Which client.** ``cluster=None`` asks the URL's node ``INFO cluster``: a node with
  ``cluster_enabled:1`` gets a ``RedisCluster`` (it follows MOVED/ASK redirects and
  discovers the other nodes), any other a plain ``Redis``. ``True``/``False`` skip the
  question. A ``RedisCluster`` is initialised here (``CLUSTER SLOTS`` from the startup
  node) and closed again if that fails, so a half-built client is never kept.
* **Healthy.** Standalone: ``PING`` answers. Cluster: every primary answers ``CLUSTER
  INFO`` with ``cluster_state:ok``. A ``PING`` is not enough there: it goes to one
  node, which answers while another primary is dead or the cluster is down
  (``cluster_state:fail``, every keyed command refused with ``CLUSTERDOWN``); a probe
  that said "up" then would make L2 flap between up and degraded. Replicas are not
  asked: reads and writes go to primaries, so a dead replica costs no request.
* **Every way to fail.** redis-py's cluster errors are not all ``RedisError``s:
  ``RedisClusterException`` and its subclasses (``SlotNotCoveredError``,
  ``CrossSlotTransactionError``, ...) derive from ``Exception`` directly, and
  ``RedisCluster.initialize()`` raises ``RedisClusterException`` when no startup node
  answers. :data:`FAILURES` names them all; L2 treats any other exception from the
  client as a failure too (logged with its traceback, since it would be a bug).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster


class ClusterUnhealthyError(RuntimeError):
    """A cluster primary is unreachable or does not report ``cluster_state:ok``."""


#: What redis-py and the sockets under it raise when Redis cannot serve a call.
FAILURES: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,  # ConnectionError, TimeoutError, ClusterDownError, ...
    redis.exceptions.RedisClusterException,  # not a RedisError: SlotNotCoveredError, ...
    ClusterUnhealthyError,
    OSError,
    TimeoutError,
)


async def _close(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()


async def connect(url: str, options: Mapping[str, Any], cluster: bool | None) -> tuple[Any, bool]:
    """A ready client for ``url`` and whether it is a cluster client."""
    if cluster is None:
        probe = aioredis.Redis.from_url(url, **options)
        try:
            info = await probe.info("cluster")
        finally:
            await _close(probe)
        cluster = bool(int(info.get("cluster_enabled", 0)))
    if not cluster:
        return aioredis.Redis.from_url(url, **options), False
    client = RedisCluster.from_url(url, **options)
    try:
        await client.initialize()
    except BaseException:
        await _close(client)
        raise
    return client, True


async def probe(client: Any, cluster: bool) -> None:
    """Return if ``client`` can serve every key; else raise what is wrong."""
    if not cluster:
        await client.ping()
        return
    await client.initialize()  # a no-op unless an earlier failure asked for a refresh
    nodes = client.get_primaries()
    replies = await asyncio.gather(
        *(client.execute_command("CLUSTER INFO", target_nodes=node) for node in nodes),
        return_exceptions=True,
    )
    problems: list[str] = []
    for node, reply in zip(nodes, replies, strict=True):
        if isinstance(reply, BaseException):
            problems.append(f"{node.name} unreachable ({type(reply).__name__}: {reply})")
        elif not isinstance(reply, Mapping) or reply.get("cluster_state") != "ok":
            state = reply.get("cluster_state") if isinstance(reply, Mapping) else reply
            problems.append(f"{node.name} cluster_state:{state}")
    if problems:
        raise ClusterUnhealthyError("; ".join(sorted(problems)))

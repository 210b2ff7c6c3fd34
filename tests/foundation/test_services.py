"""PostgreSQL and Redis are real servers on loopback that tests can stop and start."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from its_devenv import services as devservices

pytestmark = pytest.mark.services


async def test_postgres_answers_through_asyncpg(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        assert int(version.split(".")[0]) >= 13
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        assert (await conn.fetchval("SELECT inet_server_addr()")).exploded == "127.0.0.1"
    finally:
        await conn.close()


async def test_redis_answers_ping_set_get_through_asyncio(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("its:test", "value", ex=30)
        assert await client.get("its:test") == b"value"
    finally:
        await client.aclose()


async def test_postgres_can_be_stopped_and_restarted_on_the_same_address(
    services: devservices.Services, pg_dsn: str
) -> None:
    services.stop_postgres()
    with pytest.raises(OSError, match=r"Connect call failed|refused"):
        await asyncpg.connect(pg_dsn, timeout=2)
    services.start_postgres()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_redis_can_be_stopped_and_restarted(
    services: devservices.Services, redis_url: str
) -> None:
    services.stop_redis()
    client = aioredis.from_url(redis_url, socket_connect_timeout=1)
    try:
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()
        services.start_redis()
        assert await client.ping() is True
    finally:
        await client.aclose()

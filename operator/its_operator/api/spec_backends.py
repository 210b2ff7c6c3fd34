"""``spec.cache`` and ``spec.database``: the services the runtime pods connect to.

Both reuse the runtime's own field definitions (pool sizes, cache size and TTL, Redis
topology and timeouts) via :func:`spec_fields.runtime_field`, and both keep
credentials out of the spec (a Secret key reference instead), so the one place that
says how a CR names its backends is here.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from its_operator.api import base, spec_fields
from its_runtime import config as rc


class CacheSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "!(has(self.redisUrl) && has(self.redisUrlSecretRef))",
                    "cache sets redisUrl or redisUrlSecretRef, not both",
                    ".redisUrl",
                )
            ]
        }
    )

    redis_url: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^rediss?://",
        description="Redis URL without credentials (use redisUrlSecretRef for one with them).",
    )
    redis_url_secret_ref: spec_fields.SecretKeyRef | None = Field(
        None, description="Secret key holding the Redis URL."
    )
    l1_max_entries: int = spec_fields.runtime_field(rc.CacheConfig, "l1_max_entries")
    ttl_seconds: float = spec_fields.runtime_field(rc.CacheConfig, "ttl_seconds")
    cluster: Literal["auto", "standalone", "cluster"] = spec_fields.runtime_field(
        rc.CacheConfig,
        "cluster",
        description="Redis topology: auto (the runtime asks the URL's node whether cluster "
        "mode is on), standalone (one server) or cluster (Redis Cluster; the URL names a "
        "startup node and the others are discovered).",
    )
    max_connections: int = spec_fields.runtime_field(
        rc.CacheConfig,
        "max_connections",
        description="Most Redis connections per runtime pod (per node in a cluster); a "
        "request that finds none free is answered from L1 and the database.",
    )
    socket_timeout_ms: int = spec_fields.runtime_field(
        rc.CacheConfig,
        "socket_timeout_ms",
        description="Longest wait for a Redis reply. Past it the cache is degraded for a "
        "while (requests are answered from L1 and the database) and probed in the background.",
    )
    connect_timeout_ms: int = spec_fields.runtime_field(
        rc.CacheConfig,
        "connect_timeout_ms",
        description="Longest wait to open a Redis connection; past it as for socketTimeoutMs.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.redis_url is not None and self.redis_url_secret_ref is not None:
            raise ValueError("cache sets redisUrl or redisUrlSecretRef, not both")
        return self

    @property
    def redis_enabled(self) -> bool:
        return self.redis_url is not None or self.redis_url_secret_ref is not None


class DatabaseSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "self.poolMinSize <= self.poolMaxSize",
                    "database.poolMinSize must not exceed database.poolMaxSize",
                    ".poolMinSize",
                )
            ]
        }
    )

    dsn_secret_ref: spec_fields.SecretKeyRef = Field(
        ..., description="Secret key holding the PostgreSQL DSN (never put it in the spec)."
    )
    pool_min_size: int = spec_fields.runtime_field(rc.DatabaseConfig, "pool_min_size")
    pool_max_size: int = spec_fields.runtime_field(rc.DatabaseConfig, "pool_max_size")

    @model_validator(mode="after")
    def _pool(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("database.poolMinSize must not exceed database.poolMaxSize")
        return self

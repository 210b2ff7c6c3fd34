"""The runtime config's service and process sections: cache, database, engine cache,
GPU, SLO and HTTP server.

Part of the one runtime config format (:mod:`its_runtime.config` re-exports every
class, and that is where callers import them from); split out only to keep each
module small. Like the rest of the format, it imports no torch: the operator image
imports it.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from its_runtime.wire import WireModel

__all__ = [
    "CacheConfig",
    "DatabaseConfig",
    "EngineCacheConfig",
    "GpuConfig",
    "ServerConfig",
    "SloConfig",
]


class CacheConfig(WireModel):
    redis_url_env: str | None = Field(
        None,
        description="Environment variable holding the Redis URL; unset disables the L2 cache.",
    )
    l1_max_entries: int = Field(4096, ge=0, le=10_000_000, description="L1 LRU capacity.")
    ttl_seconds: float = Field(5.0, gt=0, le=86400, description="Cache entry lifetime.")
    cluster: Literal["auto", "standalone", "cluster"] = Field(
        "auto", description="Redis topology; auto asks the URL's node if cluster mode is on."
    )
    max_connections: int = Field(64, ge=1, le=10_000, description="Redis pool size (per node).")
    socket_timeout_ms: int = Field(250, ge=10, le=60_000, description="Redis reply timeout.")
    connect_timeout_ms: int = Field(250, ge=10, le=60_000, description="Redis connect timeout.")


class DatabaseConfig(WireModel):
    dsn_env: str | None = Field(
        None, description="Environment variable holding the PostgreSQL DSN; unset disables it."
    )
    pool_min_size: int = Field(1, ge=0, le=100, description="Connections kept open.")
    pool_max_size: int = Field(8, ge=1, le=500, description="Most connections opened.")
    acquire_timeout_s: float = Field(5.0, gt=0, le=300, description="Pool acquire timeout.")
    statement_timeout_ms: int = Field(5000, ge=0, description="Per-session statement_timeout.")
    lock_timeout_ms: int = Field(2000, ge=0, description="Per-session lock_timeout.")
    idle_in_transaction_timeout_ms: int = Field(
        10000, ge=0, description="Per-session idle_in_transaction_session_timeout."
    )
    batch_max_rows: int = Field(2000, ge=1, description="Rows per COPY batch.")
    flush_interval_s: float = Field(
        0.5, gt=0, description="Longest wait before a batch is written."
    )
    journal_dir: str = Field(
        "/var/lib/its/journal", description="On-disk spool for events while the database is down."
    )
    journal_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Journal cap; the oldest events are dropped past it.",
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("poolMinSize must not exceed poolMaxSize")
        return self


class EngineCacheConfig(WireModel):
    dir: str = Field("/var/cache/its/engines", description="Engine cache directory (the PVC).")
    max_bytes: int = Field(
        10 * 1024**3, ge=1024 * 1024, description="Cache size cap; least recently used evicted."
    )


class GpuConfig(WireModel):
    memory_fraction: float | None = Field(
        None, gt=0, le=1, description="Per-process CUDA memory fraction."
    )
    expandable_segments: bool = Field(True, description="Caching allocator expandable segments.")
    max_split_size_mb: int | None = Field(None, ge=1, description="Allocator max_split_size_mb.")
    cuda_graphs: bool = Field(
        False,
        description=(
            "Replay the model from CUDA graphs, one per batch bucket, captured at warm-up "
            "(pays for small models at small batches; batches are then padded to buckets). "
            "A bucket that cannot be captured runs without one, recorded in fallbacks."
        ),
    )


class SloConfig(WireModel):
    p99_latency_ms: float = Field(100.0, gt=0, le=60000, description="p99 frame latency goal.")
    min_fps: float | None = Field(None, gt=0, description="Throughput goal across cameras.")
    window_s: float = Field(
        60.0, ge=1, le=3600, description="Sliding window of the performance report and alerts."
    )
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Alert when the window's share of failed frames is above."
    )
    max_queue_depth: int | None = Field(
        None, ge=1, description="Alert when more frames than this wait in the batcher's queue."
    )
    degradation_ratio: float = Field(
        1.5,
        gt=1,
        le=100,
        description="Degraded when the recent half-window's p95 latency is this many times "
        "the previous half's.",
    )


class ServerConfig(WireModel):
    host: str = Field("0.0.0.0", description="Listen address.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port (API, probes, metrics).")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger request bodies get HTTP 413."
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="Longest drain on SIGTERM.")
    jpeg_decode: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where HTTP JPEG bodies are decoded: gpu (nvJPEG onto the engine's CUDA "
        "device), cpu (PIL), or auto (gpu when the engine runs on CUDA). Falls back to cpu, "
        "with the reason reported, where nvJPEG cannot be used.",
    )

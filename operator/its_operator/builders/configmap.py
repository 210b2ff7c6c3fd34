"""The ConfigMap holding the runtime's config file, rendered from the spec.

The file is ``its_runtime.config.RuntimeConfig`` itself (the format both parts share),
so what the runtime parses at start is exactly what the operator validated. Secret
values never appear in it: the file names the environment variables that the
Deployment fills from Secrets. Its hash goes on the pod template, so a config change
rolls the pods.
"""

from __future__ import annotations

from its_operator.api import resource
from its_operator.builders import meta
from its_runtime import config as rc

#: Where the engine-cache volume is mounted (and the runtime keeps its engines).
ENGINE_CACHE_DIR = rc.EngineCacheConfig.model_fields["dir"].default
#: Fraction of the PVC the runtime may fill before it evicts old engines.
ENGINE_CACHE_FILL = 0.9


def runtime_config(p: resource.Pipeline) -> rc.RuntimeConfig:
    spec = p.spec
    cache = rc.CacheConfig()
    if spec.cache is not None:
        cache = rc.CacheConfig(
            redis_url_env=rc.REDIS_URL_ENV if spec.cache.redis_enabled else None,
            l1_max_entries=spec.cache.l1_max_entries,
            ttl_seconds=spec.cache.ttl_seconds,
        )
    database = rc.DatabaseConfig()
    if spec.database is not None:
        database = rc.DatabaseConfig(
            dsn_env=rc.DATABASE_DSN_ENV,
            pool_min_size=spec.database.pool_min_size,
            pool_max_size=spec.database.pool_max_size,
        )
    return rc.RuntimeConfig(
        model=spec.model,
        cameras=list(spec.cameras),
        cache=cache,
        database=database,
        engine_cache=rc.EngineCacheConfig(
            dir=ENGINE_CACHE_DIR,
            max_bytes=max(1024 * 1024, int(spec.engine_cache_bytes() * ENGINE_CACHE_FILL)),
        ),
        gpu=spec.gpu,
        slo=spec.slo,
        server=rc.ServerConfig(),
    )


def build(p: resource.Pipeline) -> meta.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta.metadata(p, meta.configmap_name(p)),
        "data": {rc.CONFIGMAP_KEY: runtime_config(p).to_yaml()},
    }


def config_hash(configmap: meta.Manifest) -> str:
    """Hash of the ConfigMap's data: the pod-template annotation that rolls pods."""
    return meta.canonical_hash(configmap["data"])

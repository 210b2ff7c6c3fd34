"""The ConfigMap holding the runtime's config file, rendered from the spec.

The file is ``its_runtime.config.RuntimeConfig`` itself (the format both parts share),
so what the runtime parses at start is exactly what the operator validated. Secret
values never appear in it: the file names the environment variables that the
Deployment fills from Secrets (a ``urlSecretRef`` camera becomes ``urlEnv``).
``scaleOut`` tells the replicas to share the cameras (the Leases carry the pipeline's
name as a label; timing and capacity come from the spec). Its hash goes on the pod
template, so a config change rolls the pods.
"""

from __future__ import annotations

import collections
import hashlib
import threading

from its_operator.api import resource
from its_operator.builders import meta
from its_runtime import camera_url
from its_runtime import config as rc

#: Where the engine-cache volume is mounted (and the runtime keeps its engines).
ENGINE_CACHE_DIR = rc.EngineCacheConfig.model_fields["dir"].default
#: Percent of the PVC the runtime may fill before it evicts old engines (integer
#: arithmetic: a float product overflowed on "1E310").
ENGINE_CACHE_FILL_PERCENT = 90


def runtime_config(p: resource.Pipeline) -> rc.RuntimeConfig:
    spec = p.spec
    cache = rc.CacheConfig()
    if spec.cache is not None:
        cache = rc.CacheConfig(
            redis_url_env=rc.REDIS_URL_ENV if spec.cache.redis_enabled else None,
            l1_max_entries=spec.cache.l1_max_entries,
            ttl_seconds=spec.cache.ttl_seconds,
            cluster=spec.cache.cluster,
            max_connections=spec.cache.max_connections,
            socket_timeout_ms=spec.cache.socket_timeout_ms,
            connect_timeout_ms=spec.cache.connect_timeout_ms,
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
        cameras=[_camera(c) for c in spec.cameras],
        cache=cache,
        database=database,
        engine_cache=rc.EngineCacheConfig(
            dir=ENGINE_CACHE_DIR,
            max_bytes=max(
                1024 * 1024, spec.engine_cache_bytes() * ENGINE_CACHE_FILL_PERCENT // 100
            ),
        ),
        gpu=spec.gpu,
        slo=spec.slo,
        server=rc.ServerConfig(),
        scale_out=scale_out(p),
        camera_decode=spec.runtime.decode,
        tracker=spec.runtime.tracker,
    )


def _camera(c: rc.CameraConfig) -> rc.CameraConfig:
    """The camera as the runtime reads it: a Secret-held URL by its env variable's name."""
    if c.url_secret_ref is None:
        return c
    return c.model_copy(update={"url_secret_ref": None, "url_env": camera_url.env_name(c.name)})


def scale_out(p: resource.Pipeline) -> rc.ScaleOutConfig:
    """Replicas share the cameras through membership Leases labelled with the pipeline."""
    rt = p.spec.runtime
    return rc.ScaleOutConfig(
        enabled=True,
        pipeline=p.name,
        lease_duration_seconds=rt.camera_lease.duration_seconds,
        renew_period_seconds=rt.camera_lease.renew_period_seconds,
        max_cameras_per_replica=rt.max_cameras_per_replica,
    )


#: Rendered files by a digest of their content: YAML rendering is slow in Python
#: (about 2 s for 1,000 cameras with lines and regions, against 25 ms for the JSON
#: the digest is taken of), and an unchanged spec renders on every reconcile.
_RENDERED: collections.OrderedDict[str, str] = collections.OrderedDict()
_RENDERED_MAX = 32
_LOCK = threading.Lock()  # reconciles render in worker threads


def render(config: rc.RuntimeConfig) -> str:
    """``config.to_yaml()``, remembered for the last few distinct configs."""
    digest = hashlib.sha256(
        config.model_dump_json(by_alias=True, exclude_none=True).encode()
    ).hexdigest()
    with _LOCK:
        text = _RENDERED.get(digest)
        if text is not None:
            _RENDERED.move_to_end(digest)
            return text
    text = config.to_yaml()
    with _LOCK:
        _RENDERED[digest] = text
        while len(_RENDERED) > _RENDERED_MAX:
            _RENDERED.popitem(last=False)
    return text


def build(p: resource.Pipeline) -> meta.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta.metadata(p, meta.configmap_name(p)),
        "data": {rc.CONFIGMAP_KEY: render(runtime_config(p))},
    }


def config_hash(configmap: meta.Manifest) -> str:
    """Hash of the ConfigMap's data: the pod-template annotation that rolls pods."""
    return meta.canonical_hash(configmap["data"])

"""The operator rejects the same bad specs as the API server, with the field named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from its_operator.api import resource, spec_backends, spec_rollout, spec_storage
from its_runtime import config as rc

SpecOf = Callable[..., dict[str, Any]]


@pytest.fixture
def parse(spec_of: SpecOf) -> Callable[..., resource.Pipeline]:
    def run(**patch: Any) -> resource.Pipeline:
        body = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}, "spec": spec_of(**patch)}
        return resource.parse(body)

    return run


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        (
            {
                "autoscaling": {
                    "enabled": True,
                    "minReplicas": 5,
                    "maxReplicas": 2,
                    "targets": {"cpuUtilizationPercent": 50},
                }
            },
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            {"model": {"path": "/m.pt2", "batching": {"maxBatchSize": 2, "optBatchSize": 4}}},
            "optBatchSize must not exceed maxBatchSize",
        ),
        ({"model": {"path": "/m.pt2", "precision": "fp8"}}, "spec.model.precision"),
        ({"cameras": [{"name": "c", "url": "rtsp://x", "fps": 0}]}, "spec.cameras.0.fps"),
        ({"cameras": [{"name": "c", "url": "ftp://x"}]}, "url scheme 'ftp'"),
        (
            {
                "runtime": {"image": "i", "replicas": 2},
                "engineCache": {"accessMode": "ReadWriteMany"},
                "autoscaling": {"enabled": True, "targets": {"cpuUtilizationPercent": 50}},
            },
            "runtime.replicas must not be set while autoscaling.enabled is true",
        ),
        ({"autoscaling": {"enabled": True}}, "autoscaling.enabled needs at least one"),
        (
            {"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}},
            "rollout.maxSurge and rollout.maxUnavailable must not both be 0",
        ),
        ({"runtime": {"image": "i", "replicas": 3}}, "engineCache.accessMode ReadWriteOnce"),
        (
            {"cache": {"redisUrl": "redis://r", "redisUrlSecretRef": {"name": "s", "key": "k"}}},
            "cache sets redisUrl or redisUrlSecretRef, not both",
        ),
        (
            {
                "database": {
                    "dsnSecretRef": {"name": "db", "key": "dsn"},
                    "poolMinSize": 9,
                    "poolMaxSize": 2,
                }
            },
            "database.poolMinSize must not exceed",
        ),
        (
            {"runtime": {"image": "i", "env": [{"name": rc.DATABASE_DSN_ENV, "value": "x"}]}},
            "is reserved",
        ),
        (
            {"modelVolume": {"claimName": "models"}, "model": {"path": "/elsewhere/m.pt2"}},
            "model.path must be a file inside modelVolume.mountPath",
        ),
        (
            {"cameras": [{"name": "a", "url": "rtsp://x"}, {"name": "a", "url": "rtsp://y"}]},
            "cameras[].name must be unique: a",
        ),
        ({"runtime": {"image": "i", "resources": {"memory": "lots"}}}, "spec.runtime.resources"),
        ({"typo": True}, "spec.typo"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_field(
    parse: Callable[..., resource.Pipeline], patch: dict[str, Any], needle: str
) -> None:
    with pytest.raises(resource.InvalidSpecError) as err:
        parse(**patch)
    assert needle in str(err.value)


def test_sample_spec_parses_with_documented_defaults(
    parse: Callable[..., resource.Pipeline],
) -> None:
    p = parse()
    s = p.spec
    assert s.rollout.strategy is spec_rollout.RolloutStrategy.ROLLING_UPDATE
    assert s.rollout.max_surge == 0  # GPU-safe: no surge pod needs a spare GPU
    assert s.slo.p99_latency_ms == 100.0
    assert s.engine_cache.retention is spec_storage.Retention.RETAIN
    assert s.runtime.resources.gpu == 1
    assert s.max_replicas == 1
    # The CR embeds the runtime's own model class, not a copy of it.
    assert isinstance(s.model, rc.ModelConfig)


def test_pool_and_cache_fields_reuse_the_runtime_definitions() -> None:
    db = spec_backends.DatabaseSpec.model_fields["pool_max_size"]
    assert db.default == rc.DatabaseConfig.model_fields["pool_max_size"].default
    assert db.description == rc.DatabaseConfig.model_fields["pool_max_size"].description
    with pytest.raises(ValueError, match="poolMaxSize"):
        spec_backends.DatabaseSpec.model_validate(
            {"dsnSecretRef": {"name": "d", "key": "k"}, "poolMaxSize": 0}
        )


def test_engine_cache_size_is_read_as_bytes(parse: Callable[..., resource.Pipeline]) -> None:
    p = parse(engineCache={"size": "1536Mi"})
    assert p.spec.engine_cache_bytes() == 1536 * 2**20

"""Acceptance 1 and 3: the generated CRD installs, documents itself, and rejects bad specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster


def test_explain_shows_the_model_descriptions(cluster: Any, crds: None) -> None:
    out = cluster.kubectl("explain", "analyticspipeline.spec.model").stdout
    assert "The detector: file, format, input shape, precision and batching." in out
    assert "Engine precision: fp32, fp16 or int8." in out
    batching = cluster.kubectl("explain", "analyticspipeline.spec.model.batching").stdout
    assert "maxQueueDelayMs" in batching


INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "min-over-max",
        {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 5,
                "maxReplicas": 2,
                "targets": {"cpuUtilizationPercent": 50},
            },
            "engineCache": {"accessMode": "ReadWriteMany"},
        },
        [
            "spec.autoscaling.minReplicas",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ],
    ),
    (
        "opt-over-max",
        {"model": {"path": "/models/d.pt2", "batching": {"maxBatchSize": 2, "optBatchSize": 4}}},
        ["spec.model.batching.optBatchSize", "optBatchSize must not exceed maxBatchSize"],
    ),
    (
        "unknown-precision",
        {"model": {"path": "/models/d.pt2", "precision": "fp8"}},
        ["spec.model.precision", 'Unsupported value: "fp8"'],
    ),
    (
        "zero-fps",
        {"cameras": [{"name": "c1", "url": "rtsp://x/1", "fps": 0}]},
        ["spec.cameras[0].fps", "should be greater than 0"],
    ),
    (
        "replicas-with-autoscaling",
        {
            "runtime": {"image": "i", "replicas": 2},
            "engineCache": {"accessMode": "ReadWriteMany"},
            "autoscaling": {"enabled": True, "targets": {"gpuUtilizationPercent": 70}},
        },
        ["spec.runtime.replicas", "must not be set while autoscaling.enabled is true"],
    ),
    (
        "camera-scheme",
        {"cameras": [{"name": "c1", "url": "ftp://cams/1"}]},
        ["spec.cameras[0].url", "url scheme must be one of rtsp, rtsps, http, https, file"],
    ),
    (
        "duplicate-camera",
        {"cameras": [{"name": "c1", "url": "rtsp://a"}, {"name": "c1", "url": "rtsp://b"}]},
        [".spec.cameras", 'duplicate entries for key [name="c1"]'],
    ),
    (
        "surge-and-unavailable-zero",
        {"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}},
        ["spec.rollout.maxUnavailable", "must not both be 0"],
    ),
    (
        "rwo-with-replicas",
        {"runtime": {"image": "i", "replicas": 3}},
        ["spec.engineCache.accessMode", "ReadWriteOnce serves one replica"],
    ),
    (
        "reserved-env",
        {"runtime": {"image": "i", "env": [{"name": "ITS_DATABASE_DSN", "value": "postgres://"}]}},
        ["spec.runtime.env[0].name", "are reserved"],
    ),
    (
        "pod-identity-reserved",
        {"runtime": {"image": "i", "env": [{"name": "POD_NAME", "value": "someone-else"}]}},
        ["spec.runtime.env[0].name", "are reserved"],
    ),
    (
        "lease-shorter-than-two-renewals",
        {"runtime": {"image": "i", "cameraLease": {"durationSeconds": 6, "renewPeriodSeconds": 2}}},
        [
            "spec.runtime.cameraLease.durationSeconds",
            "durationSeconds must exceed three times renewPeriodSeconds",
        ],
    ),
    (
        "rwo-cache-with-a-replica-floor-above-one",
        {
            "runtime": {"image": "i", "maxCamerasPerReplica": 1},
            "autoscaling": {
                "enabled": True,
                "maxReplicas": 1,
                "targets": {"cpuUtilizationPercent": 50},
            },
            "cameras": [{"name": "c1", "url": "rtsp://a"}, {"name": "c2", "url": "rtsp://b"}],
        },
        ["spec.engineCache.accessMode", "ReadWriteOnce serves one replica"],
    ),
    (
        "more-than-1000-cameras",
        {"cameras": [{"name": f"c{i}", "url": f"rtsp://cams/{i}"} for i in range(1001)]},
        ["spec.cameras", "must have at most 1000 items"],
    ),
    (
        "calibration-image-points-collinear",
        {
            "cameras": [
                {
                    "name": "c1",
                    "url": "rtsp://a",
                    "calibration": {
                        "imagePoints": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.9, 0.1]],
                        "groundPoints": [[0, 0], [3.5, 0], [3.5, 30], [0, 30]],
                    },
                }
            ]
        },
        [
            "spec.cameras[0].calibration.imagePoints",
            "no three points may lie on one line",
        ],
    ),
    (
        "calibration-ground-points-repeated",
        {
            "cameras": [
                {
                    "name": "c1",
                    "url": "rtsp://a",
                    "calibration": {
                        "imagePoints": [[0.1, 0.9], [0.9, 0.9], [0.6, 0.2], [0.4, 0.2]],
                        "groundPoints": [[0, 0], [0, 0], [3.5, 30], [0, 30]],
                    },
                }
            ]
        },
        ["spec.cameras[0].calibration.groundPoints", "must be 4 distinct points"],
    ),
    (
        "lane-ends-before-it-starts",
        {
            "cameras": [
                {
                    "name": "c1",
                    "url": "rtsp://a",
                    "lines": [
                        {
                            "name": "stop",
                            "start": [0.1, 0.5],
                            "end": [0.9, 0.5],
                            "lanes": [{"name": "l1", "start": 0.6, "end": 0.4}],
                        }
                    ],
                }
            ]
        },
        ["spec.cameras[0].lines[0].lanes[0].start", "lane start must be before its end"],
    ),
    (
        "stopped-dwell-zero",
        {
            "cameras": [
                {
                    "name": "c1",
                    "url": "rtsp://a",
                    "regions": [
                        {
                            "name": "box",
                            "polygon": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]],
                            "stopped": {"queueDwellSeconds": 0},
                        }
                    ],
                }
            ]
        },
        ["spec.cameras[0].regions[0].stopped.queueDwellSeconds", "should be greater than 0"],
    ),
    (
        "stopped-event-before-queue-dwell",
        {
            "cameras": [
                {
                    "name": "c1",
                    "url": "rtsp://a",
                    "regions": [
                        {
                            "name": "box",
                            "polygon": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]],
                            "stopped": {"queueDwellSeconds": 10, "eventSeconds": 5},
                        }
                    ],
                }
            ]
        },
        [
            "spec.cameras[0].regions[0].stopped.eventSeconds",
            "must not be less than stopped.queueDwellSeconds",
        ],
    ),
    (
        "bad-quantity",
        {"engineCache": {"size": "lots"}},
        ["spec.engineCache.size", "should match"],
    ),
    (
        "unknown-tracker",
        {"runtime": {"image": "i", "tracker": "deepsort"}},
        ["spec.runtime.tracker", 'Unsupported value: "deepsort"'],
    ),
    (
        "unknown-field-kept-out",
        {"runtime": {"image": "i", "gpus": 2}},
        [".spec.runtime.gpus: field not declared in schema"],
    ),
]


@pytest.mark.parametrize(("name", "patch", "needles"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_rejected_at_apply_time(
    cluster: Any,
    crds: None,
    namespace: str,
    spec_of: Callable[..., dict[str, Any]],
    pipeline: Callable[..., dict[str, Any]],
    name: str,
    patch: dict[str, Any],
    needles: list[str],
) -> None:
    doc = pipeline(name, spec_of(**patch))
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(doc),
        check=False,
    )
    assert proc.returncode != 0, f"{name} was accepted"
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_engine_cache_cannot_shrink_or_change_mode(
    cluster: Any,
    crds: None,
    namespace: str,
    spec_of: Callable[..., dict[str, Any]],
    pipeline: Callable[..., dict[str, Any]],
) -> None:
    doc = pipeline("grow", spec_of(engineCache={"size": "20Gi"}))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    smaller = pipeline("grow", spec_of(engineCache={"size": "10Gi", "accessMode": "ReadWriteMany"}))
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(smaller), check=False
    )
    assert "engineCache.size may only grow" in proc.stderr
    assert "engineCache.accessMode is immutable" in proc.stderr


def test_metadata_name_is_a_short_dns_label(
    cluster: Any,
    crds: None,
    namespace: str,
    spec_of: Callable[..., dict[str, Any]],
    pipeline: Callable[..., dict[str, Any]],
) -> None:
    doc = pipeline("p" * 60, spec_of())
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert "metadata.name: Too long" in proc.stderr


def test_a_1000_camera_pipeline_is_accepted(
    cluster: Any,
    crds: None,
    namespace: str,
    spec_of: Callable[..., dict[str, Any]],
    pipeline: Callable[..., dict[str, Any]],
) -> None:
    """Within the API server's CEL cost budget (the camera rules run per item) and its
    size limits; server-side apply, since client-side apply would copy the whole spec
    into the 256 KiB last-applied annotation."""
    cameras = [
        {
            "name": f"cam-{i:04d}",
            "url": f"rtsp://camera-gateway.corridor.example.net:8554/north/{i:04d}/main",
            "fps": 15,
            "lines": [{"name": "in", "start": [0.0, 0.55], "end": [1.0, 0.55]}],
            "regions": [{"name": "lane", "polygon": [[0.1, 0.2], [0.9, 0.2], [0.5, 0.9]]}],
        }
        for i in range(1000)
    ]
    doc = pipeline("corridor", spec_of(cameras=cameras))
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(doc),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stored = cluster.kubectl(
        "get",
        "analyticspipeline",
        "corridor",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.cameras[*].name}",
    ).stdout.split()
    assert len(stored) == 1000

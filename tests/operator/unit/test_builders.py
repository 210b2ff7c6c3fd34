"""Each child kind as rendered from a spec: what a user relies on in the cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from its_operator.api import resource
from its_operator.builders import (
    children,
    configmap,
    deployment,
    hpa,
    meta,
    networkpolicy,
    pdb,
    pvc,
    secretrefs,
    service,
    servicemonitor,
)
from its_runtime import config as rc

Make = Callable[..., resource.Pipeline]
LABELS = {
    "app.kubernetes.io/name": "its-runtime",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "inference",
    "app.kubernetes.io/part-of": "its-camera-analytics",
    "app.kubernetes.io/managed-by": "its-operator",
}


def _container(d: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = d["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _owned_and_labelled(m: dict[str, Any]) -> None:
    assert m["metadata"]["labels"] == LABELS
    assert m["metadata"]["namespace"] == "ns"
    (ref,) = m["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "its.ai/v1alpha1",
        "kind": "AnalyticsPipeline",
        "name": "demo",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


# --- ConfigMap ---------------------------------------------------------------------


def test_configmap_holds_the_runtime_config_the_runtime_parses(make_pipeline: Make) -> None:
    p = make_pipeline(
        model={"path": "/models/det.pt2", "batching": {"maxBatchSize": 16, "optBatchSize": 8}},
        database={"dsnSecretRef": {"name": "db", "key": "dsn"}, "poolMaxSize": 4},
        cache={"redisUrlSecretRef": {"name": "redis", "key": "url"}, "ttlSeconds": 2},
        engineCache={"size": "10Gi"},
    )
    cm = configmap.build(p)
    _owned_and_labelled(cm)
    assert cm["metadata"]["name"] == "demo-config"
    parsed = rc.RuntimeConfig.from_yaml(cm["data"][rc.CONFIGMAP_KEY])
    assert parsed.model.batching.max_batch_size == 16
    assert parsed.cameras[0].name == "cam-1"
    assert parsed.database.dsn_env == rc.DATABASE_DSN_ENV
    assert parsed.database.pool_max_size == 4
    assert parsed.cache.redis_url_env == rc.REDIS_URL_ENV
    assert parsed.cache.ttl_seconds == 2
    assert parsed.engine_cache.max_bytes == 10 * 2**30 * configmap.ENGINE_CACHE_FILL_PERCENT // 100
    assert "dsn" not in cm["data"][rc.CONFIGMAP_KEY].replace("dsnEnv", "")


def test_configmap_hash_moves_with_content_only(make_pipeline: Make) -> None:
    a = configmap.config_hash(configmap.build(make_pipeline()))
    assert a == configmap.config_hash(configmap.build(make_pipeline()))
    b = configmap.config_hash(configmap.build(make_pipeline(slo={"p99LatencyMs": 50})))
    assert a != b


# --- Deployment --------------------------------------------------------------------


def test_deployment_requests_gpus_and_probes_for_a_slow_first_start(make_pipeline: Make) -> None:
    p = make_pipeline(
        runtime={
            "image": "img:1",
            "resources": {"gpu": 2, "memory": "16Gi"},
            "startupTimeoutSeconds": 1500,
        }
    )
    d = deployment.build(p, config_hash="abc")
    _owned_and_labelled(d)
    c = _container(d)
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["limits"]["memory"] == "16Gi"
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/live"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1500
    assert c["livenessProbe"]["httpGet"]["path"] == "/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert d["spec"]["template"]["metadata"]["annotations"][meta.CONFIG_HASH] == "abc"


def test_cpu_only_pipeline_requests_no_gpu(make_pipeline: Make) -> None:
    p = make_pipeline(runtime={"image": "img:1", "resources": {"gpu": 0}})
    c = _container(deployment.build(p, config_hash="x"))
    assert not any("gpu" in k for k in c["resources"]["requests"])


def test_deployment_is_restricted_pod_security(make_pipeline: Make) -> None:
    d = deployment.build(make_pipeline(), config_hash="x")
    pod = d["spec"]["template"]["spec"]
    c = _container(d)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The token of the pipeline's own account, whose Role allows only Leases.
    assert pod["serviceAccountName"] == "demo-runtime"
    assert pod["automountServiceAccountToken"] is True
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", configmap.ENGINE_CACHE_DIR} <= writable


def test_secrets_reach_the_pod_by_reference_only(make_pipeline: Make) -> None:
    p = make_pipeline(
        database={"dsnSecretRef": {"name": "db", "key": "dsn"}},
        cache={"redisUrlSecretRef": {"name": "redis", "key": "url"}},
        runtime={
            "image": "i",
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}},
                {"name": "MODE", "value": "fast"},
            ],
        },
    )
    env = {e["name"]: e for e in _container(deployment.build(p, config_hash="x"))["env"]}
    assert env[rc.DATABASE_DSN_ENV] == {
        "name": rc.DATABASE_DSN_ENV,
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
    }
    assert env[rc.REDIS_URL_ENV]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "url"}
    assert env["TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "tok"
    assert env["MODE"] == {"name": "MODE", "value": "fast"}
    assert secretrefs.needed(p.spec) == {
        "db": frozenset({"dsn"}),
        "redis": frozenset({"url"}),
        "tok": frozenset({"t"}),
    }


def test_replicas_are_left_to_the_hpa_when_autoscaling(make_pipeline: Make) -> None:
    fixed = deployment.build(make_pipeline(runtime={"image": "i", "replicas": 1}), config_hash="x")
    assert fixed["spec"]["replicas"] == 1
    scaled = make_pipeline(
        engineCache={"accessMode": "ReadWriteMany"},
        autoscaling={"enabled": True, "targets": {"gpuUtilizationPercent": 70}},
    )
    assert "replicas" not in deployment.build(scaled, config_hash="x")["spec"]


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        ({}, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
        ({"strategy": "Recreate"}, {"type": "Recreate"}),
        (
            {"maxSurge": "25%", "maxUnavailable": 0},
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        ),
    ],
)
def test_rollout_strategy_comes_from_the_spec(
    make_pipeline: Make, rollout: dict[str, Any], expected: dict[str, Any]
) -> None:
    d = deployment.build(make_pipeline(rollout=rollout), config_hash="x")
    assert d["spec"]["strategy"] == expected


def test_placement_and_model_volume(make_pipeline: Make) -> None:
    p = make_pipeline(
        modelVolume={"claimName": "models", "mountPath": "/models"},
        runtime={
            "image": "i",
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "priorityClassName": "inference",
            "affinity": {"nodeAffinity": {}},
        },
    )
    pod = deployment.build(p, config_hash="x")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "inference"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["engine-cache"]["persistentVolumeClaim"]["claimName"] == "demo-engine-cache"


def test_disabled_engine_cache_uses_a_sized_empty_dir(make_pipeline: Make) -> None:
    p = make_pipeline(engineCache={"enabled": False, "size": "5Gi"})
    pod = deployment.build(p, config_hash="x")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["engine-cache"] == {"name": "engine-cache", "emptyDir": {"sizeLimit": "5Gi"}}


# --- Service, PVC, HPA, PDB, NetworkPolicy, ServiceMonitor -------------------------


def test_service_exposes_http_and_metrics(make_pipeline: Make) -> None:
    p = make_pipeline()
    s = service.build(p)
    _owned_and_labelled(s)
    assert {port["name"]: port["targetPort"] for port in s["spec"]["ports"]} == {
        "http": "http",
        "metrics": "http",
    }
    assert s["spec"]["selector"] == meta.selector_labels(p)
    assert service.endpoint(p) == "http://demo.ns.svc:8080"


def test_pvc_retention_is_ownership(make_pipeline: Make) -> None:
    retained = pvc.build(make_pipeline())
    assert "ownerReferences" not in retained["metadata"]
    assert retained["metadata"]["labels"] == LABELS
    deleted = pvc.build(
        make_pipeline(
            engineCache={
                "retention": "Delete",
                "size": "50Gi",
                "storageClassName": "fast",
                "accessMode": "ReadWriteMany",
            }
        )
    )
    _owned_and_labelled(deleted)
    assert deleted["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert deleted["spec"]["storageClassName"] == "fast"
    assert deleted["spec"]["accessModes"] == ["ReadWriteMany"]


def test_hpa_targets_and_raw_metrics(make_pipeline: Make) -> None:
    raw = {
        "type": "External",
        "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "5"}},
    }
    p = make_pipeline(
        engineCache={"accessMode": "ReadWriteMany"},
        autoscaling={
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 6,
            "targets": {
                "cpuUtilizationPercent": 70,
                "gpuUtilizationPercent": 80,
                "queueTimeMs": 12.5,
                "p99LatencyMs": 90,
            },
            "metrics": [raw],
        },
    )
    h = hpa.build(p)
    _owned_and_labelled(h)
    assert h["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo",
    }
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 6)
    metrics = h["spec"]["metrics"]
    assert metrics[0]["resource"]["target"]["averageUtilization"] == 70
    pods = {
        m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
        for m in metrics
        if m["type"] == "Pods"
    }
    assert pods == {hpa.GPU_METRIC: "80", hpa.QUEUE_TIME_METRIC: "12500m", hpa.P99_METRIC: "90000m"}
    assert metrics[-1] == raw
    assert h["spec"]["behavior"] == hpa.DEFAULT_BEHAVIOR


def test_pdb_allows_draining_one_pod(make_pipeline: Make) -> None:
    b = pdb.build(make_pipeline())
    _owned_and_labelled(b)
    assert b["spec"]["maxUnavailable"] == 1
    assert b["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_networkpolicy_opens_only_the_http_port(make_pipeline: Make) -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "traffic"}}}
    n = networkpolicy.build(make_pipeline(networkPolicy={"ingressFrom": [peer]}))
    _owned_and_labelled(n)
    assert n["spec"]["policyTypes"] == ["Ingress"]
    assert n["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}], "from": [peer]}]


def test_servicemonitor_scrapes_the_metrics_port(make_pipeline: Make) -> None:
    sm = servicemonitor.build(
        make_pipeline(monitoring={"interval": "15s", "labels": {"release": "prom"}})
    )
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]


# --- The desired set ---------------------------------------------------------------


def test_desired_children_follow_the_spec(make_pipeline: Make) -> None:
    def kinds(p: resource.Pipeline, **observed: Any) -> list[str]:
        return [m["kind"] for m in children.desired(p, children.Observed(**observed))]

    assert kinds(make_pipeline()) == [
        "ConfigMap",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ]
    full = make_pipeline(
        engineCache={"accessMode": "ReadWriteMany"},
        autoscaling={"enabled": True, "targets": {"cpuUtilizationPercent": 60}},
    )
    assert kinds(full, service_monitor_crd=True) == [
        "ConfigMap",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    ]
    lean = make_pipeline(
        engineCache={"enabled": False},
        networkPolicy={"enabled": False},
        monitoring={"serviceMonitor": False},
    )
    assert kinds(lean, service_monitor_crd=True) == [
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
    ]


def test_every_child_is_stamped_and_the_stamp_tracks_changes(make_pipeline: Make) -> None:
    before = children.desired(make_pipeline(), children.Observed())
    after = children.desired(make_pipeline(slo={"p99LatencyMs": 40}), children.Observed())
    stamps = [m["metadata"]["annotations"][meta.DESIRED_HASH] for m in before]
    assert all(len(s) == 16 for s in stamps)
    changed = {
        m["kind"]
        for m, n in zip(before, after, strict=True)
        if m["metadata"]["annotations"] != n["metadata"]["annotations"]
    }
    assert changed == {"ConfigMap", "Deployment"}  # new config, and its hash on the pods


def test_a_rotated_secret_rolls_the_pods(make_pipeline: Make) -> None:
    p = make_pipeline(database={"dsnSecretRef": {"name": "db", "key": "dsn"}})
    a = children.desired(p, children.Observed(secrets_version="v1"))
    b = children.desired(p, children.Observed(secrets_version="v2"))
    dep_a, dep_b = (next(m for m in x if m["kind"] == "Deployment") for x in (a, b))
    annotations = dep_b["spec"]["template"]["metadata"]["annotations"]
    assert annotations[meta.SECRETS_VERSION] == "v2"
    assert dep_a["spec"]["template"] != dep_b["spec"]["template"]


def test_gpu_pods_get_the_video_capability_nvdec_needs(make_pipeline: Make) -> None:
    """The NVIDIA container toolkit exposes NVDEC only with the "video" capability."""

    def caps(runtime: dict[str, Any]) -> str | None:
        p = make_pipeline(runtime=runtime)
        env = {e["name"]: e for e in _container(deployment.build(p, config_hash="x"))["env"]}
        value: str | None = env.get("NVIDIA_DRIVER_CAPABILITIES", {}).get("value")
        return value

    assert caps({}) == "compute,utility,video"
    assert caps({"decode": "cpu"}) is None
    assert caps({"resources": {"gpu": 0}}) is None
    own = {"env": [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "all"}]}
    assert caps(own) == "all"

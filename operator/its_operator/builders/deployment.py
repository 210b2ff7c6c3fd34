"""The runtime Deployment: GPU pods with probes, volumes and a restricted securityContext.

Choices that matter in production, each fixing a complaint about GPU operators:

* ``replicas`` is left out entirely while autoscaling is on, or while an external
  scaler (KEDA) owns it (``autoscaling.external``), so server-side apply never takes
  the field from the HorizontalPodAutoscaler and drift repair never restores it.
* The rollout strategy comes from the spec; RollingUpdate defaults to maxSurge 0
  (a surge pod needs a spare GPU; without one the rollout deadlocks).
* A startup probe as long as ``runtime.startupTimeoutSeconds`` covers a first
  TensorRT engine build, so liveness cannot kill a pod that is still compiling.
* Secrets reach the pod only as ``valueFrom.secretKeyRef``, never as values.
* The pod template carries the config hash and the referenced Secrets' versions,
  so a config change or a rotated Secret rolls the pods.
* Restricted Pod Security: non-root, no privilege escalation, all capabilities
  dropped, RuntimeDefault seccomp, read-only root filesystem (writable: an emptyDir
  for /tmp, and the event journal, a claim shared by the replicas or an emptyDir).
  The token mounted is that of the pipeline's own ServiceAccount, whose Role allows
  only the membership Leases (``builders.rbac``).
"""

from __future__ import annotations

import math
from typing import Any

from its_operator.api import resource, spec_rollout, spec_runtime
from its_operator.builders import configmap, meta
from its_runtime import camera_url
from its_runtime import config as rc

CONTAINER = "runtime"
HTTP_PORT = rc.ServerConfig.model_fields["port"].default
CONFIG_DIR = rc.DEFAULT_CONFIG_PATH.rsplit("/", 1)[0]
JOURNAL_DIR = rc.DatabaseConfig.model_fields["journal_dir"].default
MODEL_DIR = "/models"
RUN_AS = 65532
PROBE_PERIOD_S = 10
DRAIN_MARGIN_S = 15


#: The NVIDIA container toolkit's driver capabilities for the runtime container.
NVIDIA_CAPS_ENV = "NVIDIA_DRIVER_CAPABILITIES"


def _env(p: resource.Pipeline) -> list[dict[str, Any]]:
    spec = p.spec
    env: list[dict[str, Any]] = [
        # The pod's identity (downward API): its membership Lease holder, and where
        # the Leases live.
        {"name": rc.POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": rc.POD_NAMESPACE_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "HOME", "value": "/tmp"},
    ]
    if spec.database is not None:
        ref = spec.database.dsn_secret_ref
        env.append(
            {
                "name": rc.DATABASE_DSN_ENV,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    if spec.cache is not None and spec.cache.redis_url_secret_ref is not None:
        ref = spec.cache.redis_url_secret_ref
        env.append(
            {
                "name": rc.REDIS_URL_ENV,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    elif spec.cache is not None and spec.cache.redis_url is not None:
        env.append({"name": rc.REDIS_URL_ENV, "value": spec.cache.redis_url})
    for cam in spec.cameras:  # the URL (credentials and all) stays in its Secret
        if (url_ref := cam.url_secret_ref) is not None:
            env.append(
                {
                    "name": camera_url.env_name(cam.name),
                    "valueFrom": {"secretKeyRef": {"name": url_ref.name, "key": url_ref.key}},
                }
            )
    # NVDEC needs the container toolkit's "video" capability, which the default
    # (compute,utility) leaves out: without it GPU decode falls back to the CPU.
    own = {var.name for var in spec.runtime.env}
    gpus = spec.runtime.resources.gpu
    if gpus > 0 and spec.runtime.decode != "cpu" and NVIDIA_CAPS_ENV not in own:
        env.append({"name": NVIDIA_CAPS_ENV, "value": "compute,utility,video"})
    for var in spec.runtime.env:
        env.append(var.model_dump(mode="json", by_alias=True, exclude_none=True))
    return env


def _resources(r: spec_runtime.ResourcesSpec) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": r.cpu, "memory": r.memory}
    limits: dict[str, str] = {"memory": r.memory_limit or r.memory}
    if r.cpu_limit is not None:
        limits["cpu"] = r.cpu_limit
    if r.gpu > 0:
        # Extended resources need requests == limits.
        requests[r.gpu_resource_name] = str(r.gpu)
        limits[r.gpu_resource_name] = str(r.gpu)
    return {"requests": requests, "limits": limits}


def _journal_volume(p: resource.Pipeline) -> dict[str, Any]:
    """The journal root: shared by all replicas when enabled (each pod writes its own
    ``<root>/<pod>/`` and adopts those of deleted pods), else one emptyDir per pod."""
    if p.spec.journal.enabled:
        return {
            "name": "journal",
            "persistentVolumeClaim": {"claimName": meta.journal_claim_name(p)},
        }
    return {"name": "journal", "emptyDir": {}}


def _volumes(p: resource.Pipeline) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = p.spec
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": meta.configmap_name(p),
                "items": [{"key": rc.CONFIGMAP_KEY, "path": rc.CONFIGMAP_KEY}],
            },
        },
        {"name": "tmp", "emptyDir": {}},
        _journal_volume(p),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "journal", "mountPath": JOURNAL_DIR},
        {"name": "engine-cache", "mountPath": configmap.ENGINE_CACHE_DIR},
    ]
    if spec.engine_cache.enabled:
        volumes.append(
            {
                "name": "engine-cache",
                "persistentVolumeClaim": {"claimName": meta.engine_cache_claim_name(p)},
            }
        )
    else:
        volumes.append({"name": "engine-cache", "emptyDir": {"sizeLimit": spec.engine_cache.size}})
    if spec.model_volume is not None:
        mv = spec.model_volume
        claim = {"claimName": mv.claim_name, "readOnly": True}
        volumes.append({"name": "model", "persistentVolumeClaim": claim})
        mount: dict[str, Any] = {"name": "model", "mountPath": mv.mount_path, "readOnly": True}
        if mv.sub_path:
            mount["subPath"] = mv.sub_path
        mounts.append(mount)
    return volumes, mounts


def _strategy(r: spec_rollout.RolloutSpec) -> dict[str, Any]:
    if r.strategy is spec_rollout.RolloutStrategy.RECREATE:
        return {"type": "Recreate"}
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": r.max_surge, "maxUnavailable": r.max_unavailable},
    }


def _probe(path: str, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def build(p: resource.Pipeline, *, config_hash: str, secrets_version: str = "") -> meta.Manifest:
    spec = p.spec
    rt = spec.runtime
    volumes, mounts = _volumes(p)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": rt.image,
        "imagePullPolicy": rt.image_pull_policy.value,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": _env(p),
        "resources": _resources(rt.resources),
        "volumeMounts": mounts,
        "startupProbe": _probe(
            "/live", PROBE_PERIOD_S, math.ceil(rt.startup_timeout_seconds / PROBE_PERIOD_S), 5
        ),
        "livenessProbe": _probe("/live", PROBE_PERIOD_S, 3, 5),
        "readinessProbe": _probe("/ready", 5, 2, 3),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The runtime's own account (builders.rbac): only its membership Leases.
        "serviceAccountName": meta.runtime_service_account(p),
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": int(
            rc.ServerConfig.model_fields["drain_timeout_s"].default + DRAIN_MARGIN_S
        ),
    }
    if rt.node_selector:
        pod_spec["nodeSelector"] = dict(rt.node_selector)
    if rt.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in rt.tolerations
        ]
    if rt.affinity:
        pod_spec["affinity"] = rt.affinity
    if rt.priority_class_name:
        pod_spec["priorityClassName"] = rt.priority_class_name
    if rt.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in rt.image_pull_secrets]
    template_annotations = {meta.CONFIG_HASH: config_hash}
    if secrets_version:
        template_annotations[meta.SECRETS_VERSION] = secrets_version
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": meta.selector_labels(p)},
        "strategy": _strategy(spec.rollout),
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": meta.labels(p), "annotations": template_annotations},
            "spec": pod_spec,
        },
    }
    if spec.autoscaling.operator_sets_replicas():
        deployment_spec["replicas"] = 1 if rt.replicas is None else rt.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(p, meta.deployment_name(p)),
        "spec": deployment_spec,
    }

"""The HorizontalPodAutoscaler (autoscaling/v2), created only when autoscaling is on.

Targets map to metrics as follows; Pods metrics need a custom-metrics adapter that
publishes these names per pod. ``manifests/overlays/monitoring/prometheus-adapter.yaml``
holds prometheus-adapter rules for exactly these names, computed from series the runtime
itself exports (``tests/deploy/test_prometheus_live.py`` evaluates them on a real
Prometheus scraping a real runtime):

* ``cpuUtilizationPercent`` -> Resource ``cpu`` utilisation of the requests;
* ``gpuUtilizationPercent`` -> Pods ``its_gpu_utilization_percent``: the mean NVML
  utilisation of the pod's GPUs, from the runtime's ``its_gpu_utilization_ratio``. Not
  dcgm-exporter's ``DCGM_FI_DEV_GPU_UTIL``: that series carries the exporter's pod
  labels only where dcgm-exporter maps pods, and nothing else publishes it per pod, so
  an HPA naming it could never read it (and an HPA missing one metric never scales
  down);
* ``queueTimeMs`` -> Pods ``its_queue_time_ms``: mean time a frame waited in the
  batcher's queue, the signal Triton's users scale on (rate of the queue-time
  histogram's sum over the rate of its count; 0 for an idle pod);
* ``p99LatencyMs`` -> Pods ``its_latency_p99_ms`` (0 for an idle pod).

Raw ``metrics`` entries are appended unchanged: the escape hatch for anything else.

``minReplicas`` is at least the replica floor, ``ceil(cameras /
runtime.maxCamerasPerReplica)`` (and ``maxReplicas`` at least that), so the HPA can
never scale below what holds every camera; the operator still leaves the Deployment's
``replicas`` to the HPA.
"""

from __future__ import annotations

from typing import Any

from its_operator.api import resource
from its_operator.builders import meta

GPU_METRIC = "its_gpu_utilization_percent"
QUEUE_TIME_METRIC = "its_queue_time_ms"
P99_METRIC = "its_latency_p99_ms"
DEFAULT_BEHAVIOR: dict[str, Any] = {"scaleDown": {"stabilizationWindowSeconds": 300}}


def _milli(value: float) -> str:
    """A quantity string with milli precision (the API server re-spells it canonically)."""
    return f"{round(value * 1000)}m"


def _pods_metric(name: str, average: str) -> dict[str, Any]:
    target = {"type": "AverageValue", "averageValue": average}
    return {"type": "Pods", "pods": {"metric": {"name": name}, "target": target}}


def metrics(p: resource.Pipeline) -> list[dict[str, Any]]:
    t = p.spec.autoscaling.targets
    out: list[dict[str, Any]] = []
    if t.cpu_utilization_percent is not None:
        target = {"type": "Utilization", "averageUtilization": t.cpu_utilization_percent}
        out.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    if t.gpu_utilization_percent is not None:
        out.append(_pods_metric(GPU_METRIC, str(t.gpu_utilization_percent)))
    if t.queue_time_ms is not None:
        out.append(_pods_metric(QUEUE_TIME_METRIC, _milli(t.queue_time_ms)))
    if t.p99_latency_ms is not None:
        out.append(_pods_metric(P99_METRIC, _milli(t.p99_latency_ms)))
    out.extend(p.spec.autoscaling.metrics)
    return out


def build(p: resource.Pipeline) -> meta.Manifest:
    a = p.spec.autoscaling
    # Never fewer replicas than can hold every camera (the HPA keeps owning replicas).
    min_replicas = max(a.min_replicas, p.spec.replica_floor)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta.metadata(p, meta.deployment_name(p)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta.deployment_name(p),
            },
            "minReplicas": min_replicas,
            "maxReplicas": max(a.max_replicas, min_replicas),
            "metrics": metrics(p),
            "behavior": a.behavior if a.behavior is not None else DEFAULT_BEHAVIOR,
        },
    }

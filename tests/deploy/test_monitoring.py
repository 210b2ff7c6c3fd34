"""Dashboards, alerts and adapter rules only name metrics the runtime really exports,
so a renamed metric breaks a test here instead of an on-call engineer's graph."""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from prometheus_client import CollectorRegistry

# The runtime process imports main, which registers every layer's metrics (the data
# plane's are defined in their own module): check what that process really exports.
from its_runtime import main as _runtime_main  # noqa: F401
from its_runtime.engine.stats import EngineStats
from its_runtime.observability import collectors, metrics

MANIFESTS = pathlib.Path(__file__).resolve().parents[2] / "manifests"
#: The custom metrics the adapter rules publish (not series the runtime exports).
PUBLISHED = {"its_queue_time_ms", "its_latency_p99_ms", "its_gpu_utilization_percent"}


@dataclass
class _Engine:
    """Engine stats as a CPU engine that fell back once reports them."""

    def stats(self) -> EngineStats:
        return EngineStats(
            backend="aotinductor",
            fallbacks=(("tensorrt", "no CUDA device"),),
            cache={"hits": 1},
            memory={"allocated": 1},
        )


@dataclass
class _Gpu:
    index: int = 0
    name: str = "gpu"
    utilization: float = 0.5
    memory_used_bytes: int = 1
    memory_total_bytes: int = 2
    temperature_celsius: float = 40.0


@dataclass
class _Telemetry:
    available: bool = True

    def sample(self) -> Sequence[_Gpu]:
        return [_Gpu()]


def _exported_names() -> set[str]:
    """Every name the runtime exports: its registry plus the scrape-time collectors."""
    scrape_time = CollectorRegistry()
    scrape_time.register(collectors.EngineCollector(_Engine()))
    scrape_time.register(collectors.GpuCollector(_Telemetry()))
    names: set[str] = set()
    families = [*metrics.REGISTRY.collect(), *scrape_time.collect()]
    for family in families:
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\b(its_[a-z0-9_]+)(?=\s*[{\[(]|\s*\)|\s*$|\s*[<>=])", text))


def _dashboard_exprs() -> str:
    dash = json.loads((MANIFESTS / "grafana" / "its-analytics.json").read_text())
    return "\n".join(t["expr"] for p in dash["panels"] for t in p["targets"])


def _rule_exprs() -> str:
    rule = yaml.safe_load(
        (MANIFESTS / "overlays" / "monitoring" / "prometheusrule.yaml").read_text()
    )
    return "\n".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])


def _adapter_exprs() -> str:
    cm = yaml.safe_load(
        (MANIFESTS / "overlays" / "monitoring" / "prometheus-adapter.yaml").read_text()
    )
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    return "\n".join(r["seriesQuery"] + "\n" + r["metricsQuery"] for r in cfg["rules"])


def test_dashboard_alerts_and_adapter_rules_use_exported_metrics() -> None:
    exported = _exported_names()
    for source, text in (
        ("dashboard", _dashboard_exprs()),
        ("alerts", _rule_exprs()),
        ("adapter", _adapter_exprs()),
    ):
        referenced = _referenced(text) - PUBLISHED
        assert referenced, source
        missing = sorted(n for n in referenced if n not in exported)
        assert not missing, f"{source} references metrics the runtime does not export: {missing}"


def test_adapter_publishes_the_metric_names_the_operator_hpa_uses() -> None:
    from its_operator.builders import hpa

    cm = yaml.safe_load(
        (MANIFESTS / "overlays" / "monitoring" / "prometheus-adapter.yaml").read_text()
    )
    published = {r["name"]["as"] for r in yaml.safe_load(cm["data"]["config.yaml"])["rules"]}
    assert {hpa.QUEUE_TIME_METRIC, hpa.P99_METRIC, hpa.GPU_METRIC} <= published


def test_every_pods_metric_the_hpa_can_name_is_published_by_the_adapter() -> None:
    from its_operator.api import resource
    from its_operator.builders import hpa

    cm = yaml.safe_load(
        (MANIFESTS / "overlays" / "monitoring" / "prometheus-adapter.yaml").read_text()
    )
    published = {r["name"]["as"] for r in yaml.safe_load(cm["data"]["config.yaml"])["rules"]}
    doc = yaml.safe_load((MANIFESTS / "samples" / "autoscaling" / "pipeline.yaml").read_text())
    doc["metadata"].update(namespace="its-demo", uid="u")
    doc["spec"]["autoscaling"]["targets"] = {
        "gpuUtilizationPercent": 80,
        "queueTimeMs": 20,
        "p99LatencyMs": 90,
    }
    built = hpa.build(resource.parse(doc))
    names = {m["pods"]["metric"]["name"] for m in built["spec"]["metrics"] if m["type"] == "Pods"}
    assert len(names) == 3
    assert names <= published, sorted(names - published)


def test_keda_scaledobject_targets_the_deployment_the_operator_creates() -> None:
    from its_operator.api import resource
    from its_operator.builders import children, deployment, meta

    text = (MANIFESTS / "overlays" / "monitoring" / "keda-scaledobject.yaml").read_text()
    so = yaml.safe_load(text)
    sample = MANIFESTS / "samples" / "autoscaling"
    doc = yaml.safe_load((sample / "pipeline.yaml").read_text())
    namespace = yaml.safe_load((sample / "kustomization.yaml").read_text())["namespace"]
    doc["metadata"].update(namespace=namespace, uid="u")
    p = resource.parse(doc)
    assert so["metadata"]["namespace"] == namespace
    assert so["spec"]["scaleTargetRef"]["name"] == meta.deployment_name(p)
    (trigger,) = so["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    assert f'service="{meta.service_name(p)}"' in query
    assert f'namespace="{namespace}"' in query
    # A mean over frames, not a per-pod total: the HPA must not divide it by replicas.
    assert trigger["metricType"] == "Value"
    # The hand-over the comment prescribes leaves replicas to KEDA: the operator applies
    # none and creates no HPA of its own, and KEDA keeps the camera floor.
    assert "autoscaling: {enabled: false, external: true}" in text
    doc["spec"]["autoscaling"] = {"enabled": False, "external": True}
    handed = resource.parse(doc)
    assert "replicas" not in deployment.build(handed, config_hash="x")["spec"]
    kinds = {m["kind"] for m in children.desired(handed, children.Observed())}
    assert "HorizontalPodAutoscaler" not in kinds
    assert so["spec"]["minReplicaCount"] >= handed.spec.replica_floor

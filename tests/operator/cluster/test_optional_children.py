"""Children that depend on the cluster or the spec: ServiceMonitor, and a paused pipeline.

The ServiceMonitor test installs a minimal ``monitoring.coreos.com/v1`` CRD (only the
group/version/kind matter to the operator) and removes it again if it installed it,
so the other tests keep seeing a cluster without the Prometheus Operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from its_devenv import cluster as devcluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]
SM_CRD = "servicemonitors.monitoring.coreos.com"


@pytest.fixture
def servicemonitor_crd(cluster: Any) -> Iterator[None]:
    present = cluster.kubectl("get", "crd", SM_CRD, check=False).returncode == 0
    if not present:
        crd = devcluster.schemaless_crd(
            "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"
        )
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{SM_CRD}")
    yield
    if not present:
        cluster.kubectl("delete", "crd", SM_CRD, "--wait=true")


def test_servicemonitor_follows_the_crd_and_the_spec(
    kube: Any,
    servicemonitor_crd: None,
    operator: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
) -> None:
    operator()
    kube.apply(
        pipeline("watched", spec_of(monitoring={"interval": "15s", "labels": {"release": "prom"}}))
    )
    sm = wait_until(lambda: kube.get("servicemonitor", "watched"), 15, what="ServiceMonitor")
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["metadata"]["ownerReferences"][0]["kind"] == "AnalyticsPipeline"
    wait_until(
        lambda: (
            (kube.get("analyticspipeline", "watched").get("status") or {}).get("monitoring")
            == {"serviceMonitor": "Applied"}
        ),
        15,
        what="status says Applied",
    )

    kube.apply(pipeline("watched", spec_of(monitoring={"serviceMonitor": False})))
    wait_until(lambda: kube.get("servicemonitor", "watched") is None, 15, what="SM removed")
    wait_until(
        lambda: (
            (kube.get("analyticspipeline", "watched").get("status") or {}).get("monitoring")
            == {"serviceMonitor": "Disabled"}
        ),
        15,
        what="status says Disabled",
    )


def test_paused_pipeline_is_left_alone_until_resumed(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    kube.apply(pipeline("hold", spec_of()))
    wait_until(lambda: kube.ready("hold"), 30, what="ready")
    kube.apply(pipeline("hold", spec_of(paused=True)))
    wait_until(
        lambda: kube.condition("hold", "Progressing").get("reason") == "Paused",
        15,
        what="Paused reported",
    )
    cluster.kubectl("delete", "configmap", "hold-config", "-n", kube.ns)
    time.sleep(3)
    assert kube.get("configmap", "hold-config") is None
    kube.apply(pipeline("hold", spec_of(paused=False)))
    wait_until(lambda: kube.get("configmap", "hold-config"), 10, what="repaired after resume")

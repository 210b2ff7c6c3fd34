"""An external scaler (KEDA) owns the replica count when ``autoscaling.external`` is set.

KEDA's ScaledObject creates its own HorizontalPodAutoscaler, and the HPA controller
resizes the Deployment through the ``scale`` subresource. Here that write is made the
same way (an update of ``deployments/scale`` under another field manager) on two
pipelines served by a real operator process resyncing every few seconds:

* ``external``: ``autoscaling.external: true``. The count stays at 3 through many
  resyncs and the audit log shows no operator write to its Deployment at all;
* ``fixed``: the control, no external mode. The operator owns ``replicas`` and puts 1
  back, so the same check would have caught the operator fighting the scaler. Then
  it is switched to external (the hand-over of a running pipeline) and keeps the
  scaler's count too.

The API server itself refuses ``external`` together with ``enabled`` (CEL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from its_operator.handlers import drift
from its_operator.handlers import kube as operator_kube

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(240)]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]
RESYNC_S = 3
WATCH_S = 24  # eight full resyncs
SCALED = 3
SCALER = "keda-hpa-test"  # the field manager of the scale writes
EXTERNAL, FIXED = "external", "fixed"
MANAGER = operator_kube.FIELD_MANAGER


def _deployment(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    """The live Deployment with its managedFields (kubectl hides them by default)."""
    out = cluster.kubectl(
        "get", "deployment", name, "-n", namespace, "-o", "json", "--show-managed-fields"
    )
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def _owns_replicas(dep: dict[str, Any], manager: str) -> bool:
    return "f:replicas" in (drift.owned_fields(dep, manager) or {}).get("f:spec", {})


def _scale(k8s_api: Any, namespace: str, name: str, replicas: int) -> None:
    """Resize as the HPA controller (or ``kubectl scale``) does: through the scale
    subresource, as another field manager."""
    from kubernetes import client

    body = {"spec": {"replicas": replicas}}
    client.AppsV1Api(k8s_api).patch_namespaced_deployment_scale(
        name, namespace, body, field_manager=SCALER
    )


def _deployment_writes(audit: Any, mark: int, namespace: str, name: str) -> list[str]:
    return [
        f"{e['verb']} {e['objectRef'].get('subresource') or ''}".strip()
        for e in audit.writes(mark, namespace)
        if e["objectRef"]["resource"] == "deployments" and e["objectRef"].get("name") == name
    ]


def test_external_scaler_keeps_its_replica_count_and_the_operator_writes_nothing(
    cluster: Any,
    kube: Any,
    operator: Any,
    k8s_api: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    audit: Any,
) -> None:
    operator("--resync-seconds", str(RESYNC_S))
    kube.apply(pipeline(EXTERNAL, spec_of(autoscaling={"external": True})))
    kube.apply(pipeline(FIXED, spec_of()))
    wait_until(lambda: kube.ready(EXTERNAL) and kube.ready(FIXED), 60, what="both ready")

    ext = _deployment(cluster, kube.ns, EXTERNAL)
    assert drift.owned_fields(ext, MANAGER) is not None, ext["metadata"]["managedFields"]
    assert not _owns_replicas(ext, MANAGER), "the operator applied replicas"
    assert ext["spec"]["replicas"] == 1  # the API server's default until a scaler acts
    assert kube.get("horizontalpodautoscaler", EXTERNAL) is None
    assert kube.get("poddisruptionbudget", EXTERNAL) is not None
    assert _owns_replicas(_deployment(cluster, kube.ns, FIXED), MANAGER)

    mark = audit.mark()
    _scale(k8s_api, kube.ns, EXTERNAL, SCALED)
    _scale(k8s_api, kube.ns, FIXED, SCALED)

    # The control first: the operator takes replicas back from the scaler on FIXED.
    wait_until(
        lambda: (kube.get("deployment", FIXED) or {}).get("spec", {}).get("replicas") == 1,
        3 * RESYNC_S + 10,
        interval=0.2,
        what="the operator to restore the fixed pipeline's replicas",
    )
    assert "patch" in _deployment_writes(audit, mark, kube.ns, FIXED)

    # Handing over an existing pipeline: FIXED switches to external. The operator stops
    # applying replicas (dropping the field it owned resets it to the default once),
    # and from then on the scaler's count stands on both.
    kube.apply(pipeline(FIXED, spec_of(autoscaling={"external": True})))
    wait_until(
        lambda: not _owns_replicas(_deployment(cluster, kube.ns, FIXED), MANAGER),
        20,
        interval=0.2,
        what="the operator to give up replicas on the switched pipeline",
    )
    _scale(k8s_api, kube.ns, FIXED, SCALED)
    switched = audit.mark()

    seen: dict[str, set[int]] = {EXTERNAL: set(), FIXED: set()}
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        for name, values in seen.items():
            values.add(int((kube.get("deployment", name) or {})["spec"]["replicas"]))
        time.sleep(1)
    print(f"replicas seen over {WATCH_S} s of {RESYNC_S} s resyncs: {seen}")
    assert seen == {EXTERNAL: {SCALED}, FIXED: {SCALED}}, seen
    # No operator write on either Deployment (the scaler's own are not the operator's).
    assert _deployment_writes(audit, mark, kube.ns, EXTERNAL) == []
    assert _deployment_writes(audit, switched, kube.ns, FIXED) == []
    for name in (EXTERNAL, FIXED):
        assert not _owns_replicas(_deployment(cluster, kube.ns, name), MANAGER)
    assert kube.get("horizontalpodautoscaler", FIXED) is None


def test_api_server_refuses_external_together_with_enabled(
    cluster: Any, crds: None, kube: Any, spec_of: SpecOf, pipeline: Doc
) -> None:
    import yaml

    doc = pipeline(
        "both",
        spec_of(
            engineCache={"accessMode": "ReadWriteMany"},
            autoscaling={
                "enabled": True,
                "external": True,
                "targets": {"cpuUtilizationPercent": 60},
            },
        ),
    )
    out = cluster.kubectl("apply", "-n", kube.ns, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0
    assert "spec.autoscaling.external" in out.stderr, out.stderr
    assert "exclude each other" in out.stderr, out.stderr

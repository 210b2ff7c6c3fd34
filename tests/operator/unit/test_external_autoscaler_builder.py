"""``autoscaling.external``: a scaler such as KEDA owns the replica count, not the operator.

What a user relies on: the operator's Deployment carries no ``replicas`` (so its
server-side apply gives up the field and drift repair has nothing to put back), it
creates no HorizontalPodAutoscaler of its own, the PodDisruptionBudget still guards
drains, and asking for both autoscalers at once is refused with the field named.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from its_operator.api import resource
from its_operator.builders import children, deployment

Make = Callable[..., resource.Pipeline]

EXTERNAL = {"autoscaling": {"external": True}}


def _kinds(p: resource.Pipeline) -> list[str]:
    return [m["kind"] for m in children.desired(p, children.Observed())]


def test_external_scaler_gets_no_replicas_and_no_hpa(make_pipeline: Make) -> None:
    p = make_pipeline(**EXTERNAL)
    spec = deployment.build(p, config_hash="x")["spec"]
    assert "replicas" not in spec
    # Everything else the Deployment needs is still there.
    assert spec["selector"]["matchLabels"]
    assert spec["template"]["spec"]["containers"][0]["name"] == deployment.CONTAINER
    kinds = _kinds(p)
    assert "Deployment" in kinds
    assert "HorizontalPodAutoscaler" not in kinds
    # The PDB does not depend on a replica count: at most one pod evicted at a time.
    (pdb,) = (
        m for m in children.desired(p, children.Observed()) if m["kind"] == "PodDisruptionBudget"
    )
    assert pdb["spec"]["maxUnavailable"] == 1


def test_without_external_the_operator_sets_replicas(make_pipeline: Make) -> None:
    """The control: the default (and runtime.replicas) are applied, with no HPA."""
    assert deployment.build(make_pipeline(), config_hash="x")["spec"]["replicas"] == 1
    fixed = make_pipeline(
        runtime={"image": "i", "replicas": 3}, engineCache={"accessMode": "ReadWriteMany"}
    )
    assert deployment.build(fixed, config_hash="x")["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in _kinds(fixed)


def test_operator_hpa_still_owns_replicas_when_enabled(make_pipeline: Make) -> None:
    p = make_pipeline(
        engineCache={"accessMode": "ReadWriteMany"},
        autoscaling={"enabled": True, "targets": {"cpuUtilizationPercent": 60}},
    )
    assert "replicas" not in deployment.build(p, config_hash="x")["spec"]
    assert "HorizontalPodAutoscaler" in _kinds(p)


def test_external_and_enabled_together_are_refused(make_pipeline: Make) -> None:
    with pytest.raises(resource.InvalidSpecError, match="exclude each other"):
        make_pipeline(
            autoscaling={
                "enabled": True,
                "external": True,
                "targets": {"cpuUtilizationPercent": 60},
            }
        )


def test_external_defaults_off(make_pipeline: Make) -> None:
    p = make_pipeline()
    assert p.spec.autoscaling.external is False
    assert p.spec.autoscaling.operator_sets_replicas()

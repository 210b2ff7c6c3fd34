"""Status as users and tools (kstatus, Argo CD, kubectl wait) read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from its_operator.api import resource
from its_operator.builders import status

Make = Callable[..., resource.Pipeline]
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def _deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    ready: int = 2,
    updated: int = 2,
    total: int | None = None,
    available: bool = True,
    progressing_reason: str = "NewReplicaSetAvailable",
    message: str = "",
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False"},
                {
                    "type": "Progressing",
                    "status": "True"
                    if progressing_reason != "ProgressDeadlineExceeded"
                    else "False",
                    "reason": progressing_reason,
                    "message": message,
                },
            ],
        },
    }


def _conds(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in s["conditions"]}


def test_rolled_out_pipeline_is_ready(make_pipeline: Make) -> None:
    p = make_pipeline()
    obs = status.Observation(
        p,
        3,
        deployment=_deployment(),
        claim_name="demo-engine-cache",
        claim={"status": {"phase": "Bound", "capacity": {"storage": "20Gi"}}},
        endpoint="http://demo.ns.svc:8080",
    )
    s, transitions = status.compute(obs, None, T0)
    c = _conds(s)
    assert (c["Ready"]["status"], c["Progressing"]["status"], c["Degraded"]["status"]) == (
        "True",
        "False",
        "False",
    )
    assert s["observedGeneration"] == 3
    assert all(x["observedGeneration"] == 3 for x in c.values())
    assert s["replicasSummary"] == "2/2"
    assert s["reason"] == "Available"
    assert s["engineCache"] == {
        "claimName": "demo-engine-cache",
        "phase": "Bound",
        "capacity": "20Gi",
    }
    assert transitions == []  # the normal path posts no Event


def test_ready_stays_true_while_old_pods_serve_during_a_rollout(make_pipeline: Make) -> None:
    p = make_pipeline()
    rolling = _deployment(
        generation=3,
        observed=2,
        updated=1,
        total=3,
        ready=2,
        progressing_reason="ReplicaSetUpdated",
    )
    s, _ = status.compute(status.Observation(p, 4, deployment=rolling), None, T0)
    c = _conds(s)
    assert c["Ready"]["status"] == "True"
    assert c["Progressing"]["status"] == "True"
    assert c["Progressing"]["reason"] == "RollingOut"
    assert s["reason"] == "RollingOut"


def test_stuck_rollout_is_degraded_with_the_schedulers_reason(make_pipeline: Make) -> None:
    p = make_pipeline()
    stuck = _deployment(
        ready=0,
        available=False,
        progressing_reason="ProgressDeadlineExceeded",
        message='ReplicaSet "demo-1" has timed out progressing.',
    )
    cause = "Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    previous, _ = status.compute(status.Observation(p, 3, deployment=_deployment()), None, T0)
    s, transitions = status.compute(
        status.Observation(p, 3, deployment=stuck, pod_cause=cause), previous, T1
    )
    c = _conds(s)
    assert c["Degraded"]["status"] == "True"
    assert c["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert "Insufficient nvidia.com/gpu" in c["Degraded"]["message"]
    assert c["Ready"]["reason"] == "Unschedulable"
    assert s["reason"] == "ProgressDeadlineExceeded"
    assert [t.reason for t in transitions] == ["ProgressDeadlineExceeded", "Unschedulable"]
    assert all(t.type == "Warning" for t in transitions)


def test_missing_secret_outranks_the_deployment(make_pipeline: Make) -> None:
    p = make_pipeline()
    problem = status.Problem("SecretNotFound", "Secret ns/db-credentials not found")
    s, transitions = status.compute(
        status.Observation(p, 3, deployment=_deployment(), problems=[problem]), None, T0
    )
    c = _conds(s)
    assert c["Ready"]["status"] == "False"
    assert c["Ready"]["reason"] == "SecretNotFound"
    assert "db-credentials" in c["Ready"]["message"]
    assert s["reason"] == "SecretNotFound"
    assert [(t.type, t.reason) for t in transitions] == [("Warning", "SecretNotFound")]
    healed, back = status.compute(status.Observation(p, 3, deployment=_deployment()), s, T1)
    assert _conds(healed)["Ready"]["status"] == "True"
    assert [(t.type, t.reason) for t in back] == [("Normal", "Recovered")]


def test_transition_time_moves_only_when_status_flips(make_pipeline: Make) -> None:
    p = make_pipeline()
    first, _ = status.compute(status.Observation(p, 3, deployment=_deployment()), None, T0)
    again, _ = status.compute(status.Observation(p, 3, deployment=_deployment()), first, T1)
    assert again == first  # byte-identical: nothing to write
    msg_only = _deployment(ready=2, replicas=3, updated=3, total=3)  # message changes
    moved, _ = status.compute(status.Observation(p, 3, deployment=msg_only), first, T1)
    assert _conds(moved)["Ready"]["lastTransitionTime"] == T0
    down = _deployment(ready=0, available=False)
    flipped, _ = status.compute(status.Observation(p, 3, deployment=down), first, T1)
    assert _conds(flipped)["Ready"]["lastTransitionTime"] == T1


def test_unparseable_spec_reports_invalid_spec() -> None:
    problem = status.Problem("InvalidSpec", "spec.runtime: Field required")
    s, _ = status.compute(status.Observation(None, 7, problems=[problem]), None, T0)
    assert _conds(s)["Ready"]["reason"] == "InvalidSpec"
    assert s["observedGeneration"] == 7


def test_paused_pipeline_says_so(make_pipeline: Make) -> None:
    s, _ = status.compute(
        status.Observation(make_pipeline(), 3, deployment=_deployment(), paused=True), None, T0
    )
    assert _conds(s)["Progressing"]["reason"] == "Paused"

"""Status as users and tools (kstatus, Argo CD, kubectl wait) read it."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from its_devenv import kstatus
from its_operator.api import resource
from its_operator.builders import status
from its_operator.handlers import diagnosis
from tests.deploy import argocd

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


# --- kstatus (Flux): Reconciling / Stalled, judged by the real library ---------------
#
# ``kstatus`` runs ``status.Compute`` of sigs.k8s.io/cli-utils/pkg/kstatus/status (the
# Go tool in devenv/its_devenv/kstatus, built once per machine). Every case also asks
# what kstatus said of the same status without the two new conditions, i.e. before
# they existed: that is the bug each test pins (Failed read as InProgress, a rollout
# read as Current).

GPU_FOR_GOOD = (
    "Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: "
    "0/2 nodes are available: 2 Preemption is not helpful for scheduling."
)
GPU_BUSY_NOW = (
    "Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: "
    "0/2 nodes are available: 2 No preemption victims found for incoming pod."
)
KStatus = Callable[[dict[str, Any]], kstatus.Result]


@pytest.fixture(scope="module")
def verdict() -> KStatus:
    kstatus.ensure()  # builds it on a machine that has none (minutes, once)
    return kstatus.compute


def _object(s: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    """The AnalyticsPipeline as the API server serves it, with ``s`` as its status."""
    return {
        "apiVersion": "its.ai/v1alpha1",
        "kind": "AnalyticsPipeline",
        "metadata": {"name": "demo", "namespace": "ns", "generation": generation},
        "spec": {},
        "status": s,
    }


def _before(obj: dict[str, Any]) -> dict[str, Any]:
    """The same object as the operator wrote it before Reconciling/Stalled existed."""
    conditions = [
        c for c in obj["status"]["conditions"] if c["type"] not in ("Reconciling", "Stalled")
    ]
    return {**obj, "status": {**obj["status"], "conditions": conditions}}


def _crash_looping_pod(exit_code: int, name: str = "demo-7d9f-abcde") -> dict[str, Any]:
    """A runtime pod as the kubelet reports it after the container exited twice."""
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "runtime",
                    "ready": False,
                    "restartCount": 2,
                    "state": {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off 20s restarting failed container=runtime "
                            f"pod={name}_ns(uid)",
                        }
                    },
                    "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}},
                }
            ],
        },
    }


def _kstatus_pair(s: dict[str, Any]) -> tuple[str, str]:
    c = _conds(s)
    return c["Reconciling"]["status"], c["Stalled"]["status"]


def test_ready_pipeline_is_current(make_pipeline: Make, verdict: KStatus) -> None:
    s, _ = status.compute(
        status.Observation(make_pipeline(), 3, deployment=_deployment()), None, T0
    )
    assert _kstatus_pair(s) == ("False", "False")
    assert _conds(s)["Reconciling"]["reason"] == "Reconciled"
    assert verdict(_object(s)).status == "Current"


def test_rollout_under_way_is_in_progress_while_old_pods_serve(
    make_pipeline: Make, verdict: KStatus
) -> None:
    rolling = _deployment(updated=1, total=3, ready=2, progressing_reason="ReplicaSetUpdated")
    s, _ = status.compute(status.Observation(make_pipeline(), 3, deployment=rolling), None, T0)
    assert _conds(s)["Ready"]["status"] == "True"  # old pods serve: Ready as before
    assert _kstatus_pair(s) == ("True", "False")
    result = verdict(_object(s))
    assert (result.status, result.message) == ("InProgress", "1/2 pods updated, 2 ready")
    assert verdict(_before(_object(s))).status == "Current"  # the bug: done mid-rollout


def test_new_pipeline_without_a_deployment_is_in_progress(
    make_pipeline: Make, verdict: KStatus
) -> None:
    s, _ = status.compute(status.Observation(make_pipeline(), 1), None, T0)
    assert _kstatus_pair(s) == ("True", "False")
    assert _conds(s)["Reconciling"]["reason"] == "Creating"
    assert verdict(_object(s, generation=1)).status == "InProgress"


def test_deployment_generation_not_observed_is_in_progress(
    make_pipeline: Make, verdict: KStatus
) -> None:
    unobserved = _deployment(generation=3, observed=2)  # the Deployment controller lags
    s, _ = status.compute(status.Observation(make_pipeline(), 3, deployment=unobserved), None, T0)
    assert _conds(s)["Ready"]["status"] == "True"
    assert _kstatus_pair(s) == ("True", "False")
    assert verdict(_object(s)).status == "InProgress"
    assert verdict(_before(_object(s))).status == "Current"


def test_generation_not_observed_by_the_operator_is_in_progress_even_if_stalled(
    make_pipeline: Make, verdict: KStatus
) -> None:
    """A stale Failed must not fail the spec that fixes it: kstatus checks the CR's
    generation against ``status.observedGeneration`` before any condition."""
    problem = status.Problem("SecretNotFound", "Secret ns/db-credentials not found")
    obs = status.Observation(make_pipeline(), 3, deployment=_deployment(), problems=[problem])
    s, _ = status.compute(obs, None, T0)
    assert verdict(_object(s, generation=3)).status == "Failed"
    stale = verdict(_object(s, generation=4))
    assert stale.status == "InProgress"
    assert "generation is 4, but latest observed generation is 3" in stale.message


def test_missing_secret_is_failed_at_once(make_pipeline: Make, verdict: KStatus) -> None:
    problem = status.Problem("SecretNotFound", "Secret ns/db-credentials not found")
    obs = status.Observation(make_pipeline(), 3, deployment=_deployment(), problems=[problem])
    s, _ = status.compute(obs, None, T0)
    c = _conds(s)
    assert _kstatus_pair(s) == ("False", "True")
    assert (c["Stalled"]["reason"], c["Stalled"]["message"]) == (
        "SecretNotFound",
        "Secret ns/db-credentials not found",
    )
    assert (c["Ready"]["status"], c["Degraded"]["status"]) == ("False", "True")  # as before
    result = verdict(_object(s))
    assert (result.status, result.message) == ("Failed", "Secret ns/db-credentials not found")
    assert verdict(_before(_object(s))).status == "InProgress"  # the issue: never Failed
    healed, _ = status.compute(
        status.Observation(make_pipeline(), 3, deployment=_deployment()), s, T1
    )
    assert _kstatus_pair(healed) == ("False", "False")
    assert _conds(healed)["Stalled"]["lastTransitionTime"] == T1
    assert verdict(_object(healed)).status == "Current"


def test_gpu_request_no_node_can_fit_is_failed_before_the_deadline(
    make_pipeline: Make, verdict: KStatus
) -> None:
    pending = _deployment(ready=0, available=False, progressing_reason="ReplicaSetUpdated")
    obs = status.Observation(make_pipeline(), 3, deployment=pending, pod_cause=GPU_FOR_GOOD)
    s, transitions = status.compute(obs, None, T0)
    c = _conds(s)
    assert _kstatus_pair(s) == ("False", "True")
    assert c["Stalled"]["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in c["Stalled"]["message"]
    assert (c["Ready"]["reason"], c["Degraded"]["status"]) == ("Unschedulable", "False")
    assert s["reason"] == "Unschedulable"
    assert [(t.type, t.reason) for t in transitions] == [("Warning", "Unschedulable")]
    result = verdict(_object(s))
    assert result.status == "Failed"
    assert "nvidia.com/gpu" in result.message
    assert verdict(_before(_object(s))).status == "InProgress"


def test_gpus_busy_for_now_only_wait_until_the_progress_deadline(
    make_pipeline: Make, verdict: KStatus
) -> None:
    """Pods that would fit once others leave (the scheduler found no victims *now*)
    are waiting, not failed; the Deployment's progress deadline ends the wait."""
    pending = _deployment(ready=0, available=False, progressing_reason="ReplicaSetUpdated")
    p = make_pipeline()
    waiting, _ = status.compute(
        status.Observation(p, 3, deployment=pending, pod_cause=GPU_BUSY_NOW), None, T0
    )
    assert _kstatus_pair(waiting) == ("True", "False")
    assert _conds(waiting)["Reconciling"]["reason"] == "RollingOut"
    assert verdict(_object(waiting)).status == "InProgress"
    stuck = _deployment(
        ready=0,
        available=False,
        progressing_reason="ProgressDeadlineExceeded",
        message='ReplicaSet "demo-1" has timed out progressing.',
    )
    s, _ = status.compute(
        status.Observation(p, 3, deployment=stuck, pod_cause=GPU_BUSY_NOW), waiting, T1
    )
    c = _conds(s)
    assert _kstatus_pair(s) == ("False", "True")
    assert c["Stalled"]["reason"] == "ProgressDeadlineExceeded"
    assert "Insufficient nvidia.com/gpu" in c["Stalled"]["message"]
    assert (c["Reconciling"]["lastTransitionTime"], c["Stalled"]["lastTransitionTime"]) == (T1, T1)
    assert verdict(_object(s)).status == "Failed"
    assert verdict(_before(_object(s))).status == "InProgress"


@pytest.mark.parametrize(
    ("exit_code", "reason"), [(3, "ModelLoadFailed"), (2, "RuntimeConfigRejected")]
)
def test_runtime_that_cannot_load_its_model_is_failed(
    make_pipeline: Make, verdict: KStatus, exit_code: int, reason: str
) -> None:
    pods = [_crash_looping_pod(exit_code)]
    failure = diagnosis.runtime_failure_of(pods)
    assert failure is not None
    assert failure.reason == reason
    down = _deployment(ready=0, available=False)
    obs = status.Observation(
        make_pipeline(),
        3,
        deployment=down,
        pod_cause=diagnosis.pod_cause_of(pods),
        runtime_failure=failure,
    )
    s, transitions = status.compute(obs, None, T0)
    c = _conds(s)
    assert _kstatus_pair(s) == ("False", "True")
    assert c["Stalled"]["reason"] == reason
    assert "demo-7d9f-abcde" in c["Stalled"]["message"]
    assert f"exited with code {exit_code}" in c["Stalled"]["message"]
    assert (c["Ready"]["reason"], c["Degraded"]["status"]) == ("PodsNotReady", "False")
    assert "CrashLoopBackOff" in c["Ready"]["message"]
    assert s["reason"] == reason
    assert [t.reason for t in transitions] == [reason]
    assert verdict(_object(s)).status == "Failed"
    assert verdict(_before(_object(s))).status == "InProgress"


def test_new_model_that_cannot_load_fails_the_rollout_while_old_pods_serve(
    make_pipeline: Make, verdict: KStatus
) -> None:
    rolling = _deployment(updated=1, total=3, ready=2, progressing_reason="ReplicaSetUpdated")
    failure = diagnosis.runtime_failure_of([_crash_looping_pod(3)])
    obs = status.Observation(make_pipeline(), 4, deployment=rolling, runtime_failure=failure)
    s, _ = status.compute(obs, None, T0)
    c = _conds(s)
    assert (c["Ready"]["status"], c["Progressing"]["status"]) == ("True", "True")
    assert _kstatus_pair(s) == ("False", "True")
    assert verdict(_object(s, generation=4)).status == "Failed"
    assert verdict(_before(_object(s, generation=4))).status == "Current"


def test_other_crashes_are_not_judged_final() -> None:
    assert diagnosis.runtime_failure_of([_crash_looping_pod(1)]) is None  # a bug, OOM: retry
    starting = _crash_looping_pod(3)
    starting["status"]["containerStatuses"][0]["state"] = {"running": {}}  # restarted, up
    assert diagnosis.runtime_failure_of([starting]) is None
    sidecar = _crash_looping_pod(3)
    sidecar["status"]["containerStatuses"][0]["name"] = "istio-proxy"
    assert diagnosis.runtime_failure_of([sidecar]) is None


def test_runtime_exit_codes_are_the_runtimes_own() -> None:
    """The operator cannot import the runtime (no torch in its image): same numbers."""
    main = (pathlib.Path(__file__).resolve().parents[3] / "runtime/its_runtime/main.py").read_text()
    codes = dict(re.findall(r"^(EXIT_\w+) = (\d+)$", main, re.M))
    assert diagnosis.RUNTIME_EXIT_REASONS.keys() == {
        int(codes["EXIT_CONFIG"]),
        int(codes["EXIT_ENGINE"]),
    }
    assert diagnosis.RUNTIME_EXIT_REASONS[int(codes["EXIT_ENGINE"])][0] == "ModelLoadFailed"


def test_rejected_spec_and_capacity_shortage_are_failed(
    verdict: KStatus, make_pipeline: Make
) -> None:
    invalid = status.Problem("InvalidSpec", "spec.runtime: Field required")
    s, _ = status.compute(status.Observation(None, 7, problems=[invalid]), None, T0)
    assert _kstatus_pair(s) == ("False", "True")
    assert verdict(_object(s, generation=7)) == kstatus.Result(
        "Failed", "spec.runtime: Field required"
    )
    short = status.Problem("InsufficientCapacity", "12 cameras need 3 replicas", blocking=False)
    obs = status.Observation(make_pipeline(), 3, deployment=_deployment(), problems=[short])
    s, _ = status.compute(obs, None, T0)
    assert _conds(s)["Ready"]["status"] == "True"
    assert verdict(_object(s)).status == "Failed"
    assert verdict(_before(_object(s))).status == "Current"


def test_refused_child_is_retried_so_in_progress(make_pipeline: Make, verdict: KStatus) -> None:
    refused = status.Problem("DeploymentApplyFailed", "Deployment demo: etcdserver: timeout")
    obs = status.Observation(make_pipeline(), 3, deployment=_deployment(), problems=[refused])
    s, _ = status.compute(obs, None, T0)
    assert _kstatus_pair(s) == ("True", "False")
    assert _conds(s)["Reconciling"]["reason"] == "DeploymentApplyFailed"
    assert verdict(_object(s)).status == "InProgress"
    final = dataclasses.replace(refused, stalls=True)  # where the refusal is known final
    s, _ = status.compute(dataclasses.replace(obs, problems=[final]), None, T0)
    assert verdict(_object(s)).status == "Failed"


def test_paused_pipeline_is_not_reconciling(make_pipeline: Make, verdict: KStatus) -> None:
    obs = status.Observation(make_pipeline(), 3, deployment=_deployment(), paused=True)
    s, _ = status.compute(obs, None, T0)
    assert _conds(s)["Reconciling"]["reason"] == "Paused"
    assert _kstatus_pair(s) == ("False", "False")
    assert verdict(_object(s)).status == "Current"


def test_kstatus_conditions_keep_their_transition_time(make_pipeline: Make) -> None:
    p = make_pipeline()
    pending = _deployment(ready=0, available=False, progressing_reason="ReplicaSetUpdated")
    obs = status.Observation(p, 3, deployment=pending, pod_cause=GPU_FOR_GOOD)
    first, _ = status.compute(obs, None, T0)
    again, transitions = status.compute(obs, first, T1)
    assert again == first  # byte-identical: no write, and no second Event
    assert transitions == []
    other = GPU_FOR_GOOD.replace("0/2", "0/3")  # the message changes, the verdict does not
    moved, _ = status.compute(dataclasses.replace(obs, pod_cause=other), first, T1)
    assert _conds(moved)["Stalled"]["lastTransitionTime"] == T0
    assert _conds(moved)["Stalled"]["message"] != _conds(first)["Stalled"]["message"]


def test_argo_cd_health_agrees_where_both_can_tell(make_pipeline: Make, verdict: KStatus) -> None:
    """health.lua reads Ready/Progressing/Degraded only, so it is unchanged: Healthy
    is Current, and what Degraded says is Failed. kstatus also fails, earlier, what
    Argo CD shows as Progressing until the progress deadline (a request no node fits,
    a model that cannot load): Argo CD's Progressing is not a verdict, Flux's wait is."""
    p = make_pipeline()
    secret = status.Problem("SecretNotFound", "Secret ns/db-credentials not found")
    stuck = _deployment(ready=0, available=False, progressing_reason="ProgressDeadlineExceeded")
    pending = _deployment(ready=0, available=False, progressing_reason="ReplicaSetUpdated")
    cases = {
        "ready": (status.Observation(p, 3, deployment=_deployment()), "Healthy", "Current"),
        "secret": (
            status.Observation(p, 3, deployment=_deployment(), problems=[secret]),
            "Degraded",
            "Failed",
        ),
        "deadline": (status.Observation(p, 3, deployment=stuck), "Degraded", "Failed"),
        "unfit": (
            status.Observation(p, 3, deployment=pending, pod_cause=GPU_FOR_GOOD),
            "Progressing",
            "Failed",
        ),
        "busy": (
            status.Observation(p, 3, deployment=pending, pod_cause=GPU_BUSY_NOW),
            "Progressing",
            "InProgress",
        ),
    }
    seen = {}
    for name, (obs, _, _) in cases.items():
        s, _ = status.compute(obs, None, T0)
        obj = _object(s)
        seen[name] = (argocd.health(obj)[0], verdict(obj).status)
    assert seen == {name: (argo, flux) for name, (_, argo, flux) in cases.items()}


def test_reconciling_and_stalled_are_never_both_true(make_pipeline: Make) -> None:
    p = make_pipeline()
    secret = status.Problem("SecretNotFound", "Secret ns/db-credentials not found")
    deployments = [
        None,
        _deployment(),
        _deployment(updated=1, total=3, progressing_reason="ReplicaSetUpdated"),
        _deployment(ready=0, available=False, progressing_reason="ProgressDeadlineExceeded"),
    ]
    for d in deployments:
        for problems in ([], [secret]):
            for cause in (None, GPU_FOR_GOOD, GPU_BUSY_NOW):
                for paused in (False, True):
                    obs = status.Observation(
                        p, 3, deployment=d, problems=problems, pod_cause=cause, paused=paused
                    )
                    s, _ = status.compute(obs, None, T0)
                    assert _kstatus_pair(s) != ("True", "True"), obs

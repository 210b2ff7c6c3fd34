"""The pipeline's status, derived from what the handlers observed: a pure function.

Readiness comes from the runtime Deployment's own conditions (``Available``,
``Progressing`` with reason ``NewReplicaSetAvailable`` when done and
``ProgressDeadlineExceeded`` when stuck, ``ReplicaFailure``), never from a guess.
Ready stays True during a rollout while enough old pods serve (the Deployment stays
Available), and Progressing says a rollout is under way. Problems found by the
operator itself (a missing Secret, a child the API server refused, a spec that does
not parse) outrank the Deployment's view.

Beside those, kstatus' own abnormal-true pair, for Flux and any tool built on
``sigs.k8s.io/cli-utils/pkg/kstatus`` (which reads ``Reconciling``/``Stalled`` True
before anything else, then Ready): ``Stalled`` True while the pipeline cannot work
until the user changes something (a stalling problem, :data:`findings.STALLING_REASONS`;
a runtime that exits because its model cannot load or its config is refused; a
request for more GPUs, CPU or memory than any node has, in the scheduler's own words;
a rollout past its progress deadline), else ``Reconciling`` True while a rollout is under way or
pods are not ready yet. Never both, so kstatus reads Failed, InProgress or Current
without depending on their order.

``lastTransitionTime`` moves only when a condition's status flips, so an unchanged
world renders a byte-identical status and the handlers write nothing. The function
also returns the transitions worth an Event: into and out of Degraded, Ready
falling from True, into Stalled without Degraded, and cameras moving between
replicas (:mod:`cameras`). The normal path (created, then Ready) posts none, which
keeps a new pipeline's API writes to its children plus two status updates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from its_operator.api import resource
from its_operator.api import status as st
from its_operator.builders import cameras as cameras_builder
from its_operator.builders.findings import Problem, Transition

__all__ = ["Observation", "Problem", "Transition", "compute"]

READY, PROGRESSING, DEGRADED, RECONCILING, STALLED = (c.value for c in st.ConditionType)
TRUE, FALSE = st.ConditionStatus.TRUE.value, st.ConditionStatus.FALSE.value

#: The scheduler's words (its FitError, post-filter part) when preempting pods would
#: not help on any node: the request exceeds what a node has, not what is free now.
#: While some node could fit the pod once others leave, it says "No preemption victims
#: found" instead, and the pipeline is only waiting (until its progress deadline).
UNRESOLVABLE = "Preemption is not helpful for scheduling"
RESOLVABLE = "No preemption victims found"


@dataclasses.dataclass(frozen=True)
class Observation:
    pipeline: resource.Pipeline | None
    generation: int
    deployment: Mapping[str, Any] | None = None
    claim: Mapping[str, Any] | None = None
    claim_name: str | None = None
    endpoint: str | None = None
    service_monitor: st.ServiceMonitorState | None = None
    problems: Sequence[Problem] = ()
    #: Why pods do not run, from their PodScheduled/ContainersReady conditions.
    pod_cause: str | None = None
    #: The runtime refuses to start, by its own exit code (model cannot load, config
    #: refused) in crash-looping pods: stalls the pipeline, like a stalling problem.
    runtime_failure: Problem | None = None
    paused: bool = False
    #: ``status.cameras`` from the live Leases; None: not known yet (keep the stored one).
    cameras: Mapping[str, Any] | None = None
    #: Holders whose Lease is there but expired (for the failover Event).
    expired_members: frozenset[str] = frozenset()


def _deployment_conditions(d: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if d is None:
        return {}
    return {c.get("type", ""): c for c in d.get("status", {}).get("conditions", []) or []}


def _cond(ctype: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def _rollout(o: Observation) -> tuple[dict[str, str], dict[str, str], dict[str, str], int, int]:
    """(ready, progressing, degraded) conditions from the Deployment, plus desired/ready."""
    d = o.deployment
    if d is None:
        return (
            _cond(READY, FALSE, "Creating", "the runtime Deployment does not exist yet"),
            _cond(PROGRESSING, TRUE, "Creating", "creating the runtime Deployment"),
            _cond(DEGRADED, FALSE, "AsExpected", ""),
            0,
            0,
        )
    dspec, dstatus = d.get("spec", {}), d.get("status", {})
    desired = int(dspec.get("replicas", 1))
    ready = int(dstatus.get("readyReplicas", 0))
    updated = int(dstatus.get("updatedReplicas", 0))
    total = int(dstatus.get("replicas", 0))
    available = int(dstatus.get("availableReplicas", 0))
    conds = _deployment_conditions(d)
    avail = conds.get("Available", {})
    prog = conds.get("Progressing", {})
    failure = conds.get("ReplicaFailure", {})
    observed = int(dstatus.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 1))

    cause = f" ({o.pod_cause})" if o.pod_cause else ""
    if desired == 0:
        ready_c = _cond(READY, TRUE, "ScaledToZero", "0 replicas requested")
    elif avail.get("status") == TRUE and ready > 0:
        ready_c = _cond(READY, TRUE, "Available", f"{ready}/{desired} pods ready")
    elif o.pod_cause and "Unschedulable" in o.pod_cause:
        ready_c = _cond(READY, FALSE, "Unschedulable", f"{ready}/{desired} pods ready{cause}")
    else:
        ready_c = _cond(READY, FALSE, "PodsNotReady", f"{ready}/{desired} pods ready{cause}")

    if prog.get("reason") == "ProgressDeadlineExceeded":
        progressing_c = _cond(
            PROGRESSING, FALSE, "ProgressDeadlineExceeded", str(prog.get("message", ""))
        )
        degraded_c = _cond(
            DEGRADED,
            TRUE,
            "ProgressDeadlineExceeded",
            f"{prog.get('message', 'rollout stalled')}{cause}",
        )
    else:
        rolling = (
            not observed
            or updated < desired
            or total > updated
            or available < updated
            or (prog and prog.get("reason") != "NewReplicaSetAvailable")
        )
        if rolling:
            progressing_c = _cond(
                PROGRESSING, TRUE, "RollingOut", f"{updated}/{desired} pods updated, {ready} ready"
            )
        else:
            progressing_c = _cond(PROGRESSING, FALSE, "RolloutComplete", f"{updated} pods updated")
        if failure.get("status") == TRUE:
            degraded_c = _cond(
                DEGRADED,
                TRUE,
                str(failure.get("reason") or "ReplicaFailure"),
                str(failure.get("message", "")),
            )
        else:
            degraded_c = _cond(DEGRADED, FALSE, "AsExpected", "")
    return ready_c, progressing_c, degraded_c, desired, ready


def _unschedulable_for_good(pod_cause: str | None) -> str | None:
    """The scheduler's message when some pod can fit on no node even if others left."""
    for cause in (pod_cause or "").split("; "):
        if (
            cause.startswith("Unschedulable")
            and "Insufficient " in cause
            and UNRESOLVABLE in cause
            and RESOLVABLE not in cause
        ):
            return cause.removeprefix("Unschedulable: ")
    return None


def _stalled(o: Observation, progressing_c: dict[str, str]) -> dict[str, str] | None:
    """kstatus' Stalled=True condition when the pipeline cannot work without a change."""
    stalling = [p for p in o.problems if p.stalling]
    if stalling:
        return _cond(STALLED, TRUE, stalling[0].reason, "; ".join(p.message for p in stalling))
    if o.runtime_failure is not None:
        return _cond(STALLED, TRUE, o.runtime_failure.reason, o.runtime_failure.message)
    unfit = _unschedulable_for_good(o.pod_cause)
    if unfit is not None:
        return _cond(STALLED, TRUE, "Unschedulable", f"no node has what a pod requests: {unfit}")
    if progressing_c["reason"] == "ProgressDeadlineExceeded":
        cause = f" ({o.pod_cause})" if o.pod_cause else ""
        message = f"{progressing_c['message'] or 'rollout stalled'}{cause}"
        return _cond(STALLED, TRUE, "ProgressDeadlineExceeded", message)
    return None


def _kstatus(
    o: Observation, ready_c: dict[str, str], progressing_c: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(Reconciling, Stalled): never both True."""
    stalled_c = _stalled(o, progressing_c)
    if stalled_c is not None:
        why = f"stopped until something changes: see Stalled ({stalled_c['reason']})"
        return _cond(RECONCILING, FALSE, "Stalled", why), stalled_c
    not_stalled = _cond(STALLED, FALSE, "AsExpected", "")
    if o.paused:
        return _cond(RECONCILING, FALSE, "Paused", "spec.paused is true"), not_stalled
    if progressing_c["status"] == TRUE:
        reconciling_c = _cond(RECONCILING, TRUE, progressing_c["reason"], progressing_c["message"])
    elif ready_c["status"] != TRUE:
        reconciling_c = _cond(RECONCILING, TRUE, ready_c["reason"], ready_c["message"])
    else:
        reconciling_c = _cond(RECONCILING, FALSE, "Reconciled", "the current spec runs")
    return reconciling_c, not_stalled


def _with_times(
    new: dict[str, str], previous: Mapping[str, Mapping[str, Any]], generation: int, now: str
) -> dict[str, Any]:
    old = previous.get(new["type"])
    ltt = old.get("lastTransitionTime") if old and old.get("status") == new["status"] else None
    return {
        "type": new["type"],
        "status": new["status"],
        "observedGeneration": generation,
        "lastTransitionTime": ltt or now,
        "reason": new["reason"],
        "message": new["message"],
    }


def compute(
    o: Observation, previous: Mapping[str, Any] | None, now: str
) -> tuple[dict[str, Any], list[Transition]]:
    """The new ``status`` and the transitions (vs ``previous``) worth an Event."""
    prev_conditions = {c.get("type", ""): c for c in (previous or {}).get("conditions", []) or []}
    ready_c, progressing_c, degraded_c, desired, ready = _rollout(o)
    blocking = [p for p in o.problems if p.blocking]
    if blocking:
        first = blocking[0]
        message = "; ".join(p.message for p in blocking)
        ready_c = _cond(READY, FALSE, first.reason, message)
    if o.problems:
        first = o.problems[0]
        degraded_c = _cond(DEGRADED, TRUE, first.reason, "; ".join(p.message for p in o.problems))
    # From the Deployment's own view, before a pause hides it: paused or not, a
    # rollout past its deadline stays stalled.
    reconciling_c, stalled_c = _kstatus(o, ready_c, progressing_c)
    if o.paused:
        progressing_c = _cond(PROGRESSING, FALSE, "Paused", "spec.paused is true")

    conditions = [
        _with_times(c, prev_conditions, o.generation, now)
        for c in (ready_c, progressing_c, degraded_c, reconciling_c, stalled_c)
    ]
    if degraded_c["status"] == TRUE:
        reason = degraded_c["reason"]
    elif stalled_c["status"] == TRUE:
        reason = stalled_c["reason"]
    elif ready_c["status"] != TRUE:
        reason = ready_c["reason"]
    elif progressing_c["status"] == TRUE:
        reason = progressing_c["reason"]
    else:
        reason = ready_c["reason"]

    dstatus = (o.deployment or {}).get("status", {})
    status: dict[str, Any] = {
        "observedGeneration": o.generation,
        "conditions": conditions,
        "replicas": int(dstatus.get("replicas", 0)),
        "readyReplicas": int(dstatus.get("readyReplicas", 0)),
        "updatedReplicas": int(dstatus.get("updatedReplicas", 0)),
        "replicasSummary": f"{ready}/{desired}",
        "reason": reason,
    }
    if o.claim_name is not None:
        claim_status = (o.claim or {}).get("status", {})
        cache: dict[str, Any] = {
            "claimName": o.claim_name,
            "phase": claim_status.get("phase", "Pending") if o.claim else "Pending",
        }
        capacity = claim_status.get("capacity", {}).get("storage")
        if capacity:
            cache["capacity"] = capacity
        status["engineCache"] = cache
    if o.endpoint is not None:
        status["endpoint"] = o.endpoint
    if o.service_monitor is not None:
        status["monitoring"] = {"serviceMonitor": o.service_monitor.value}
    transitions = _transitions(prev_conditions, ready_c, degraded_c, stalled_c)
    previous_cameras = (previous or {}).get("cameras")
    if o.cameras is not None:
        status["cameras"] = dict(o.cameras)
        if o.pipeline is not None:
            transitions += cameras_builder.transitions(
                previous_cameras,
                o.cameras,
                [c.name for c in o.pipeline.spec.cameras],
                o.expired_members,
            )
    elif previous_cameras:
        status["cameras"] = dict(previous_cameras)
    return status, transitions


def _transitions(
    prev: Mapping[str, Mapping[str, Any]],
    ready_c: dict[str, str],
    degraded_c: dict[str, str],
    stalled_c: dict[str, str],
) -> list[Transition]:
    out: list[Transition] = []
    old_degraded = prev.get(DEGRADED, {}).get("status")
    if degraded_c["status"] == TRUE and old_degraded != TRUE:
        out.append(Transition("Warning", degraded_c["reason"], degraded_c["message"]))
    elif degraded_c["status"] == FALSE and old_degraded == TRUE:
        out.append(Transition("Normal", "Recovered", "no longer degraded"))
    elif (
        stalled_c["status"] == TRUE
        and degraded_c["status"] != TRUE
        and prev.get(STALLED, {}).get("status") != TRUE
    ):
        # Stalled by what Degraded does not say (a model that cannot load, a request
        # no node fits): worth its own Warning; with Degraded, that one says it.
        out.append(Transition("Warning", stalled_c["reason"], stalled_c["message"]))
    if prev.get(READY, {}).get("status") == TRUE and ready_c["status"] != TRUE:
        out.append(Transition("Warning", ready_c["reason"], ready_c["message"]))
    return out

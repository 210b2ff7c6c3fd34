"""The pipeline's status, derived from what the handlers observed: a pure function.

Readiness comes from the runtime Deployment's own conditions (``Available``,
``Progressing`` with reason ``NewReplicaSetAvailable`` when done and
``ProgressDeadlineExceeded`` when stuck, ``ReplicaFailure``), never from a guess.
Ready stays True during a rollout while enough old pods serve (the Deployment stays
Available), and Progressing says a rollout is under way. Problems found by the
operator itself (a missing Secret, a child the API server refused, a spec that does
not parse) outrank the Deployment's view.

``lastTransitionTime`` moves only when a condition's status flips, so an unchanged
world renders a byte-identical status and the handlers write nothing. The function
also returns the transitions worth an Event: into and out of Degraded, Ready
falling from True, and cameras moving between replicas (:mod:`cameras`). The normal
path (created, then Ready) posts none, which keeps a new pipeline's API writes to its
children plus two status updates.
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

READY, PROGRESSING, DEGRADED = (c.value for c in st.ConditionType)
TRUE, FALSE = st.ConditionStatus.TRUE.value, st.ConditionStatus.FALSE.value


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
    if o.paused:
        progressing_c = _cond(PROGRESSING, FALSE, "Paused", "spec.paused is true")

    conditions = [
        _with_times(c, prev_conditions, o.generation, now)
        for c in (ready_c, progressing_c, degraded_c)
    ]
    if degraded_c["status"] == TRUE:
        reason = degraded_c["reason"]
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
    transitions = _transitions(prev_conditions, ready_c, degraded_c)
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
    prev: Mapping[str, Mapping[str, Any]], ready_c: dict[str, str], degraded_c: dict[str, str]
) -> list[Transition]:
    out: list[Transition] = []
    old_degraded = prev.get(DEGRADED, {}).get("status")
    if degraded_c["status"] == TRUE and old_degraded != TRUE:
        out.append(Transition("Warning", degraded_c["reason"], degraded_c["message"]))
    elif degraded_c["status"] == FALSE and old_degraded == TRUE:
        out.append(Transition("Normal", "Recovered", "no longer degraded"))
    if prev.get(READY, {}).get("status") == TRUE and ready_c["status"] != TRUE:
        out.append(Transition("Warning", ready_c["reason"], ready_c["message"]))
    return out

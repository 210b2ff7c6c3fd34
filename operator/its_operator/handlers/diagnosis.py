"""Turning the children's observed state into what ``builders.status`` judges.

``builders.status`` is pure: it derives conditions and reasons from an
:class:`~its_operator.builders.status.Observation`. Gathering that observation is
not: the Deployment and the engine-cache claim come from the watch caches, and when
pods exist but do not run, the scheduler's or the kubelet's own words come from a
Pod list. That list is the one read a reconcile may add, so it is made only when a
pod is waiting and at most every ``POD_CAUSE_TTL_S`` per pipeline (a rollout
triggers many reconciles; each must not become a LIST). The same list says when the
runtime itself refuses to start: a crash-looping runtime container whose last exit
code is the runtime's own for "the model cannot load" or "the config is refused"
(``its_runtime.main``), which no restart cures. ``status.cameras`` comes
from the last Lease poll (:mod:`camera_leases`), also without a request, and the
replica floor (``InsufficientCapacity``) from the spec alone.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping, Sequence
from typing import Any

from its_operator.api import resource
from its_operator.api import status as st
from its_operator.builders import cameras as cameras_builder
from its_operator.builders import deployment as deployment_builder
from its_operator.builders import meta, service
from its_operator.builders import status as status_builder
from its_operator.handlers import cache, camera_leases, kube

#: Pods are listed (to say why they do not run) at most this often per pipeline.
POD_CAUSE_TTL_S = 10.0

#: The runtime's exit codes (``its_runtime.main.EXIT_CONFIG``/``EXIT_ENGINE``) that
#: mean "this spec cannot run", with the reason the status gives them.
RUNTIME_EXIT_REASONS = {
    2: ("RuntimeConfigRejected", "the runtime refuses its config"),
    3: ("ModelLoadFailed", "the model cannot be loaded"),
}


def invalid_spec(generation: int, error: resource.InvalidSpecError) -> status_builder.Observation:
    """The observation for a spec that does not parse: nothing else is looked at."""
    problem = status_builder.Problem("InvalidSpec", str(error))
    return status_builder.Observation(None, generation, problems=[problem])


class Diagnosis:
    """Observations of a pipeline's children, with the pod causes cached per pipeline."""

    def __init__(self, client: kube.Kube, leases: camera_leases.LeaseSnapshot) -> None:
        self.kube = client
        self.leases = leases
        self._pod_causes: dict[
            cache.Key, tuple[float, str | None, status_builder.Problem | None]
        ] = {}

    def forget(self, key: cache.Key) -> None:
        self._pod_causes.pop(key, None)

    async def observe(
        self,
        key: cache.Key,
        p: resource.Pipeline,
        generation: int,
        live: cache.Children,
        service_monitor: st.ServiceMonitorState,
        problems: list[status_builder.Problem],
    ) -> status_builder.Observation:
        deployment = live["Deployment"].get(meta.deployment_name(p))
        claim_name = meta.engine_cache_claim_name(p) if p.spec.engine_cache.enabled else None
        claim = live["PersistentVolumeClaim"].get(claim_name) if claim_name else None
        pod_cause, runtime_failure = None, None
        if deployment is not None and _pods_waiting(deployment):
            at, pod_cause, runtime_failure = self._pod_causes.get(key, (-1e9, None, None))
            if time.monotonic() - at > POD_CAUSE_TTL_S:
                selector = ",".join(f"{k}={v}" for k, v in meta.selector_labels(p).items())
                pods = await self.kube.list("v1", "Pod", p.namespace, selector)
                pod_cause, runtime_failure = pod_cause_of(pods), runtime_failure_of(pods)
                self._pod_causes[key] = (time.monotonic(), pod_cause, runtime_failure)
        else:
            self._pod_causes.pop(key, None)
        shortage = cameras_builder.capacity_problem(p)
        if shortage is not None:
            problems = [*problems, shortage]
        cameras, expired = None, frozenset[str]()
        leases = self.leases.of(key)
        if leases is not None:
            view = cameras_builder.live_view(leases, datetime.datetime.now(datetime.UTC))
            # The assignment is CPU work (~0.2 s for 1,000 cameras on 32 replicas):
            # off the event loop, so kopf's watches and liveness keep answering.
            cameras = await asyncio.to_thread(cameras_builder.build, p, view)
            expired = view.expired
        return status_builder.Observation(
            pipeline=p,
            generation=generation,
            deployment=deployment,
            claim=claim,
            claim_name=claim_name,
            endpoint=service.endpoint(p),
            service_monitor=service_monitor,
            problems=problems,
            pod_cause=pod_cause,
            runtime_failure=runtime_failure,
            paused=p.spec.paused,
            cameras=cameras,
            expired_members=expired,
        )


def pod_cause_of(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why runtime pods do not run: the scheduler's or the kubelet's own words."""
    causes: list[str] = []
    for pod in pods:
        pstatus = pod.get("status", {})
        for cond in pstatus.get("conditions", []) or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                reason = cond.get("reason", "Unschedulable")
                causes.append(f"{reason}: {cond.get('message', '')}")
        for cs in pstatus.get("containerStatuses", []) or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                causes.append(f"{waiting['reason']}: {waiting.get('message', '')}".strip(": "))
    unique = list(dict.fromkeys(c.strip() for c in causes))
    return "; ".join(unique[:3]) if unique else None


def runtime_failure_of(pods: Sequence[Mapping[str, Any]]) -> status_builder.Problem | None:
    """The runtime refusing to start for good: its container in CrashLoopBackOff (the
    kubelet restarted it and backs off) after exiting with one of its own codes for a
    model that cannot load or a config it refuses. Other crashes (killed for memory,
    a bug) are not judged final; the rollout's progress deadline still catches them."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses", []) or []:
            if cs.get("name") != deployment_builder.CONTAINER:
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            known = RUNTIME_EXIT_REASONS.get(int(last.get("exitCode", 0) or 0))
            if waiting.get("reason") != "CrashLoopBackOff" or known is None:
                continue
            reason, what = known
            said = str(last.get("message") or "").strip()
            message = (
                f"{what}: container {deployment_builder.CONTAINER} of pod "
                f"{pod.get('metadata', {}).get('name', '?')} exited with code "
                f"{last['exitCode']} and the kubelet backs off restarting it"
                + (f": {said}" if said else " (its log says why)")
            )
            return status_builder.Problem(reason, message, blocking=False, stalls=True)
    return None


def _pods_waiting(deployment: Mapping[str, Any]) -> bool:
    """Whether some pod exists but does not run (only then is listing pods useful)."""
    dstatus = deployment.get("status", {})
    replicas = int(dstatus.get("replicas", 0))
    return replicas > 0 and int(dstatus.get("unavailableReplicas", 0)) > 0

"""One reconcile of one pipeline: observe, render, write only what differs, report.

Level-based: it reads the current state (the watched pipeline and children, a few
GETs for Secrets), renders the desired children with the builders, and applies a
child only when it is missing, its desired-hash annotation differs (the spec
changed), or a field the operator set was changed by someone else (drift). The
status is computed by ``builders.status`` and applied only when it differs from the
stored one. With nothing changed a reconcile therefore makes no write at all, which
is what makes resyncs, restarts and child-event storms free.

Children the spec no longer wants (an HPA after autoscaling was turned off, ...) are
deleted if this pipeline controls them. A retained engine-cache PVC is never
deleted. The return value asks the queue to come back later (e.g. while a Secret is
missing, since Secrets are not watched).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

from its_operator.api import resource
from its_operator.api import status as st
from its_operator.builders import children as children_builder
from its_operator.builders import meta, secretrefs, service, servicemonitor
from its_operator.builders import status as status_builder
from its_operator.handlers import cache, drift, kube, metrics

logger = logging.getLogger(__name__)

#: How often a pipeline waiting for a Secret checks again (Secrets are not watched).
SECRET_RECHECK_S = 3.0
#: Status changes that flip no condition (pod counts, messages, a Ready=False reason)
#: are "cosmetic": written at most every STATUS_COSMETIC_INTERVAL_S, and while a
#: rollout is in progress at most every STATUS_ROLLOUT_INTERVAL_S (the flip that ends
#: the rollout is written at once and carries the latest counts). A rollout updates
#: the Deployment's status many times; each update must not become a write.
STATUS_COSMETIC_INTERVAL_S = 5.0
STATUS_ROLLOUT_INTERVAL_S = 60.0
#: Pods are listed (to say why they do not run) at most this often per pipeline.
POD_CAUSE_TTL_S = 10.0
#: Kinds applied before the workload, so its pods find their config and claim.
FIRST_WAVE = frozenset({"ConfigMap", "PersistentVolumeClaim", "Service"})
#: How long a "ServiceMonitor CRD exists" answer is trusted.
DISCOVERY_TTL_S = 30.0
EVENT_COMPONENT = "its-operator"


def index_id(kind: str) -> str:
    return f"its_{kind.lower()}_index"


PIPELINE_INDEX = index_id(resource.KIND)


@dataclasses.dataclass
class Outcome:
    """What one reconcile did (for tests, logs and the benchmark)."""

    applied: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    status_written: bool = False
    events: list[str] = dataclasses.field(default_factory=list)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, client: kube.Kube, state: cache.State) -> None:
        self.kube = client
        self.state = state
        self._sm_checked = -1e9
        self._sm_available = False
        self.last: dict[cache.Key, Outcome] = {}
        self._status_written: dict[cache.Key, float] = {}
        self._pod_causes: dict[cache.Key, tuple[float, str | None]] = {}

    async def service_monitor_crd(self) -> bool:
        if time.monotonic() - self._sm_checked > DISCOVERY_TTL_S:
            self._sm_available = await self.kube.has_resource(
                servicemonitor.GROUP, servicemonitor.VERSION, servicemonitor.PLURAL
            )
            self._sm_checked = time.monotonic()
        return self._sm_available

    async def _secrets(self, p: resource.Pipeline) -> tuple[list[status_builder.Problem], str]:
        """Problems with referenced Secrets, and a version string of those found."""
        needed = secretrefs.needed(p.spec)
        if not needed:
            return [], ""
        bodies = await asyncio.gather(
            *(self.kube.get("v1", "Secret", p.namespace, name) for name in needed)
        )
        problems: list[status_builder.Problem] = []
        versions: list[str] = []
        for (name, keys), body in zip(needed.items(), bodies, strict=True):
            if body is None:
                problems.append(
                    status_builder.Problem(
                        "SecretNotFound", f"Secret {p.namespace}/{name} not found"
                    )
                )
                versions.append(f"{name}:missing")
                continue
            present = set((body.get("data") or {}).keys()) | set(
                (body.get("stringData") or {}).keys()
            )
            missing = sorted(keys - present)
            if missing:
                problems.append(
                    status_builder.Problem(
                        "SecretKeyNotFound",
                        f"Secret {p.namespace}/{name} has no key {', '.join(missing)}",
                    )
                )
            bmeta = body["metadata"]
            versions.append(f"{name}:{bmeta.get('uid')}:{bmeta.get('resourceVersion')}")
        return problems, meta.canonical_hash(versions)

    def _live(self, key: cache.Key) -> dict[str, dict[str, dict[str, Any]]]:
        """kind -> name -> live child, for every kind the operator manages."""
        return {
            kind: self.state.children(index_id(kind), kind, key)
            for _, kind in children_builder.KINDS
        }

    async def _pod_cause(self, p: resource.Pipeline) -> str | None:
        """Why runtime pods do not run: the scheduler's or the kubelet's own words."""
        selector = ",".join(f"{k}={v}" for k, v in meta.selector_labels(p).items())
        pods = await self.kube.list("v1", "Pod", p.namespace, selector)
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

    async def reconcile(self, key: cache.Key) -> float | None:
        started = time.perf_counter()
        try:
            delay = await self._reconcile(key)
        except Exception as exc:
            metrics.RECONCILES.labels(result="error").inc()
            metrics.RECONCILE_ERRORS.labels(error=type(exc).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(result="ok" if delay is None else "requeue").inc()
        return delay

    async def _reconcile(self, key: cache.Key) -> float | None:
        body = self.state.pipeline(PIPELINE_INDEX, key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.last.pop(key, None)
            self._status_written.pop(key, None)
            self._pod_causes.pop(key, None)
            return None  # garbage collection removes owned children
        outcome = Outcome()
        self.last[key] = outcome
        generation = int(body["metadata"].get("generation", 1))
        try:
            p = resource.parse(body)
        except resource.InvalidSpecError as exc:
            problem = status_builder.Problem("InvalidSpec", str(exc))
            obs = status_builder.Observation(None, generation, problems=[problem])
            return await self._write_status(key, body, obs, outcome)

        live = self._live(key)
        problems: list[status_builder.Problem] = []
        requeue: float | None = None
        sm_state = st.ServiceMonitorState.DISABLED
        if p.spec.monitoring.service_monitor:
            sm_available = await self.service_monitor_crd()
            sm_state = (
                st.ServiceMonitorState.APPLIED
                if sm_available
                else st.ServiceMonitorState.CRD_NOT_INSTALLED
            )
        else:
            sm_available = False

        if not p.spec.paused:
            secret_problems, secrets_version = await self._secrets(p)
            problems += secret_problems
            if secret_problems:
                requeue = SECRET_RECHECK_S
            observed = children_builder.Observed(
                service_monitor_crd=sm_available, secrets_version=secrets_version
            )
            desired = children_builder.desired(p, observed)
            problems += await self._apply_all(p, desired, live, outcome)
            await self._prune(p, desired, live, outcome)
            live = self._live(key)

        deployment = live["Deployment"].get(meta.deployment_name(p))
        claim_name = meta.engine_cache_claim_name(p) if p.spec.engine_cache.enabled else None
        claim = live["PersistentVolumeClaim"].get(claim_name) if claim_name else None
        pod_cause = None
        if deployment is not None and _pods_waiting(deployment):
            at, pod_cause = self._pod_causes.get(key, (-1e9, None))
            if time.monotonic() - at > POD_CAUSE_TTL_S:
                pod_cause = await self._pod_cause(p)
                self._pod_causes[key] = (time.monotonic(), pod_cause)
        else:
            self._pod_causes.pop(key, None)
        obs = status_builder.Observation(
            pipeline=p,
            generation=generation,
            deployment=deployment,
            claim=claim,
            claim_name=claim_name,
            endpoint=service.endpoint(p),
            service_monitor=sm_state,
            problems=problems,
            pod_cause=pod_cause,
            paused=p.spec.paused,
        )
        status_requeue = await self._write_status(key, body, obs, outcome)
        if any(pr.reason.endswith("ApplyFailed") for pr in problems):
            raise RuntimeError("; ".join(pr.message for pr in problems))  # queue backs off
        delays = [d for d in (requeue, status_requeue) if d is not None]
        return min(delays) if delays else None

    async def _apply_all(
        self,
        p: resource.Pipeline,
        desired: list[meta.Manifest],
        live: Mapping[str, Mapping[str, dict[str, Any]]],
        outcome: Outcome,
    ) -> list[status_builder.Problem]:
        problems: list[status_builder.Problem] = []

        async def apply(manifest: meta.Manifest) -> None:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            reason = _why_apply(live.get(kind, {}).get(name), manifest)
            if reason is None:
                return
            logger.info("applying %s %s/%s (%s)", kind, p.namespace, name, reason)
            try:
                applied = await self.kube.apply(manifest)
            except kube.ApiError as exc:
                if exc.status == 404 and kind == "ServiceMonitor":
                    self._sm_checked = -1e9  # the CRD went away: look again next time
                    return
                problems.append(
                    status_builder.Problem(f"{kind}ApplyFailed", f"{kind} {name}: {exc.message}")
                )
                return
            self.state.remember(applied)
            outcome.applied.append(f"{kind}/{name}")

        # Two parallel waves: one round trip each instead of one per child.
        first = [m for m in desired if m["kind"] in FIRST_WAVE]
        await asyncio.gather(*(apply(m) for m in first))
        await asyncio.gather(*(apply(m) for m in desired if m["kind"] not in FIRST_WAVE))
        return problems

    async def _prune(
        self,
        p: resource.Pipeline,
        desired: list[meta.Manifest],
        live: Mapping[str, Mapping[str, dict[str, Any]]],
        outcome: Outcome,
    ) -> None:
        wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
        for api_version, kind in children_builder.KINDS:
            for name, body in live.get(kind, {}).items():
                if (kind, name) in wanted or not _controlled_by(body, p.uid):
                    continue
                logger.info("deleting %s %s/%s (no longer wanted)", kind, p.namespace, name)
                await self.kube.delete(api_version, kind, p.namespace, name)
                self.state.forget(kind, p.namespace, name)
                outcome.deleted.append(f"{kind}/{name}")

    async def _write_status(
        self,
        key: cache.Key,
        body: Mapping[str, Any],
        obs: status_builder.Observation,
        outcome: Outcome,
    ) -> float | None:
        """Apply the new status if it differs; cosmetic changes are throttled (see above).

        Returns when to come back for a deferred cosmetic change, else None.
        """
        previous = body.get("status") or {}
        new, transitions = status_builder.compute(obs, previous, _now())
        meta_ = body["metadata"]
        if _same_status(previous, new):
            return None
        if previous and _signature(previous) == _signature(new):
            rolling = any(
                c["type"] == "Progressing" and c["status"] == "True" for c in new["conditions"]
            )
            interval = STATUS_ROLLOUT_INTERVAL_S if rolling else STATUS_COSMETIC_INTERVAL_S
            since = time.monotonic() - self._status_written.get(key, -1e9)
            if since < interval:
                return interval - since
        await self.kube.apply_status(meta_["namespace"], meta_["name"], new)
        self._status_written[key] = time.monotonic()
        outcome.status_written = True
        for t in transitions:
            try:
                await self.kube.event(
                    body, type=t.type, reason=t.reason, message=t.message, component=EVENT_COMPONENT
                )
            except kube.ApiError as exc:  # an Event is a courtesy; the status already says it
                logger.warning("could not post Event %s for %s: %s", t.reason, key, exc.message)
                continue
            outcome.events.append(t.reason)
        return None


def _why_apply(current: Mapping[str, Any] | None, desired: meta.Manifest) -> str | None:
    """Why ``desired`` must be applied over ``current``, or None when it need not."""
    if current is None:
        return "missing"
    annotations = current.get("metadata", {}).get("annotations") or {}
    if annotations.get(meta.DESIRED_HASH) != desired["metadata"]["annotations"][meta.DESIRED_HASH]:
        return "spec changed"
    where = drift.difference(current, desired)
    if where is not None:
        return f"drift at {where}"
    return None


def _controlled_by(body: Mapping[str, Any], uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in body.get("metadata", {}).get("ownerReferences", []) or []
    )


def _pods_waiting(deployment: Mapping[str, Any]) -> bool:
    """Whether some pod exists but does not run (only then is listing pods useful)."""
    dstatus = deployment.get("status", {})
    replicas = int(dstatus.get("replicas", 0))
    return replicas > 0 and int(dstatus.get("unavailableReplicas", 0)) > 0


def _signature(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a status change worth writing at once: a new generation, a condition
    flip, a new Degraded reason, or a Ready reason while Ready is True."""
    conditions = status.get("conditions", []) or []
    return (
        status.get("observedGeneration"),
        tuple((c.get("type"), c.get("status")) for c in conditions),
        tuple(
            c.get("reason")
            for c in conditions
            if c.get("status") == "True" and c.get("type") in ("Degraded", "Ready")
        ),
        (status.get("monitoring") or {}).get("serviceMonitor"),
    )


def _same_status(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Equal as stored: the API server may drop empty strings and default fields."""
    return drift.difference(previous, new) is None and drift.difference(new, previous) is None

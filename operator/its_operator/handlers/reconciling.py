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

This module is only the order of those steps; each step is a module named by what
it does, as kopf's ``reactor/`` is: :mod:`discovery` (which optional APIs exist),
:mod:`secrets` (the referenced Secrets), :mod:`applying` (apply waves and pruning),
:mod:`diagnosis` (child states into an observation) and :mod:`status_writing` (the
throttled status write). The steps that keep state between reconciles (discovery,
pod causes, last status write, the membership Leases of :mod:`camera_leases`) are
objects owned by the :class:`Reconciler`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from its_operator.api import resource
from its_operator.api import status as st
from its_operator.builders import children as children_builder
from its_operator.builders import status as status_builder
from its_operator.handlers import (
    applying,
    cache,
    camera_leases,
    diagnosis,
    discovery,
    kube,
    metrics,
    secrets,
    status_writing,
)


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


class Reconciler:
    def __init__(
        self, client: kube.Kube, state: cache.State, namespaces: list[str] | None = None
    ) -> None:
        self.kube = client
        self.state = state
        self.discovery = discovery.Discovery(client)
        self.leases = camera_leases.LeaseSnapshot(client, namespaces)
        self.diagnosis = diagnosis.Diagnosis(client, self.leases)
        self.status = status_writing.StatusWriter(client)
        self.last: dict[cache.Key, Outcome] = {}
        self._parsed: dict[cache.Key, tuple[tuple[str, int], resource.Pipeline]] = {}

    async def _parse(self, key: cache.Key, body: Mapping[str, Any]) -> resource.Pipeline:
        """The parsed pipeline; parsed again only when its uid or generation moved (the
        spec cannot change without a new generation)."""
        meta = body["metadata"]
        stamp = (str(meta.get("uid")), int(meta.get("generation", 1)))
        hit = self._parsed.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        p = await asyncio.to_thread(resource.parse, body)
        self._parsed[key] = (stamp, p)
        return p

    def _live(self, key: cache.Key) -> cache.Children:
        """kind -> name -> live child, for every kind the operator manages."""
        return {
            kind: self.state.children(index_id(kind), kind, key)
            for _, kind in children_builder.KINDS
        }

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
            self.status.forget(key)
            self.diagnosis.forget(key)
            self._parsed.pop(key, None)
            return None  # garbage collection removes owned children
        outcome = Outcome()
        self.last[key] = outcome
        generation = int(body["metadata"].get("generation", 1))
        try:
            p = await self._parse(key, body)
        except resource.InvalidSpecError as exc:
            obs = diagnosis.invalid_spec(generation, exc)
            return self._record(outcome, await self.status.write(key, body, obs))

        live = self._live(key)
        problems: list[status_builder.Problem] = []
        requeue: float | None = None
        sm_state = await self.discovery.service_monitor(p.spec.monitoring.service_monitor)

        if not p.spec.paused:
            found = await secrets.resolve(self.kube, p)
            problems += found.problems
            if found.problems:
                requeue = secrets.SECRET_RECHECK_S
            observed = children_builder.Observed(
                service_monitor_crd=sm_state is st.ServiceMonitorState.APPLIED,
                secrets_version=found.version,
            )
            # Rendering is CPU work (a 1,000-camera config is ~0.4 MB of YAML): in a
            # thread, so the event loop (watches, liveness) keeps answering.
            desired = await asyncio.to_thread(children_builder.desired, p, observed)
            applied = await applying.apply_waves(self.kube, self.state, p, desired, live)
            if applied.unserved:
                self.discovery.invalidate()  # the CRD went away: look again next time
            outcome.applied += applied.applied
            problems += applied.problems
            outcome.deleted += await applying.prune(self.kube, self.state, p, desired, live)
            live = self._live(key)

        obs = await self.diagnosis.observe(key, p, generation, live, sm_state, problems)
        status_requeue = self._record(outcome, await self.status.write(key, body, obs))
        if any(pr.reason.endswith("ApplyFailed") for pr in problems):
            raise RuntimeError("; ".join(pr.message for pr in problems))  # queue backs off
        delays = [d for d in (requeue, status_requeue) if d is not None]
        return min(delays) if delays else None

    @staticmethod
    def _record(outcome: Outcome, written: status_writing.Written) -> float | None:
        """Note a status write in the outcome; return when to come back, if at all."""
        outcome.status_written = written.written
        outcome.events += written.events
        return written.retry_in

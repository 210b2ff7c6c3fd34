"""kopf wiring: indexes and event handlers that feed the queue, plus background tasks.

Only kopf's *indexing* and *event-watching* handlers are used. Unlike
``on.create``/``on.update``/daemons/timers they store no progress or diff-base
annotations and need no finalizer, so kopf itself never writes to a pipeline; every
write is the reconciler's and happens only when something differs. Deletion needs no
finalizer either: children are garbage-collected through ownerReferences, and a
retained PVC is simply not owned.

Children are watched with a server-side label selector (``managed-by=its-operator``)
so the operator neither receives nor holds other objects of those kinds; a child's
event re-queues its pipeline (found by the ``instance`` label), which is how a
deleted or edited child is repaired within about a second. The runtime's membership
Leases are the exception: they change every few seconds and are polled instead
(:mod:`camera_leases`), queuing only the pipelines whose members changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from its_operator.api import resource
from its_operator.builders import children as children_builder
from its_operator.builders import meta
from its_operator.handlers import (
    cache,
    camera_leases,
    election,
    kube,
    leadership,
    queue,
    reconciling,
)

logger = logging.getLogger(__name__)
CHILD_SELECTOR = f"{meta.LABEL_MANAGED_BY}={meta.MANAGED_BY}"
#: Children whose status feeds the pipeline's status; for the others, an event that
#: changes only their status (a PDB's healthy count, ...) is not worth a reconcile.
STATUS_READ = frozenset({"Deployment", "PersistentVolumeClaim"})
_VOLATILE_META = ("resourceVersion", "managedFields", "generation")


def fingerprint(body: Mapping[str, Any]) -> str:
    """A child's content without its status and bookkeeping metadata."""
    content = {k: v for k, v in body.items() if k != "status"}
    content["metadata"] = {
        k: v for k, v in body.get("metadata", {}).items() if k not in _VOLATILE_META
    }
    return meta.canonical_hash(content)


@dataclasses.dataclass(frozen=True)
class Options:
    #: None: cluster-wide; otherwise the namespaces served.
    namespaces: list[str] | None = None
    workers: int = 8
    resync_seconds: float = 300.0
    #: Events for one pipeline within this window fold into one reconcile.
    coalesce_seconds: float = 0.2
    #: None: standalone (no leader election); otherwise the Leases' name.
    lease_name: str | None = None
    #: Where a cluster-wide installation keeps its Lease (namespaced ones look there).
    lease_namespace: str = "its-system"
    timing: election.Timing = dataclasses.field(default_factory=election.Timing)
    identity: str = "its-operator"
    #: How often the runtime's membership Leases are listed (status.cameras).
    lease_poll_seconds: float = camera_leases.POLL_SECONDS


def _plural(api_version: str, kind: str) -> tuple[str, str]:
    return api_version, kube.PLURALS[kind]


class _Gates:
    """Dispatch only when this replica acts and kopf's indexes have listed everything.

    kopf calls no handler before every index has done its initial listing, so the
    first handler call marks the caches complete; before that, a resync could see a
    pipeline but not yet its children and re-apply them.
    """

    def __init__(self, leader: leadership.Leadership | leadership.Standalone) -> None:
        self.leader = leader
        self.synced = asyncio.Event()

    async def wait_open(self) -> None:
        await self.synced.wait()
        await self.leader.wait_open()


class Operator:
    """The reconciler, its queue and its gate, bound to one kopf registry."""

    def __init__(
        self, client: kube.Kube, options: Options, election_client: kube.Kube | None = None
    ) -> None:
        """``election_client``: the Lease's own connections (default: ``client``'s)."""
        self.options = options
        self.kube = client
        self.state = cache.State()
        self.reconciler = reconciling.Reconciler(client, self.state, options.namespaces)
        self.gate: leadership.Leadership | leadership.Standalone = (
            leadership.Leadership(
                election.KubeLeases(election_client or client),
                identity=options.identity,
                namespaces=options.namespaces,
                lease_name=options.lease_name,
                lease_namespace=options.lease_namespace,
                timing=options.timing,
                on_change=self._gate_changed,
            )
            if options.lease_name
            else leadership.Standalone()
        )
        client.fence = self.gate.acts_on
        self.gates = _Gates(self.gate)
        self.queue: queue.WorkQueue[cache.Key] = queue.WorkQueue(
            self._reconcile, workers=options.workers, gate=self.gates
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[tuple[str, str, str], str] = {}
        self._inflight: dict[cache.Key, asyncio.Task[float | None]] = {}
        self._election_kube = election_client

    async def _reconcile(self, key: cache.Key) -> float | None:
        """Reconcile ``key`` if this replica leads its namespace; cancellable on losing it."""
        if not self.gate.acts_on(key[0]):
            return None  # queued before the namespace was lost; re-queued if regained
        task = asyncio.create_task(self.reconciler.reconcile(key), name=f"reconcile {key}")
        self._inflight[key] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the queue itself is stopping
            return None  # cancelled by _gate_changed: leadership lost, not a failure
        finally:
            self._inflight.pop(key, None)

    def _gate_changed(self, old: leadership.View, new: leadership.View) -> None:
        lost = [k for k, t in self._inflight.items() if not new.acts_on(k[0]) and not t.done()]
        for key in lost:
            self._inflight[key].cancel()
        if lost:
            logger.info("leadership lost: cancelled %d in-flight reconciles", len(lost))
        if not new.acting:
            logger.info("not leading: dropping %d queued pipelines", len(self.queue))
            self.queue.clear()
        n = self.resync(spread=1.0, only=lambda ns: new.acts_on(ns) and not old.acts_on(ns))
        if n:
            logger.info("leading: queued %d pipelines", n)

    def resync(self, spread: float = 0.0, only: Callable[[str], bool] | None = None) -> int:
        """Queue every known pipeline (spread over ``spread`` seconds); return how many."""
        keys = [
            k
            for k in self.state.pipeline_keys(reconciling.PIPELINE_INDEX)
            if only is None or only(k[0])
        ]
        for key in keys:
            self.queue.add(key, random.uniform(0, spread) if spread else 0.0)
        return len(keys)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            if self.gate.is_open:
                n = self.resync(spread=min(10.0, self.options.resync_seconds / 2))
                logger.debug("periodic resync of %d pipelines", n)

    async def poll_leases(self) -> int:
        """List the membership Leases; queue the pipelines whose members changed."""
        leases = self.reconciler.leases
        await leases.refresh()
        keys = list(self.state.pipeline_keys(reconciling.PIPELINE_INDEX))
        bodies = [(k, b) for k in keys if (b := self.state.pipeline(reconciling.PIPELINE_INDEX, k))]
        changed = leases.changed(bodies, datetime.datetime.now(datetime.UTC))
        for key in changed:
            self.queue.add(key, self.options.coalesce_seconds)
        return len(changed)

    async def _lease_loop(self) -> None:
        # One listing before the first reconcile, so that a new pipeline's first status
        # already carries its cameras (one status write fewer) and a restart keeps them.
        try:
            await self.reconciler.leases.refresh()
        except Exception:
            logger.exception("membership Lease poll failed")
        await self.gates.synced.wait()
        while True:
            if self.gate.is_open:
                try:
                    n = await self.poll_leases()
                except Exception:  # a poll must never end the loop
                    logger.exception("membership Lease poll failed")
                else:
                    if n:
                        logger.debug("camera membership changed for %d pipelines", n)
            await asyncio.sleep(self.options.lease_poll_seconds)

    def configure(self, settings: kopf.OperatorSettings) -> None:
        for api_version, kind in children_builder.KINDS:
            settings.watching.label_selectors[_plural(api_version, kind)] = CHILD_SELECTOR

    def register(self, registry: kopf.OperatorRegistry) -> None:
        pipelines = (resource.API_VERSION, resource.PLURAL)

        @kopf.index(*pipelines, id=reconciling.PIPELINE_INDEX, registry=registry)
        def index_pipeline(**kw: Any) -> dict[cache.Key, dict[str, Any]]:
            return {(kw["namespace"], kw["name"]): cache.slim(kw["body"])}

        @kopf.on.event(*pipelines, id="its_pipeline_event", registry=registry)
        async def pipeline_event(**kw: Any) -> None:
            self.gates.synced.set()
            if not self.gate.acts_on(kw["namespace"]):
                return  # a standby (or a namespace left to another installation): indexes only
            self.queue.add((kw["namespace"], kw["name"]), self.options.coalesce_seconds)

        for api_version, kind in children_builder.KINDS:
            self._register_child(registry, api_version, kind)

        @kopf.on.startup(registry=registry)
        async def startup(**kwargs: Any) -> None:
            self.state.bind(_indexes(kwargs))
            self._tasks = [
                asyncio.create_task(self.queue.run(), name="its work queue"),
                asyncio.create_task(self.gate.run(), name="its leader election"),
                asyncio.create_task(self._resync_loop(), name="its resync"),
                asyncio.create_task(self._lease_loop(), name="its lease poll"),
            ]

        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # Only after every reconcile has stopped: the standby takes over at once.
            await self.gate.release()
            self.kube.close()
            if self._election_kube is not None:
                self._election_kube.close()

    def _register_child(self, registry: kopf.OperatorRegistry, api_version: str, kind: str) -> None:
        selector = _plural(api_version, kind)
        labels: dict[str, Any] = {
            meta.LABEL_MANAGED_BY: meta.MANAGED_BY,
            meta.LABEL_INSTANCE: kopf.PRESENT,
        }

        def index_child(**kw: Any) -> dict[cache.Key, dict[str, Any]]:
            owner = kw["labels"][meta.LABEL_INSTANCE]
            return {(kw["namespace"], owner): cache.slim(kw["body"])}

        async def child_event(**kw: Any) -> None:
            self.gates.synced.set()
            namespace, owner = kw["namespace"], kw["labels"][meta.LABEL_INSTANCE]
            child = (kind, namespace, kw["name"])
            if kw["type"] == "DELETED":
                self.state.forget(*child)
                self._seen.pop(child, None)
            elif kind not in STATUS_READ:
                print_ = fingerprint(kw["body"])
                if self._seen.get(child) == print_:
                    return  # a status-only update of a child whose status is not read
                self._seen[child] = print_
            if not self.gate.acts_on(namespace):
                return  # a standby keeps its indexes, queues nothing
            self.queue.add((namespace, owner), self.options.coalesce_seconds)

        kopf.index(*selector, id=reconciling.index_id(kind), labels=labels, registry=registry)(
            index_child
        )
        kopf.on.event(*selector, id=f"its_{kind.lower()}_event", labels=labels, registry=registry)(
            child_event
        )


def _indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k.startswith("its_") and k.endswith("_index")}

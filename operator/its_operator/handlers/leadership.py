"""Which namespaces this operator replica may act on: Lease leader election per scope.

Replicas of one installation contend for a Lease (:mod:`election`); installations
whose scopes overlap (a cluster-wide one and a namespaced one serving namespace X,
or two namespaced ones both serving X) must not both act on X either. The rule:

- a **namespaced** installation holds one Lease per namespace it serves, ``<name>``
  in that namespace (label ``its.ai/operator-lease=namespace``), and acts on a
  namespace only while it holds that namespace's Lease;
- a **cluster-wide** installation holds one Lease, ``<name>-cluster`` in ``--lease-namespace``
  (label ``...=cluster``), and acts on every namespace *except* those whose namespace
  Lease another live holder has: the more specific installation wins, as a user who
  installs a namespaced operator next to a cluster-wide one means it to. It lists the
  namespace Leases after every renew and stops acting on a namespace as soon as it
  sees one (cancelling its in-flight reconciles there), logging which holder it
  yields to and exporting ``its_operator_yielded_namespaces``.

Two cluster-wide installations (two overlays applied, each with its own
``--lease-namespace``) hold two cluster Leases and would both act everywhere. A
cluster-wide leader therefore lists the other cluster Leases too, and of the live ones
only the first in ``namespace/name`` order acts: the others stand back while it lives,
say so in their log and export ``its_operator_active 0`` and
``its_operator_rival_installations``. The order is the Leases' names, not who came first,
so a fail-over inside either installation (a new ``acquireTime``) never flips it. An
installation that wins but sees a live rival when it takes its Lease waits
``renewDeadline`` before acting, by the same argument as below.

Hand-over without two writers: the cluster-wide leader treats a listing older than
``renewDeadline`` as no listing (it then acts on nothing), so it stands back from X at
most ``renewDeadline`` after a namespaced replica took X's Lease. That replica
therefore waits ``renewDeadline`` before acting, unless the cluster Lease was absent
or released when it looked (after writing its own Lease: of the two "write mine,
then read theirs" orders at least one sees the other, so both cannot miss).

kopf peering is not used: this operator's kopf handlers only index and queue, they
never write, so there is nothing for peering to pause; the standby keeps its watches
and indexes warm (a take-over needs no re-listing) and drops queued work instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from its_operator.handlers import election, metrics

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class View:
    """A snapshot of what this replica acts on (compared to notice changes)."""

    #: None: every namespace (cluster-wide leader); else the namespaces acted on.
    namespaces: frozenset[str] | None
    excluded: frozenset[str] = frozenset()

    def acts_on(self, namespace: str) -> bool:
        if self.namespaces is None:
            return namespace not in self.excluded
        return namespace in self.namespaces

    @property
    def acting(self) -> bool:
        return self.namespaces is None or bool(self.namespaces)


IDLE = View(frozenset())


class Leadership:
    """Election for a cluster-wide (``namespaces`` None) or namespaced installation."""

    def __init__(
        self,
        store: Any,
        *,
        identity: str,
        namespaces: list[str] | None,
        lease_name: str,
        lease_namespace: str,
        timing: election.Timing,
        on_change: Callable[[View, View], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``store`` is an :class:`election.LeaseStore` that can also ``list_leases``."""
        self.store = store
        self.identity = identity
        self.timing = timing
        self._clock = clock
        self._on_change = on_change
        self._namespaces = namespaces
        # Named apart from the namespace Leases, so a namespaced installation may serve
        # the cluster-wide one's namespace without the two Leases colliding.
        self.cluster_lease = (lease_namespace, f"{lease_name}-cluster")
        self.lease_name = lease_name
        scope = "cluster" if namespaces is None else "namespace"
        targets = [lease_namespace] if namespaces is None else list(namespaces)
        self.electors = {
            ns: election.Elector(
                store,
                namespace=ns,
                name=self.cluster_lease[1] if namespaces is None else lease_name,
                identity=identity,
                timing=timing,
                scope=scope,
                clock=clock,
            )
            for ns in targets
        }
        # cluster-wide: the other installations' namespace Leases as observed.
        self._foreign: dict[str, election.Observed] = {}
        # cluster-wide: other cluster-wide installations' Leases, by (namespace, name).
        self._rivals: dict[tuple[str, str], election.Observed] = {}
        self._new_term = False
        self._rival_wait_until = -math.inf
        self._listed_at = -math.inf
        # namespaced: from when (monotonic) each held namespace may be acted on.
        self._ready_at: dict[str, float] = {}
        self.view = IDLE
        self._acting = asyncio.Event()

    # -- questions asked on every dispatch and every write -------------------------

    def current(self) -> View:
        now = self._clock()
        if self._namespaces is None:
            elector = next(iter(self.electors.values()))
            fresh = now - self._listed_at < self.timing.renew_deadline
            if not (elector.leading and fresh) or self._outranked(now):
                return IDLE
            if now < self._rival_wait_until:
                return IDLE
            excluded = frozenset(ns for ns, o in self._foreign.items() if o.live(now))
            return View(None, excluded)
        held = frozenset(
            ns
            for ns, e in self.electors.items()
            if e.leading and now >= self._ready_at.get(ns, math.inf)
        )
        return View(held)

    def _outranked(self, now: float) -> bool:
        """A live cluster-wide installation whose Lease comes first acts instead of us."""
        return any(o.live(now) and key < self.cluster_lease for key, o in self._rivals.items())

    def acts_on(self, namespace: str | None) -> bool:
        view = self.current()
        return view.acting if namespace is None else view.acts_on(namespace)

    @property
    def is_open(self) -> bool:
        return self.current().acting

    async def wait_open(self) -> None:
        while not self.is_open:
            self._acting.clear()
            await self._acting.wait()

    # -- the loop ---------------------------------------------------------------

    def _publish(self) -> None:
        view = self.current()
        for e in self.electors.values():
            metrics.LEADER.labels(lease=e.lease).set(1 if e.leading else 0)
        metrics.ACTIVE.set(1 if view.acting else 0)
        metrics.YIELDED.set(len(view.excluded))
        now = self._clock()
        metrics.RIVALS.set(sum(1 for o in self._rivals.values() if o.live(now)))
        if view == self.view:
            return
        old, self.view = self.view, view
        if view.acting:
            self._acting.set()
        if old.acting != view.acting:
            logger.info("%s %s", self.identity, "acts" if view.acting else "stopped acting")
        if self._on_change is not None:
            self._on_change(old, view)

    async def _step(self, ns: str, elector: election.Elector) -> None:
        was = elector.leading
        timeout = max(0.1, elector.deadline - self._clock()) if was else self.timing.renew_deadline
        try:
            async with asyncio.timeout(timeout):
                ok = await elector.step()
        except Exception as exc:  # an API error, or a renew that hangs past the deadline
            logger.warning("Lease %s: %s", elector.lease, exc or type(exc).__name__)
            ok = False
        if was and not elector.leading:
            elector.abdicate()
            logger.warning("%s lost Lease %s (not renewed in time)", self.identity, elector.lease)
        if ok and not was and self._namespaces is not None:
            self._ready_at[ns] = await self._namespaced_ready_at()
        if ok and not was and self._namespaces is None:
            self._new_term = True
        if self._namespaces is None and elector.leading:
            await self._list_foreign()

    async def _namespaced_ready_at(self) -> float:
        """Now, if no cluster-wide leader can be acting; else once it must have yielded."""
        now = self._clock()
        ns, name = self.cluster_lease
        try:
            # Every cluster-wide installation's Lease, whatever its --lease-namespace.
            held = [
                lease
                for lease in await self.store.list_leases(f"{election.LABEL_SCOPE}=cluster")
                if ((lease.get("spec") or {}).get("holderIdentity"))
            ]
            lease = held[0] if held else None
            if lease is not None:
                ns, name = lease["metadata"]["namespace"], lease["metadata"]["name"]
        except Exception:  # a namespaced installation may only read its own namespaces
            try:
                lease = await self.store.get_lease(ns, name)
            except Exception as exc:  # e.g. no RBAC to read it: assume the worst
                logger.info("cannot read cluster Lease %s/%s (%s)", ns, name, exc)
                lease = {"spec": {"holderIdentity": "?"}}
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
        if not holder:
            return now
        logger.info(
            "a cluster-wide operator (%s, Lease %s/%s) may be acting here: waiting %.0f s "
            "for it to stand back before acting",
            holder,
            ns,
            name,
            self.timing.renew_deadline,
        )
        return now + self.timing.renew_deadline

    async def _list_foreign(self) -> None:
        started = self._clock()
        try:
            leases = await self.store.list_leases(f"{election.LABEL_SCOPE}=namespace")
        except Exception as exc:
            logger.warning("listing namespaced installations' Leases failed: %s", exc)
            return
        seen: dict[str, election.Observed] = {}
        for lease in leases:
            ns = str(lease["metadata"]["namespace"])
            if lease["metadata"]["name"] != self.lease_name:
                continue
            o = election.observe(self._foreign.get(ns), lease, started)
            if o.holder == self.identity:
                continue
            seen[ns] = o
            if o.live(started) and not (ns in self._foreign and self._foreign[ns].live(started)):
                logger.info(
                    "namespace %s is served by a namespaced installation (%s holds Lease "
                    "%s/%s): this cluster-wide operator leaves it alone",
                    ns,
                    o.holder,
                    ns,
                    lease["metadata"]["name"],
                )
        try:
            clusters = await self.store.list_leases(f"{election.LABEL_SCOPE}=cluster")
        except Exception as exc:
            logger.warning("listing cluster-wide installations' Leases failed: %s", exc)
            return
        rivals: dict[tuple[str, str], election.Observed] = {}
        for lease in clusters:
            key = (str(lease["metadata"]["namespace"]), str(lease["metadata"]["name"]))
            if key == self.cluster_lease:
                continue
            o = election.observe(self._rivals.get(key), lease, started)
            rivals[key] = o
            if o.live(started) and not (key in self._rivals and self._rivals[key].live(started)):
                first = key < self.cluster_lease
                logger.warning(
                    "another cluster-wide installation acts on every namespace too (%s holds "
                    "Lease %s/%s): %s. Of overlapping cluster-wide installations only the "
                    "first Lease in namespace/name order acts; remove one, or give both the "
                    "same --lease-namespace so that their replicas elect one leader",
                    o.holder,
                    *key,
                    "this one stands back while it lives"
                    if first
                    else f"it stands back, this one ({self.cluster_lease[0]}/"
                    f"{self.cluster_lease[1]}) acts",
                )
        self._rivals = rivals
        if self._new_term:
            self._new_term = False
            if any(o.live(started) and key > self.cluster_lease for key, o in rivals.items()):
                # A rival that comes later may have acted while our Lease was vacant.
                self._rival_wait_until = started + self.timing.renew_deadline
        self._foreign = seen
        self._listed_at = started

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self._step(ns, e) for ns, e in self.electors.items()))
            self._publish()
            wake = self._clock() + self.timing.retry_period
            for ns, e in self.electors.items():
                if e.leading:
                    wake = min(wake, e.deadline)
                if ns in self._ready_at and self._clock() < self._ready_at[ns]:
                    wake = min(wake, self._ready_at[ns])
            if self._clock() < self._rival_wait_until:
                wake = min(wake, self._rival_wait_until)
            await asyncio.sleep(max(0.0, wake - self._clock()))
            self._publish()  # a deadline or a wait may have passed while we slept

    async def release(self) -> None:
        """Clean shutdown: stop acting, then hand every held Lease back."""
        for e in self.electors.values():
            try:
                await e.release()  # stops counting itself leader before it writes
            except Exception as exc:
                logger.warning("releasing Lease %s failed: %s", e.lease, exc)
        self._publish()


class Standalone:
    """``--standalone``: one replica, no election, acts on everything it serves."""

    view = View(None)

    def acts_on(self, namespace: str | None) -> bool:
        return True

    @property
    def is_open(self) -> bool:
        return True

    async def wait_open(self) -> None:
        return None

    async def run(self) -> None:
        metrics.ACTIVE.set(1)

    async def release(self) -> None:
        return None

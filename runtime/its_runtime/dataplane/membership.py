"""Runtime replicas agree on who analyses which camera through Kubernetes Leases.

The protocol (one ``coordination.k8s.io/v1`` Lease per runtime pod, not per camera):

* **Join.** A pod creates its membership Lease ``<pipeline>-<pod>`` in its namespace:
  ``holderIdentity`` = its pod name (downward API), label ``its.ai/pipeline`` =
  the pipeline, annotation ``its.ai/capacity`` = how many cameras it can take.
* **Renew.** Every ``renew_period_s`` it replaces its Lease (``renewTime`` moves; an
  optimistic-concurrency ``resourceVersion`` makes a lost race a failure, not an
  overwrite) and lists the pipeline's Leases. That is one write per pod per renew
  period, whatever the number of cameras; the list is a read.
* **Live members.** A Lease is live while this pod has seen its ``resourceVersion``
  change within the last ``lease_duration_s``, timed on this pod's own monotonic
  clock (as client-go's leader election does), so no two pods' wall clocks need to
  agree. A pod that has just started treats every Lease it sees as live for a full
  lease duration.
* **Assignment.** Every pod computes the same camera -> member map from the live
  members (:mod:`its_runtime.dataplane.assignment`), so assigning needs no writes.
* **Leave.** On SIGTERM a pod stops its cameras first and then deletes its Lease; the
  others see it gone at their next list and may start its cameras at once.
* **Expiry and fencing.** A pod whose last successful tick (renew *and* list) is older
  than ``fence_s = lease_duration_s - 2 * renew_period_s`` stops analysing (the
  camera loop checks :meth:`Membership.fenced` for every frame, so a process resumed
  after SIGSTOP analyses nothing before it has renewed). Others declare it expired
  only ``lease_duration_s`` after they last saw it renew, later than it fenced itself.

Why no camera runs on two pods at once: a pod stops a camera as soon as a successful
tick shows it is no longer the holder, and stops all of them when it cannot tick. A
pod that gains a camera starts it only when the previous holder has provably stopped:
its Lease is gone (released) or expired (it fenced itself before that), or this pod
has seen the new view for longer than ``fence_s`` plus a margin, by which time the
previous holder has either seen the same view (and stopped the camera) or fenced.
A pod that finds no other Lease of its pipeline at all starts at once: every pod
that runs a camera holds a Lease, and a Lease is deleted only by its holder after it
stopped, or by a peer two lease durations after it was last renewed (long after its
holder fenced itself).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from its_runtime.dataplane import assignment

log = logging.getLogger(__name__)

PIPELINE_LABEL = "its.ai/pipeline"
CAPACITY_ANNOTATION = "its.ai/capacity"
#: Added to every wait that guards against two holders, for scheduling jitter.
SAFETY_MARGIN_S = 1.0


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """What this module reads of a membership Lease."""

    name: str
    holder: str
    capacity: int
    resource_version: str


class LeaseApi(Protocol):
    """The few Lease calls membership makes (:class:`KubernetesLeaseApi` is the real one)."""

    def list(self, namespace: str, pipeline: str) -> list[LeaseRecord]: ...

    def create(self, namespace: str, body: dict[str, Any]) -> LeaseRecord: ...

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> LeaseRecord: ...

    def delete(self, namespace: str, name: str, resource_version: str | None) -> None: ...


class LeaseConflictError(Exception):
    """The Lease changed or vanished under us (HTTP 409 / 404)."""


@dataclasses.dataclass(frozen=True)
class Timing:
    lease_duration_s: float = 10.0
    renew_period_s: float = 2.0

    def __post_init__(self) -> None:
        # A pod fences itself after fence_s without a successful tick; ticks come every
        # renew period, so the fence must outlast one or a pod would fence between ticks.
        if self.fence_s <= self.renew_period_s:
            raise ValueError(
                "leaseDurationSeconds must exceed three times renewPeriodSeconds "
                f"(got {self.lease_duration_s} and {self.renew_period_s})"
            )

    @property
    def fence_s(self) -> float:
        return self.lease_duration_s - 2 * self.renew_period_s

    @property
    def handoff_wait_s(self) -> float:
        return self.fence_s + SAFETY_MARGIN_S


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a tick decided: the cameras this pod should run now, and the whole map."""

    run: frozenset[str]
    view: assignment.Assignment
    members: tuple[str, ...]
    #: Cameras this pod holds in the view but waits for before starting (hand-off).
    pending: frozenset[str]


class Membership:
    """One pod's membership: call :meth:`tick` every renew period, :meth:`leave` last."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        pipeline: str,
        pod: str,
        capacity: int,
        cameras: Iterable[str],
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.pipeline = pipeline
        self.pod = pod
        self.capacity = capacity
        self.cameras = sorted(set(cameras))
        self.timing = timing or Timing()
        self.clock = clock
        self.lease_name = f"{pipeline}-{pod}"[:253]
        self._own_version: str | None = None
        self._last_ok: float | None = None
        #: name -> (resourceVersion, when this pod first saw that version, record)
        self._seen: dict[str, tuple[str, float, LeaseRecord]] = {}
        self._view: assignment.Assignment | None = None
        self._pending_since: dict[str, float] = {}
        self._running: frozenset[str] = frozenset()
        self._assigned: tuple[tuple[assignment.Member, ...], assignment.Assignment] | None = None
        #: Holders that were live at the last tick.
        self._live_before: set[str] = set()

    # -- the lease body -------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        meta: dict[str, Any] = {
            "name": self.lease_name,
            "labels": {PIPELINE_LABEL: self.pipeline},
            "annotations": {CAPACITY_ANNOTATION: str(self.capacity)},
        }
        if self._own_version is not None:
            meta["resourceVersion"] = self._own_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.pod,
                "leaseDurationSeconds": round(self.timing.lease_duration_s),
                "renewTime": now.replace("+00:00", "Z"),
            },
        }

    def _renew(self) -> None:
        if self._own_version is None:
            rec = self.api.create(self.namespace, self._body())
        else:
            try:
                rec = self.api.replace(self.namespace, self.lease_name, self._body())
            except LeaseConflictError:
                # Our Lease vanished or changed under us: others may believe we left.
                # Stop everything and join again as a new member (gains wait).
                self._own_version = None
                self._running = frozenset()
                self._last_ok = None
                raise
        self._own_version = rec.resource_version

    # -- one round ----------------------------------------------------------------
    @property
    def running(self) -> frozenset[str]:
        """The cameras the last tick decided to run (empty as soon as a tick finds the
        pod fenced, before it renews)."""
        return self._running

    def fenced(self, now: float | None = None) -> bool:
        """True when this pod must not analyse: no successful tick for ``fence_s``."""
        if self._last_ok is None:
            return True
        t = self.clock() if now is None else now
        return t - self._last_ok > self.timing.fence_s

    def tick(self) -> Decision:
        """Renew, list, and decide which cameras to run. Raises on API failure (the
        caller keeps the previous decision until :meth:`fenced` says stop)."""
        started = self.clock()
        if self.fenced(started):
            # Stopped (or never started) for longer than the fence: others may have
            # taken our cameras. Start over as a newcomer whose gains all wait.
            self._running = frozenset()
            self._pending_since.clear()
        self._renew()
        records = self.api.list(self.namespace, self.pipeline)
        # No other Lease exists at all: nobody else can be running a camera (a running
        # pod holds a Lease; one is deleted only after its holder left or fenced).
        alone = all(r.holder == self.pod for r in records)
        now = self.clock()
        live, departed = self._observe(records, now)
        members = [assignment.Member(r.holder, r.capacity) for r in live]
        # Members rarely change; the assignment (0.2 s for 1,000 cameras on 32 pods) is
        # recomputed only when they do.
        key = tuple(members)
        if self._assigned is None or self._assigned[0] != key:
            self._assigned = (key, assignment.assign(self.cameras, members))
        view = self._assigned[1]
        previous = self._view
        mine = frozenset(view.cameras_of(self.pod))
        run: set[str] = set()
        pending: set[str] = set()
        for cam in mine:
            if cam in self._running:
                run.add(cam)
                continue
            before = previous.holders.get(cam) if previous is not None else None
            if before is not None and before != self.pod and before in departed:
                run.add(cam)  # the previous holder released or expired: it has stopped
                continue
            if alone:
                run.add(cam)
                continue
            since = self._pending_since.setdefault(cam, now)
            if now - since >= self.timing.handoff_wait_s:
                run.add(cam)
            else:
                pending.add(cam)
        self._pending_since = {c: t for c, t in self._pending_since.items() if c in pending}
        self._view = view
        self._running = frozenset(run)
        # A tick counts from its start: a slow list must not stretch the fence.
        self._last_ok = started
        return Decision(
            run=self._running,
            view=view,
            members=tuple(m.name for m in members),
            pending=frozenset(pending),
        )

    def _observe(
        self, records: Iterable[LeaseRecord], now: float
    ) -> tuple[list[LeaseRecord], set[str]]:
        """Live members, and the holders that left or expired since the last tick."""
        before = self._live_before
        current: dict[str, tuple[str, float, LeaseRecord]] = {}
        for rec in records:
            old = self._seen.get(rec.name)
            if old is not None and old[0] == rec.resource_version:
                current[rec.name] = old
            else:
                current[rec.name] = (rec.resource_version, now, rec)
        self._seen = current
        live = [rec for _, _, rec in current.values() if self._is_live(rec, now)]
        live_holders = {r.holder for r in live}
        # Our own Lease is live by definition right after a successful renew.
        if self.pod not in live_holders:
            own = assignment.Member(self.pod, self.capacity)
            live.append(LeaseRecord(self.lease_name, own.name, own.capacity, ""))
            live_holders.add(self.pod)
        self._live_before = live_holders
        return sorted(live, key=lambda r: r.holder), before - live_holders

    def _is_live(self, rec: LeaseRecord, now: float) -> bool:
        if rec.holder == self.pod:
            return True
        entry = self._seen.get(rec.name)
        return entry is not None and now - entry[1] < self.timing.lease_duration_s

    def expired_leases(self, now: float | None = None) -> list[LeaseRecord]:
        """Leases not renewed for two lease durations: safe for anyone to delete."""
        t = self.clock() if now is None else now
        return [
            rec
            for _, first, rec in self._seen.values()
            if rec.holder != self.pod and t - first > 2 * self.timing.lease_duration_s
        ]

    def leave(self) -> None:
        """Release: call only after this pod's cameras have stopped."""
        self._running = frozenset()
        self._last_ok = None
        if self._own_version is not None:
            self.api.delete(self.namespace, self.lease_name, self._own_version)
            self._own_version = None


def record_from(obj: Mapping[str, Any]) -> LeaseRecord:
    """A Lease as the API returns it (a dict) -> :class:`LeaseRecord`."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    annotations = meta.get("annotations") or {}
    try:
        capacity = int(annotations.get(CAPACITY_ANNOTATION, "0"))
    except ValueError:
        capacity = 0
    return LeaseRecord(
        name=str(meta.get("name", "")),
        holder=str(spec.get("holderIdentity") or ""),
        capacity=max(0, capacity),
        resource_version=str(meta.get("resourceVersion", "")),
    )

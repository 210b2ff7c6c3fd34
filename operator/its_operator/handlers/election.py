"""One ``coordination.k8s.io/v1`` Lease contended for the way client-go's leaderelection does.

Peering (kopf's keep-alives, read every few seconds) let a new replica act after its
first poll while the old one still acted until its next: two writers at once. A
Lease is a compare-and-swap register instead: every step reads the Lease and writes
it back with the ``resourceVersion`` it read, so of two replicas that race for an
expired Lease exactly one update succeeds (the other gets 409 Conflict).

The rules are client-go's (``tryAcquireOrRenew``):

- a held Lease is live while its record has changed within ``leaseDuration`` of *this
  process's* clock (the time we observed the change, never the holder's
  ``renewTime``, so clock skew between nodes does not matter); a Lease with an empty
  ``holderIdentity`` is free at once;
- taking it over sets ``acquireTime`` and increments ``leaseTransitions``; renewing
  keeps both and moves ``renewTime``;
- a leader that has not renewed for ``renewDeadline`` (measured from the *start* of
  its last successful renew, so the margin to ``leaseDuration`` is never eaten by a
  slow request) stops leading: it is no longer leader before anyone may take over;
- a clean shutdown releases: ``holderIdentity`` cleared and ``leaseDurationSeconds``
  1, so the standby takes over at its next retry instead of after the full duration.

The clock is injectable so the state machine is tested without waiting.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from its_operator.handlers import kube

logger = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
#: The election's own client says so in the audit log (reconcile writes: its-operator/).
USER_AGENT = "its-operator-election/0.1.0"
#: Label on the operator's own Leases: ``cluster`` (a cluster-wide installation's) or
#: ``namespace`` (a namespaced installation's, one per namespace it serves).
LABEL_SCOPE = "its.ai/operator-lease"


class ConflictError(Exception):
    """The Lease changed (or appeared) since we read it: someone else won this round."""


class LeaseStore(Protocol):
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class Timing:
    """12 s lease, 8 s renew deadline, 2 s retry period.

    client-go's defaults are 15/10/2, which make a takeover after a kill -9 take
    15-19 s (the lease duration plus a retry period). 12/8/2 keeps client-go's ratios
    and margin (the leader stops 4 s before anyone may take over) and brings the
    takeover inside 15 s.
    """

    lease_duration: float = 12.0
    renew_deadline: float = 8.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go: leaseDuration > renewDeadline > JitterFactor (1.2) x retryPeriod.
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period > 0:
            raise ValueError(
                "need leaseDuration > renewDeadline > 1.2 x retryPeriod > 0, got "
                f"{self.lease_duration}/{self.renew_deadline}/{self.retry_period}"
            )


def _micro(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wall() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass
class Observed:
    """A Lease as last read, and when (on our monotonic clock) its record last changed."""

    resource_version: str
    holder: str
    duration: float
    changed_at: float

    def live(self, now: float) -> bool:
        return bool(self.holder) and now < self.changed_at + self.duration


def observe(previous: Observed | None, lease: Mapping[str, Any], now: float) -> Observed:
    """Fold a freshly read Lease into what we knew of it (client-go's observedTime)."""
    spec = lease.get("spec") or {}
    rv = str(lease.get("metadata", {}).get("resourceVersion", ""))
    holder = str(spec.get("holderIdentity") or "")
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if previous is not None and previous.resource_version == rv:
        return previous
    return Observed(rv, holder, duration, now)


class Elector:
    """Acquire, renew and release one Lease for ``identity``; ask ``leading`` at any time."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing,
        scope: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = _wall,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.scope = scope
        self._clock = clock
        self._wall = wall
        self.observed: Observed | None = None
        self._record: dict[str, Any] | None = None  # the Lease as we last wrote/read it
        self._renewed_at = -math.inf  # start of the last successful acquire/renew

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def leading(self) -> bool:
        """True while we hold the Lease and the renew deadline has not passed."""
        return self._clock() - self._renewed_at < self.timing.renew_deadline

    @property
    def deadline(self) -> float:
        """The monotonic time at which we stop leading unless renewed first."""
        return self._renewed_at + self.timing.renew_deadline

    @property
    def holder(self) -> str:
        return self.observed.holder if self.observed else ""

    def _spec(self, now: datetime.datetime, old: Mapping[str, Any]) -> dict[str, Any]:
        ours = old.get("holderIdentity") == self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timing.lease_duration),
            "acquireTime": (old.get("acquireTime") if ours else None) or _micro(now),
            "renewTime": _micro(now),
            "leaseTransitions": int(old.get("leaseTransitions") or 0) + (0 if ours else 1),
        }

    async def step(self) -> bool:
        """One try to acquire or renew; True if we hold the Lease afterwards."""
        started = self._clock()
        now = self._wall()
        lease = await self.store.get_lease(self.namespace, self.name)
        if lease is None:
            body: dict[str, Any] = {
                "apiVersion": LEASE_API_VERSION,
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {LABEL_SCOPE: self.scope},
                },
                "spec": {**self._spec(now, {}), "leaseTransitions": 0},
            }
            try:
                created = await self.store.create_lease(body)
            except ConflictError:
                return False
            return self._won(created, started)
        self.observed = observe(self.observed, lease, started)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity and self.observed.live(self._clock()):
            self._renewed_at = -math.inf  # someone else holds it (we may have lost it)
            return False
        update = dict(lease)
        update["spec"] = {**spec, **self._spec(now, spec)}
        try:
            replaced = await self.store.replace_lease(update)
        except ConflictError:
            return False
        return self._won(lease, started, replaced)

    def _won(
        self, old: Mapping[str, Any], started: float, new: Mapping[str, Any] | None = None
    ) -> bool:
        record = dict(new if new is not None else old)
        if (record.get("spec") or {}).get("holderIdentity") != self.identity:
            return False  # created, then taken by another before we read it back
        was = self.leading
        self._record = record
        self.observed = observe(None, record, started)
        self._renewed_at = started
        if not was:
            transitions = (record.get("spec") or {}).get("leaseTransitions", 0)
            logger.info(
                "%s: acquired Lease %s (transitions %s)", self.identity, self.lease, transitions
            )
        return True

    def abdicate(self) -> None:
        """Stop counting ourselves leader now (the renew loop gave up)."""
        self._renewed_at = -math.inf

    async def release(self) -> bool:
        """Hand the Lease back (holder cleared, 1 s duration); True if it was ours to give."""
        self._renewed_at = -math.inf
        held = self._record and (self._record.get("spec") or {}).get("holderIdentity")
        if self._record is None or held != self.identity:
            return False
        now = _micro(self._wall())
        body = dict(self._record)
        body["spec"] = {
            **(self._record.get("spec") or {}),
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
        }
        try:
            await self.store.replace_lease(body)
        except ConflictError:
            return False
        logger.info("%s: released Lease %s", self.identity, self.lease)
        return True


class KubeLeases:
    """:class:`LeaseStore` over :class:`kube.Kube`; its writes bypass the leader fence."""

    def __init__(self, client: kube.Kube) -> None:
        self.kube = client

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(LEASE_API_VERSION, "Lease", namespace, name)

    async def create_lease(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if not await self.kube.create(body, fenced=False):
            raise ConflictError("created by someone else meanwhile")
        meta = body["metadata"]
        created = await self.get_lease(meta["namespace"], meta["name"])
        if created is None:
            raise ConflictError("deleted meanwhile")
        return created

    async def replace_lease(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return await self.kube.replace(body, fenced=False)
        except kube.ApiError as exc:
            if exc.status == 409:
                raise ConflictError(exc.message) from None
            raise

    async def list_leases(self, label_selector: str) -> list[dict[str, Any]]:
        """The operator's Leases with ``label_selector`` in every namespace."""
        return await self.kube.list(LEASE_API_VERSION, "Lease", None, label_selector)

"""Lease leader election: client-go's rules, on a fake clock and an in-memory API server."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from its_operator.handlers import election, leadership, metrics

TIMING = election.Timing(15.0, 10.0, 2.0)  # client-go's defaults (ours: 12 / 8 / 2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """An API server's Lease storage: resourceVersion-guarded create/update, outages."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = itertools.count(1)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("apiserver unreachable")

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create_lease(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.objects:
            raise election.ConflictError("exists")
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def replace_lease(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        stored = self.objects[key]
        if stored["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise election.ConflictError("the object has been modified")
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def list_leases(self, label_selector: str) -> list[dict[str, Any]]:
        self._check()
        key, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(o)
            for o in self.objects.values()
            if o["metadata"].get("labels", {}).get(key) == value
        ]

    def spec(
        self, namespace: str = "its-system", name: str = "its-operator-cluster"
    ) -> dict[str, Any]:
        spec: dict[str, Any] = self.objects[(namespace, name)]["spec"]
        return spec


def elector(store: FakeLeases, clock: Clock, identity: str) -> election.Elector:
    return election.Elector(
        store,
        namespace="its-system",
        name="its-operator-cluster",
        identity=identity,
        timing=TIMING,
        scope="cluster",
        clock=clock,
    )


async def test_first_candidate_creates_the_lease_and_a_second_stands_by() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.step()
    assert not await b.step()
    assert a.leading
    assert not b.leading
    spec = store.spec()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0


async def test_renewing_keeps_acquire_time_and_transitions_and_moves_renew_time() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, clock, "a")
    await a.step()
    first = dict(store.spec())
    clock.now += 2
    assert await a.step()
    spec = store.spec()
    assert spec["acquireTime"] == first["acquireTime"]
    assert spec["leaseTransitions"] == 0
    assert spec["renewTime"] >= first["renewTime"]


async def test_standby_takes_over_only_after_the_lease_duration_it_observed() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.step()
    assert not await b.step()  # b observes a's record now
    clock.now += TIMING.lease_duration - 0.5  # a died: no renew since
    assert not await b.step()
    clock.now += 1.0
    assert await b.step()
    assert store.spec()["holderIdentity"] == "b"
    assert store.spec()["leaseTransitions"] == 1


async def test_the_leader_stops_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.step()
    await b.step()
    store.down = True  # a cannot renew any more
    clock.now += TIMING.renew_deadline - 0.01
    assert a.leading
    clock.now += 0.02
    assert not a.leading  # stopped at 10 s ...
    store.down = False
    assert not await b.step()  # ... while b may take over only at 15 s
    clock.now += TIMING.lease_duration - TIMING.renew_deadline
    assert await b.step()


async def test_two_standbys_racing_for_an_expired_lease_elect_exactly_one() -> None:
    store, clock = FakeLeases(), Clock()
    a, b, c = (elector(store, clock, n) for n in "abc")
    await a.step()
    await b.step()
    await c.step()
    clock.now += TIMING.lease_duration + 1
    # Both read the same resourceVersion before either writes: one update must lose.
    lease = await store.get_lease("its-system", "its-operator-cluster")
    real_get = store.get_lease

    async def stale_get(namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(lease)

    store.get_lease = stale_get  # type: ignore[method-assign]
    won = [await b.step(), await c.step()]
    store.get_lease = real_get  # type: ignore[method-assign]
    assert sorted(won) == [False, True]
    assert store.spec()["leaseTransitions"] == 1


async def test_release_lets_the_standby_take_over_at_its_next_retry() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.step()
    await b.step()
    assert await a.release()
    assert not a.leading
    assert store.spec()["holderIdentity"] == ""
    assert store.spec()["leaseDurationSeconds"] == 1
    clock.now += TIMING.retry_period
    assert await b.step()
    assert store.spec()["leaseTransitions"] == 1


def test_timing_rejects_a_renew_deadline_that_leaves_no_margin() -> None:
    with pytest.raises(ValueError, match="leaseDuration > renewDeadline"):
        election.Timing(lease_duration=10, renew_deadline=10, retry_period=2)
    with pytest.raises(ValueError, match=r"1\.2 x retryPeriod"):
        election.Timing(lease_duration=15, renew_deadline=2, retry_period=2)


def _scope(
    store: FakeLeases, clock: Clock, identity: str, namespaces: list[str] | None
) -> leadership.Leadership:
    return leadership.Leadership(
        store,
        identity=identity,
        namespaces=namespaces,
        lease_name="its-operator",
        lease_namespace="its-system",
        timing=TIMING,
        clock=clock,
    )


async def _round(*scopes: leadership.Leadership) -> None:
    for s in scopes:
        for ns, e in s.electors.items():
            await s._step(ns, e)
        s._publish()


async def test_a_cluster_wide_leader_leaves_a_namespace_to_its_namespaced_installation() -> None:
    store, clock = FakeLeases(), Clock()
    wide = _scope(store, clock, "wide", None)
    await _round(wide)
    assert wide.acts_on("x")
    assert wide.acts_on("y")
    narrow = _scope(store, clock, "narrow", ["x"])
    await _round(narrow)
    # The namespaced one holds x's Lease but waits: the cluster-wide leader may act there.
    assert not narrow.acts_on("x")
    await _round(wide)
    assert not wide.acts_on("x")
    assert wide.acts_on("y")
    for _ in range(int(TIMING.renew_deadline / TIMING.retry_period)):
        clock.now += TIMING.retry_period
        await _round(wide, narrow)
    assert narrow.acts_on("x")
    assert not wide.acts_on("x")
    assert wide.view.excluded == frozenset({"x"})


async def test_never_both_act_on_a_namespace_whatever_the_order() -> None:
    store, clock = FakeLeases(), Clock()
    narrow = _scope(store, clock, "narrow", ["x"])
    await _round(narrow)
    assert narrow.acts_on("x")  # no cluster-wide installation: at once
    wide = _scope(store, clock, "wide", None)
    for _ in range(20):
        await _round(wide, narrow)
        assert not (wide.acts_on("x") and narrow.acts_on("x"))
        clock.now += TIMING.retry_period
    assert narrow.acts_on("x")
    assert wide.acts_on("y")


async def test_a_cluster_wide_leader_that_cannot_list_stops_acting_at_the_renew_deadline() -> None:
    store, clock = FakeLeases(), Clock()
    wide = _scope(store, clock, "wide", None)
    await _round(wide)
    real = store.list_leases

    async def failing(label_selector: str) -> list[dict[str, Any]]:
        raise ConnectionError("list refused")

    store.list_leases = failing  # type: ignore[method-assign]
    clock.now += TIMING.renew_deadline - 0.5
    await _round(wide)  # renewed, but it could not see the namespaced installations
    assert wide.acts_on("x")
    clock.now += 1
    assert not wide.acts_on("x")
    store.list_leases = real  # type: ignore[method-assign]
    await _round(wide)
    assert wide.acts_on("x")


async def test_losing_the_lease_reports_the_change_so_reconciles_are_cancelled() -> None:
    store, clock = FakeLeases(), Clock()
    changes: list[tuple[bool, bool]] = []
    wide = leadership.Leadership(
        store,
        identity="wide",
        namespaces=None,
        lease_name="its-operator",
        lease_namespace="its-system",
        timing=TIMING,
        clock=clock,
        on_change=lambda old, new: changes.append((old.acting, new.acting)),
    )
    await _round(wide)
    store.down = True
    clock.now += TIMING.renew_deadline
    await _round(wide)
    assert changes == [(False, True), (True, False)]
    assert not wide.is_open


def _wide(store: FakeLeases, clock: Clock, identity: str, lease_ns: str) -> leadership.Leadership:
    return leadership.Leadership(
        store,
        identity=identity,
        namespaces=None,
        lease_name="its-operator",
        lease_namespace=lease_ns,
        timing=TIMING,
        clock=clock,
    )


async def test_two_cluster_wide_installations_with_their_own_leases_never_both_act() -> None:
    # Two overlays applied side by side, each with its own --lease-namespace: two cluster
    # Leases, both held. Only the first Lease in namespace/name order acts.
    store, clock = FakeLeases(), Clock()
    late = _wide(store, clock, "late", "z-system")
    await _round(late)
    assert late.acts_on("x")  # alone: at once
    early = _wide(store, clock, "early", "a-system")  # sorts first: it wins, but not yet
    for _ in range(20):
        await _round(early, late)
        assert not (early.acts_on("x") and late.acts_on("x"))
        clock.now += TIMING.retry_period
    assert early.acts_on("x")
    assert early.acts_on("y")
    assert not late.is_open
    assert metrics.RIVALS._value.get() == 1  # late's, published last
    # The winner's own fail-over (a new holder, a new acquireTime) does not flip it.
    await early.release()
    standby = _wide(store, clock, "early-standby", "a-system")
    await _round(standby)
    assert standby.electors["a-system"].leading
    for _ in range(20):
        await _round(standby, late)
        assert not (standby.acts_on("x") and late.acts_on("x"))
        clock.now += TIMING.retry_period
    assert standby.acts_on("x")
    assert not late.acts_on("x")


async def test_the_other_cluster_wide_installation_acts_once_the_first_is_gone() -> None:
    store, clock = FakeLeases(), Clock()
    early, late = _wide(store, clock, "early", "a-system"), _wide(store, clock, "late", "z")
    await _round(early, late)
    assert early.acts_on("x")
    assert not late.acts_on("x")
    store.objects.pop(("a-system", "its-operator-cluster"))  # uninstalled; it stopped
    early.electors["a-system"].abdicate()
    await _round(late)
    assert late.acts_on("x")


async def test_a_namespaced_installation_waits_for_a_cluster_wide_one_of_any_lease_namespace() -> (
    None
):
    store, clock = FakeLeases(), Clock()
    wide = _wide(store, clock, "wide", "elsewhere")
    await _round(wide)
    narrow = _scope(store, clock, "narrow", ["x"])  # its cluster Lease would be its-system's
    await _round(narrow)
    assert not narrow.acts_on("x")  # the cluster-wide one may still act on x
    for _ in range(int(TIMING.renew_deadline / TIMING.retry_period)):
        clock.now += TIMING.retry_period
        await _round(wide, narrow)
        assert not (wide.acts_on("x") and narrow.acts_on("x"))
    assert narrow.acts_on("x")
    assert not wide.acts_on("x")

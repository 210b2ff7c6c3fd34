"""Camera ownership through real Leases on the local API server: join, rebalance,
release, expiry after a crash and self-fencing after a stall. The protocol's clock is
stepped by the test (each pod has its own), the Leases are real API objects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from its_runtime.dataplane import coordinator, leases, membership

CAMERAS = [f"cam-{i}" for i in range(6)]
TIMING = membership.Timing(lease_duration_s=10.0, renew_period_s=2.0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def lease_api(k8s_api: Any) -> leases.KubernetesLeaseApi:
    return leases.KubernetesLeaseApi(k8s_api)


def pod(
    api: leases.KubernetesLeaseApi,
    ns: str,
    name: str,
    clock: Callable[[], float] = time.monotonic,
    *,
    pipeline: str = "ring-road",
    cameras: list[str] = CAMERAS,
    capacity: int = 10,
    timing: membership.Timing = TIMING,
) -> membership.Membership:
    """One pod's membership of a pipeline, on the given clock."""
    return membership.Membership(
        api,
        namespace=ns,
        pipeline=pipeline,
        pod=name,
        capacity=capacity,
        cameras=cameras,
        timing=timing,
        clock=clock,
    )


def run_round(
    pods: dict[str, membership.Membership], clock: Clock, step: float = 2.0
) -> dict[str, frozenset[str]]:
    """One renew period: every listed pod ticks; asserts no camera runs twice."""
    clock.t += step
    running = {name: m.tick().run for name, m in pods.items()}
    seen: dict[str, str] = {}
    for name, cams in running.items():
        for cam in cams:
            assert cam not in seen, f"{cam} runs on {seen[cam]} and {name}"
            seen[cam] = name
    return running


def settled_trio(
    api: leases.KubernetesLeaseApi, ns: str
) -> tuple[Clock, dict[str, membership.Membership], dict[str, frozenset[str]]]:
    """Three pods ticked past the hand-off wait: each runs its share."""
    clock = Clock()
    pods = {n: pod(api, ns, n, clock) for n in ("rt-a", "rt-b", "rt-c")}
    for _ in range(8):
        running = run_round(pods, clock)
    return clock, pods, running


def test_three_pods_share_six_cameras_and_no_camera_ever_runs_twice(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    _, _, running = settled_trio(lease_api, namespace)
    assert sorted(c for cams in running.values() for c in cams) == CAMERAS
    assert sorted(len(c) for c in running.values()) == [2, 2, 2]
    listed = lease_api.list(namespace, "ring-road")
    assert sorted(r.holder for r in listed) == ["rt-a", "rt-b", "rt-c"]


def test_a_released_pods_cameras_move_at_the_next_tick(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    clock, pods, running = settled_trio(lease_api, namespace)
    released = running["rt-c"]
    pods.pop("rt-c").leave()
    running = run_round(pods, clock)
    # Its cameras start at once: their holder provably stopped (it deleted its Lease).
    assert released <= running["rt-a"] | running["rt-b"]
    # A camera the new quotas move between the two live pods waits out the hand-off.
    for _ in range(int(TIMING.handoff_wait_s / TIMING.renew_period_s) + 1):
        running = run_round(pods, clock)
    assert sorted(c for cams in running.values() for c in cams) == CAMERAS


def test_a_crashed_pods_cameras_resume_after_the_lease_expires(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    clock, pods, running = settled_trio(lease_api, namespace)
    lost = running["rt-c"]
    crashed = pods.pop("rt-c")  # kill -9: it never ticks or leaves again
    crashed_at = clock.t
    resumed_at = None
    for _ in range(10):
        running = run_round(pods, clock)
        if resumed_at is None and lost <= running["rt-a"] | running["rt-b"]:
            resumed_at = clock.t
    assert resumed_at is not None
    gap = resumed_at - crashed_at
    assert TIMING.lease_duration_s <= gap <= TIMING.lease_duration_s + TIMING.renew_period_s
    assert crashed.fenced(clock.t)


def test_a_stalled_pod_fences_itself_before_others_take_over_and_rejoins_without_overlap(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    clock, pods, running = settled_trio(lease_api, namespace)
    lost = running["rt-c"]
    stalled = pods.pop("rt-c")  # SIGSTOP
    stop_at = clock.t
    fenced_at = None
    taken_at = None
    for _ in range(24):
        running = run_round(pods, clock, step=1.0)
        if fenced_at is None and stalled.fenced(clock.t):
            fenced_at = clock.t
        if taken_at is None and lost & (running["rt-a"] | running["rt-b"]):
            taken_at = clock.t
    assert fenced_at is not None
    assert taken_at is not None
    assert fenced_at < taken_at, (stop_at, fenced_at, taken_at)
    # SIGCONT: it ticks again, and runs nothing until the hand-off wait has passed,
    # while the others give its cameras back as soon as they see it.
    pods["rt-c"] = stalled
    for _ in range(8):
        running = run_round(pods, clock)
    assert sorted(len(c) for c in running.values()) == [2, 2, 2]


def test_lease_writes_do_not_grow_with_cameras(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    """One replace per pod per tick, for 6 or 600 cameras: count calls on the real API."""
    calls = {"create": 0, "replace": 0}

    class Counting(leases.KubernetesLeaseApi):
        def create(self, ns: str, body: dict[str, Any]) -> membership.LeaseRecord:
            calls["create"] += 1
            return super().create(ns, body)

        def replace(self, ns: str, name: str, body: dict[str, Any]) -> membership.LeaseRecord:
            calls["replace"] += 1
            return super().replace(ns, name, body)

    api = Counting(lease_api._client)
    clock = Clock()
    many = [f"cam-{i}" for i in range(600)]
    pods = {
        n: pod(api, namespace, n, clock, pipeline="corridor", cameras=many, capacity=1000)
        for n in ("rt-a", "rt-b", "rt-c")
    }
    for _ in range(5):
        clock.t += 2.0
        for m in pods.values():
            m.tick()
    assert calls == {"create": 3, "replace": 12}


async def test_a_resumed_pod_refuses_frames_between_its_first_renew_and_the_decision(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    """SIGCONT after the others took over: the resumed pod's first tick (a thread)
    renews, which lifts the fence, before the event loop applies the decision that
    drops the cameras. Frames checked in that gap must be refused: the fleet test saw
    30 ms of the resumed pod's detections between a survivor's (runs a, c, a, c, a)."""
    clock, pods, running = settled_trio(lease_api, namespace)
    stalled = pods["rt-c"]

    async def on_change(run: frozenset[str]) -> None:
        pass

    coord = coordinator.Coordinator(stalled, on_change)
    for m in ("rt-a", "rt-b"):
        pods[m].tick()
    await coord.tick_once()
    lost = running["rt-c"]
    assert lost
    assert all(coord.may_analyse(cam) for cam in lost)
    pods.pop("rt-c")  # SIGSTOP
    for _ in range(24):
        running = run_round(pods, clock, step=1.0)
    assert lost <= running["rt-a"] | running["rt-b"]
    assert not any(coord.may_analyse(cam) for cam in lost)  # fenced
    # SIGCONT: the tick's thread has finished, the loop has not yet applied it.
    decision = stalled.tick()
    assert not stalled.fenced()
    assert not decision.run & lost
    assert not any(coord.may_analyse(cam) for cam in lost)


async def test_coordinators_on_real_time_split_cameras_and_take_over_on_release(
    lease_api: leases.KubernetesLeaseApi, namespace: str
) -> None:
    """Two pods' coordinators on the event loop with real clocks and short timings:
    sampled every 50 ms, no camera ever runs on both; a release hands over at once."""
    timing = membership.Timing(lease_duration_s=4.0, renew_period_s=1.0)
    running: dict[str, frozenset[str]] = {"rt-a": frozenset(), "rt-b": frozenset()}

    def make(name: str) -> coordinator.Coordinator:
        async def on_change(run: frozenset[str]) -> None:
            running[name] = run

        return coordinator.Coordinator(pod(lease_api, namespace, name, timing=timing), on_change)

    a, b = make("rt-a"), make("rt-b")
    a.start()
    b.start()
    balanced_after = None
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < 12:
        assert not running["rt-a"] & running["rt-b"]
        if len(running["rt-a"]) == len(running["rt-b"]) == 3:
            balanced_after = loop.time() - t0
            break
        await asyncio.sleep(0.05)
    assert balanced_after is not None
    assert a.view().members == ("rt-a", "rt-b")
    await b.stop()
    assert running["rt-b"] == frozenset()
    t1 = loop.time()
    # Polling on purpose: the test samples what the pods run, it waits for no event.
    while len(running["rt-a"]) < len(CAMERAS) and loop.time() - t1 < 5:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    took = loop.time() - t1
    await a.stop()
    assert took <= timing.renew_period_s + 0.5
    assert [r.holder for r in lease_api.list(namespace, "ring-road")] == []

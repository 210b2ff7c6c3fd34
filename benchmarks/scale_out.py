"""Scale-out benchmark: camera ownership through membership Leases on the real API server.

What it measures (issue 10), with the production protocol code (``Membership`` and
``Coordinator`` on real time, real Lease calls against the local kube-apiserver) and
*fake lightweight cameras* (a camera "runs" when the coordinator hands it to the pod;
no decoding), so hundreds of cameras fit on this machine:

* **Ownership writes per second** with 3 replicas and 6, 60 and 300 cameras, counted
  at the Lease API (create, replace, delete): the protocol's claim is one write per
  replica per renew period, whatever the number of cameras.
* **Failover**: one of 3 replicas stops dead (no release, as after ``kill -9``);
  per moved camera, the gap from its last moment on the dead replica to its start on a
  survivor; p50 and max, and the frames that gap costs at 30 FPS.
* **Rebalance**: a fourth replica joins; time until every replica's view agrees and
  nothing is pending, and how many cameras moved against the minimum.
* **Duplicates**: sampled every 50 ms throughout, the number of moments at which a
  camera ran on two replicas (must be 0).
* **The real thing**: ``make demo`` runs two ``its-runtime`` replicas over RTSP and
  writes ``.demo/report.json``; when present, its counts-versus-ground-truth verdict
  and assignment are copied in (with their time), so one file holds both.

    python benchmarks/scale_out.py [--seconds 20]

Writes ``benchmarks/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import platform
import statistics
import time
import uuid
from typing import Any

from its_devenv import cluster as devcluster
from its_runtime.dataplane import assignment, coordinator, leases, membership

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale_out.json"
DEMO_REPORT = pathlib.Path(os.environ.get("ITS_DEMO_DIR", ROOT / ".demo")) / "report.json"
FPS = 30.0
TIMING = membership.Timing(lease_duration_s=10.0, renew_period_s=2.0)


class CountingApi:
    """The real Lease API, counting writes."""

    def __init__(self, inner: leases.KubernetesLeaseApi) -> None:
        self.inner = inner
        self.writes = 0

    def list(self, namespace: str, pipeline: str) -> list[membership.LeaseRecord]:
        return self.inner.list(namespace, pipeline)

    def create(self, namespace: str, body: dict[str, Any]) -> membership.LeaseRecord:
        self.writes += 1
        return self.inner.create(namespace, body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> membership.LeaseRecord:
        self.writes += 1
        return self.inner.replace(namespace, name, body)

    def delete(self, namespace: str, name: str, resource_version: str | None) -> None:
        self.writes += 1
        self.inner.delete(namespace, name, resource_version)


class FakePod:
    """A replica whose cameras are names: it records when each starts and stops."""

    def __init__(self, name: str, api: CountingApi, ns: str, pipeline: str, cams: list[str]):
        self.name = name
        self.running: set[str] = set()
        self.started: dict[str, float] = {}
        self.member = membership.Membership(
            api,
            namespace=ns,
            pipeline=pipeline,
            pod=name,
            capacity=1000,
            cameras=cams,
            timing=TIMING,
        )
        self.coord = coordinator.Coordinator(self.member, self.on_change)

    async def on_change(self, run: frozenset[str]) -> None:
        now = time.monotonic()
        for cam in run - self.running:
            self.started[cam] = now
        self.running = set(run)

    def crash(self) -> None:
        """Stop dead: no more ticks, no release (the Lease stays until it expires)."""
        if self.coord._task is not None:
            self.coord._task.cancel()
        self.running = set()


class Sampler:
    """Counts moments at which one camera runs on two pods."""

    def __init__(self, pods: list[FakePod]) -> None:
        self.pods = pods
        self.samples = 0
        self.duplicates = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            seen: set[str] = set()
            for p in self.pods:
                running = {c for c in p.running if p.coord.may_analyse(c)}
                if seen & running:
                    self.duplicates += 1
                seen |= running
            self.samples += 1
            await asyncio.sleep(0.05)


async def converge(pods: list[FakePod], n: int, limit_s: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + limit_s
    names = sorted(p.name for p in pods)
    while time.monotonic() < deadline:
        views = [p.coord.view() for p in pods]
        held = {c: p.name for p in pods for c in p.running}
        if (
            all(sorted(v.members) == names and not v.pending for v in views)
            and len(held) == n
            and sum(len(p.running) for p in pods) == n
        ):
            return held
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no convergence of {names} on {n} cameras")


async def scenario(api: CountingApi, ns: str, n: int, seconds: float) -> dict[str, Any]:
    pipeline = f"bench-{uuid.uuid4().hex[:6]}"
    cams = [f"cam-{i:04d}" for i in range(n)]
    pods = [FakePod(f"{pipeline}-{x}", api, ns, pipeline, cams) for x in "abc"]
    stop = asyncio.Event()
    sampler = Sampler(pods)
    sampling = asyncio.create_task(sampler.run(stop))
    for p in pods:
        p.coord.start()
    try:
        held = await converge(pods, n)
        # Steady state: writes per second.
        before, t0 = api.writes, time.monotonic()
        await asyncio.sleep(seconds)
        steady = (api.writes - before) / (time.monotonic() - t0)
        # Failover: pod a stops dead.
        victim, survivors = pods[0], pods[1:]
        lost = [c for c, h in held.items() if h == victim.name]
        crashed_at = time.monotonic()
        victim.crash()
        after = await converge(survivors, n)
        gaps = [
            p.started[c] - crashed_at for p in survivors for c in lost if after.get(c) == p.name
        ]
        extra_moves = [c for c in held if c not in lost and after[c] != held[c]]
        # Rebalance: a fourth pod joins.
        newcomer = FakePod(f"{pipeline}-d", api, ns, pipeline, cams)
        sampler.pods.append(newcomer)
        joined_at = time.monotonic()
        newcomer.coord.start()
        live = [*survivors, newcomer]
        final = await converge(live, n)
        rebalance_s = time.monotonic() - joined_at
        before_a = assignment.Assignment(holders=after, unassigned=())
        load = {p.name: list(final.values()).count(p.name) for p in live}
        moved = assignment.moved(before_a, assignment.Assignment(holders=final, unassigned=()))
        minimum = assignment.minimum_moves(before_a, load)
    finally:
        stop.set()
        await sampling
        for p in pods + ([newcomer] if "newcomer" in locals() else []):
            if p is not pods[0]:
                await p.coord.stop()
    return {
        "cameras": n,
        "replicas": 3,
        "ownership_writes_per_s": round(steady, 3),
        "writes_bound_per_s": 3 / TIMING.renew_period_s,
        "failover": {
            "moved_cameras": len(lost),
            "also_moved": len(extra_moves),
            "gap_s": {
                "p50": round(statistics.median(gaps), 2),
                "max": round(max(gaps), 2),
            },
            "frames_lost_per_handoff_at_30fps": round(statistics.median(gaps) * FPS),
        },
        "rebalance": {
            "seconds": round(rebalance_s, 2),
            "moved": len(moved),
            "minimum": minimum,
            "load": load,
        },
        "duplicate_samples": sampler.duplicates,
        "samples": sampler.samples,
    }


async def main_async(seconds: float) -> dict[str, Any]:
    c, _ = devcluster.up(quiet=True)
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(c.kubeconfig))  # type: ignore[no-untyped-call]
    ns = f"bench-scale-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    api = CountingApi(leases.KubernetesLeaseApi(api_client))
    try:
        runs = []
        for n in (6, 60, 300):
            print(f"{n} cameras ...", flush=True)
            r = await scenario(api, ns, n, seconds)
            print(json.dumps(r), flush=True)
            runs.append(r)
    finally:
        core.delete_namespace(ns)
        api_client.close()
    gaps = [r["failover"]["gap_s"] for r in runs]
    out: dict[str, Any] = {
        "benchmark": "scale_out",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "timing": {
            "lease_duration_s": TIMING.lease_duration_s,
            "renew_period_s": TIMING.renew_period_s,
            "fence_s": TIMING.fence_s,
            "handoff_wait_s": TIMING.handoff_wait_s,
        },
        "method": "in-process Membership+Coordinator per replica on real time against the "
        "local kube-apiserver; fake cameras (names); crash = ticks stop, no release",
        "failover_gap_s": {
            "p50": statistics.median(g["p50"] for g in gaps),
            "max": max(g["max"] for g in gaps),
        },
        "duplicate_crossings": sum(r["duplicate_samples"] for r in runs),
        "ownership_writes_per_s": {str(r["cameras"]): r["ownership_writes_per_s"] for r in runs},
        "runs": runs,
    }
    if DEMO_REPORT.exists():
        demo = json.loads(DEMO_REPORT.read_text())
        out["demo"] = demo
        out["counts_match_ground_truth"] = bool(demo.get("exact"))
    else:
        out["demo"] = None
        out["counts_match_ground_truth"] = None
        print(f"(no {DEMO_REPORT}: run `make demo` for the two-replica counts)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="steady-state window")
    args = ap.parse_args()
    out = asyncio.run(main_async(args.seconds))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("failover_gap_s", "ownership_writes_per_s")}))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Fault benchmark: the fault suite's scenarios at the issue's durations, with numbers.

Runs the same scenario functions as ``tests/faults/`` (``tests.faults.scenarios`` and
friends), each against servers it starts itself on free ports (never the shared
PostgreSQL/Redis), with the longer outages of issue 11: PostgreSQL down 30 s with a
runtime replica deleted half-way; Redis down 10 s under ``/counts`` traffic; the RTSP
server of a live camera restarted after 5 s away; ``/v1/detect`` offered 3x its
measured capacity for 30 s; and the data faults of ``tests/faults/test_data_faults.py``:
PostgreSQL down with the journal's volume full for 10 s (rows that cannot be journalled
must be counted, ``lost`` being those that are neither stored nor counted), one master
of a three-master Redis Cluster SIGKILLed for 10 s under ``/counts`` traffic, and 5 s
of corrupt H.264 from an RTSP camera; and the control-plane faults of
``tests/faults/test_control_plane_faults.py``, each on a private control plane (etcd,
kube-apiserver, controller manager, scheduler, kwok on free ports): the operator
SIGKILLed mid-reconcile of 50 pipelines, the leader of two replicas SIGKILLed, the API
server and etcd each down 30 s. Each scenario prints what was lost and
duplicated (both must be 0) and how long recovery took.

Writes ``benchmarks/results/faults.json``: ``machine`` (with load average, since the
numbers depend on what else runs) and ``scenarios``, a list of objects with ``name``,
``lost``, ``duplicated``, ``recovery_s`` and per-scenario ``details``.

Usage: ``python benchmarks/faults.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Awaitable, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the scenarios live with the tests that assert on them

from tests.faults import (  # noqa: E402
    control_plane,
    corrupt_rtsp,
    journal_disk_full,
    overload,
    redis_cluster_down,
    redis_down,
    rtsp_restart,
    scenarios,
)

RESULTS = REPO / "benchmarks" / "results" / "faults.json"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tests' short durations")
    args = parser.parse_args()
    load_start = os.getloadavg()
    runs: list[Callable[[], Awaitable[scenarios.Outcome]]] = [
        lambda: scenarios.postgres_down_with_pod_deletion(down_s=10 if args.quick else 30),
        lambda: redis_down.redis_down(down_s=5 if args.quick else 10),
        lambda: rtsp_restart.rtsp_restart(down_s=2 if args.quick else 5),
        lambda: overload.overload(seconds=8 if args.quick else 30),
        lambda: journal_disk_full.journal_disk_full(full_s=2 if args.quick else 10),
        lambda: redis_cluster_down.redis_cluster_node_down(down_s=4 if args.quick else 10),
        lambda: corrupt_rtsp.corrupt_rtsp(corrupt_s=2 if args.quick else 5),
        lambda: control_plane.operator_kill_mid_reconcile(pipelines=20 if args.quick else 50),
        lambda: control_plane.leader_kill_two_replicas(pipelines=20 if args.quick else 50),
        lambda: control_plane.apiserver_restart(
            down_s=10 if args.quick else 30, pipelines=10 if args.quick else 50
        ),
        lambda: control_plane.etcd_restart(
            down_s=10 if args.quick else 30, pipelines=10 if args.quick else 50
        ),
    ]
    outcomes = []
    for run in runs:
        started = time.monotonic()
        outcome = await run()
        print(outcome.line(), f"(scenario took {time.monotonic() - started:.1f}s)", flush=True)
        outcomes.append(outcome)
    results = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_start": [round(v, 2) for v in load_start],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
            "servers": "private PostgreSQL and Redis per scenario, loopback, free ports; "
            "a private control plane per control-plane scenario",
        },
        "quick": args.quick,
        "scenarios": [dataclasses.asdict(o) for o in outcomes],
    }
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    if any(o.lost or o.duplicated for o in outcomes):
        raise SystemExit("a fault lost or duplicated rows")


if __name__ == "__main__":
    asyncio.run(main())

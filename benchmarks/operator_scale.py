"""Operator scale benchmark: 200 AnalyticsPipelines created at once on the local cluster.

Measures what the issue asks for: time until every pipeline is Ready (p50/p99 per CR
and for all of them), the operator's API writes per CR (from the apiserver's audit
log, split by resource), its writes during 60 idle seconds, and its peak RSS (VmHWM).
The operator runs as a real process (``python -m its_operator.main``) serving one
fresh namespace; the pipelines request no GPU because the dev cluster has only eight
fake ones, and everything else (engine-cache PVC, probes, PDB, NetworkPolicy) is as
in production.

    python benchmarks/operator_scale.py [--count 200] [--idle 60]

Writes ``benchmarks/results/operator_scale.json`` (the operator's log goes to
``$TMPDIR/operator_scale.log``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import json
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from kubernetes import client, config, watch

from its_devenv import cluster as devcluster
from its_devenv import ports
from its_operator.api import crdgen, resource

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "operator_scale.json"
UA = "its-operator/"


def _spec(i: int) -> dict[str, Any]:
    return {
        "model": {"path": "/models/det.pt2"},
        "runtime": {
            "image": "registry.local/its-runtime:0.1.0",
            "resources": {"gpu": 0, "cpu": "50m", "memory": "64Mi"},
        },
        "engineCache": {"size": "1Gi", "retention": "Delete"},
        "cameras": [{"name": f"cam-{i}", "url": f"rtsp://cams.local/{i}", "fps": 10}],
    }


def _peak_rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wall(event: dict[str, Any]) -> float:
    ts = event["requestReceivedTimestamp"].replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(ts).timestamp()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def _audit_writes(
    path: pathlib.Path, since: int, namespace: str, ua: str = UA
) -> list[dict[str, Any]]:
    out = []
    with path.open("rb") as f:
        f.seek(since)
        for raw in f:
            try:
                e = json.loads(raw)
            except ValueError:
                continue
            if (
                e.get("stage") == "ResponseComplete"
                and e.get("verb") in ("create", "update", "patch", "delete")
                and str(e.get("userAgent", "")).startswith(ua)
                and (e.get("objectRef") or {}).get("namespace") == namespace
            ):
                out.append(e)
    return out


def _by_resource(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for e in events:
        ref = e["objectRef"]
        counts[ref["resource"] + ("/" + ref["subresource"] if ref.get("subresource") else "")] += 1
    return dict(sorted(counts.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    cl, _ = devcluster.up(quiet=True)
    cl.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(crdgen.CRD_DIR))
    cl.kubectl("wait", "--for=condition=Established", "crd/analyticspipelines.its.ai")
    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cl.kubeconfig)
    )
    api.configuration.connection_pool_maxsize = 32
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"bench-{int(time.time())}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    metrics_port = ports.free_port()
    log = pathlib.Path(tempfile.gettempdir()) / "operator_scale.log"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KUBECONFIG": str(cl.kubeconfig), "POD_NAME": "bench-operator"}
    with log.open("wb") as out:
        op = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "its_operator.main",
                "--namespace",
                ns,
                "--workers",
                str(args.workers),
                "--metrics-port",
                str(metrics_port),
                "--liveness-port",
                str(ports.free_port()),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    ready_at: dict[str, float] = {}
    created_at: dict[str, float] = {}
    stop = threading.Event()

    def watcher() -> None:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        while not stop.is_set():
            for ev in w.stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object,
                resource.GROUP,
                resource.VERSION,
                ns,
                resource.PLURAL,
                timeout_seconds=5,
            ):
                obj = ev["object"]
                name = obj["metadata"]["name"]
                st = obj.get("status") or {}
                conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
                if (
                    name not in ready_at
                    and conds.get("Ready") == "True"
                    and st.get("observedGeneration") == obj["metadata"]["generation"]
                ):
                    ready_at[name] = time.monotonic()
                if stop.is_set():
                    break

    try:
        time.sleep(4)  # operator start-up (imports, login, initial listing)
        mark = cl.audit_log.stat().st_size
        thread = threading.Thread(target=watcher, daemon=True)
        thread.start()
        time.sleep(1)

        def create(i: int) -> None:
            name = f"p{i:04d}"
            body = {
                "apiVersion": resource.API_VERSION,
                "kind": resource.KIND,
                "metadata": {"name": name},
                "spec": _spec(i),
            }
            created_at[name] = time.monotonic()
            custom.create_namespaced_custom_object(
                resource.GROUP, resource.VERSION, ns, resource.PLURAL, body
            )

        t0, wall0, cpu0 = time.monotonic(), time.time(), _cpu_s(op.pid)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(args.count)))
        created_s = time.monotonic() - t0
        deadline = t0 + args.timeout
        while len(ready_at) < args.count and time.monotonic() < deadline:
            time.sleep(0.5)
        all_ready_s = max(ready_at.values()) - t0 if len(ready_at) == args.count else None
        per_cr = [ready_at[n] - created_at[n] for n in ready_at]
        cpu_to_ready = _cpu_s(op.pid) - cpu0

        time.sleep(10)  # let throttled cosmetic status updates land before counting
        creation_writes = _audit_writes(cl.audit_log, mark, ns)
        child_writes = [e for e in creation_writes if e["objectRef"].get("subresource") is None]
        children_done_s = max(_wall(e) for e in child_writes) - wall0 if child_writes else None
        idle_mark = cl.audit_log.stat().st_size
        rss_before_idle = _peak_rss_mb(op.pid)
        time.sleep(args.idle)
        idle_writes = _audit_writes(cl.audit_log, idle_mark, ns)
        # kopf's own requests (peering keep-alives: leader election) carry its user agent.
        keepalives = _audit_writes(cl.audit_log, idle_mark, ns, ua="kopf/")
        peak_rss = _peak_rss_mb(op.pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
            reconciles = sum(
                float(line.rsplit(" ", 1)[1])
                for line in r.read().decode().splitlines()
                if line.startswith("its_operator_reconciles_total{")
            )
    finally:
        stop.set()
        op.send_signal(signal.SIGTERM)
        try:
            op.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.kill()
        core.delete_namespace(ns)

    non_peering = creation_writes  # kopf's keep-alives have their own user agent
    children = 9  # ConfigMap, PVC, Service, Deployment, PDB, NetworkPolicy, SA, Role, RoleBinding
    result = {
        "benchmark": "operator_scale",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "pipelines": args.count,
        "operator_workers": args.workers,
        "create_all_s": round(created_s, 2),
        "ready": len(ready_at),
        "all_ready_s": None if all_ready_s is None else round(all_ready_s, 2),
        "time_to_ready_s": {
            "p50": round(statistics.median(per_cr), 2) if per_cr else None,
            "p99": round(_percentile(per_cr, 0.99), 2) if per_cr else None,
            "max": round(max(per_cr), 2) if per_cr else None,
        },
        "all_children_applied_s": None if children_done_s is None else round(children_done_s, 2),
        "operator_cpu_s_until_all_ready": round(cpu_to_ready, 1),
        "writes_per_cr": round(len(non_peering) / args.count, 2),
        "writes_budget_per_cr": children + 2,
        "writes_by_resource": _by_resource(non_peering),
        "idle_window_s": args.idle,
        "idle_writes": len(idle_writes),
        "idle_peering_keepalives": len(keepalives),
        "operator_peak_rss_mb": round(peak_rss, 1),
        "operator_rss_mb_before_idle": round(rss_before_idle, 1),
        "reconciles_total": reconciles,
        "goals": {
            "all_ready_within_60s": all_ready_s is not None and all_ready_s <= 60,
            "writes_per_cr_within_budget": len(non_peering) / args.count <= children + 2,
            "zero_idle_writes": not idle_writes,
            "rss_under_250mb": peak_rss < 250,
        },
        "notes": "pipelines request 0 GPUs (the dev cluster has 8 fake GPUs); peering "
        "keep-alives are leader election, counted apart from reconcile writes",
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

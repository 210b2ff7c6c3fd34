"""``make demo``: the whole product on one machine, from a fresh checkout.

What it does, in order, saying each step as it goes:

1. the local control plane (built from Go modules the first time) and PostgreSQL and
   Redis on loopback;
2. the kustomize base (CRDs, RBAC, the operator Deployment) with ``kubectl apply -k``;
   kwok cannot run containers, so the operator Deployment is scaled to zero and the
   operator runs here as a process, with the manifest's command line and its
   ServiceAccount's token;
3. a generated traffic video served over RTSP (two lanes, known ground truth) and a
   detector exported with torch.export;
4. the ``basic`` sample pipeline, pointed at that camera, the local database and Redis;
   the operator reconciles it to Ready (kwok plays the pods);
5. two runtime replicas (the Deployment's pods) started here on the CPU from what the
   operator rendered: the ConfigMap's config file, the Deployment's env resolved from
   the Secret, each with its own pod name and the pipeline ServiceAccount's token; they
   share the cameras through membership Leases, one camera each;
6. a live summary (FPS, p99 latency, which replica holds which camera, counts per
   camera), then a report that compares each camera's counts in PostgreSQL (as stored
   by its holder) with the video's ground truth, and the commands to explore.

Everything keeps running afterwards; ``make demo-down`` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import yaml

from its_devenv import cluster as devcluster
from its_devenv import localrun, ports, procs, replicas, rtsp, services

REPO = localrun.REPO_ROOT
DEMO = pathlib.Path(os.environ.get("ITS_DEMO_DIR", REPO / ".demo"))
RUN = DEMO / "run"
NAMESPACE = "its-demo"
CAMERAS = ("north-approach", "south-approach")
INPUT_SHAPE = (3, 96, 160)
RUNTIME_PORT = int(os.environ.get("ITS_DEMO_PORT", "8080"))
VIDEO_SECONDS = 40.0
#: Runtime replicas played here (the Deployment's pods); replica i listens on
#: RUNTIME_PORT + i.
REPLICAS = 2
REPORT = DEMO / "report.json"


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def info(msg: str) -> None:
    print(f"    {msg}", flush=True)


def _http_json(path: str, timeout: float = 5, port: int = RUNTIME_PORT) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


# -- steps ------------------------------------------------------------------------------


def install_base(c: devcluster.Cluster) -> None:
    c.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests/base"))
    c.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/analyticspipelines.its.ai"
    )
    # kwok only plays pods; the real operator runs below as a local process.
    c.kubectl("scale", "deployment/its-operator", "-n", localrun.OPERATOR_NAMESPACE, "--replicas=0")


def start_operator(c: devcluster.Cluster) -> None:
    procs.stop("operator", run_dir=RUN)
    localrun.start_operator(c, RUN, name="operator", pod_name="its-operator-demo")
    args = " ".join(localrun.operator_container(c).get("args", []))
    info(f"its-operator {args}  (as system:serviceaccount:its-system:its-operator)")
    info(f"log: {RUN / 'operator.log'}")


def prepare_media() -> tuple[pathlib.Path, Any]:
    """The traffic video (cached) and the exported detector (cached)."""
    from its_runtime.kits import synth, synth_detector

    scene = synth.two_lane_scene(VIDEO_SECONDS)
    video = DEMO / "media" / f"two-lane-{int(VIDEO_SECONDS)}s.ts"
    if not video.exists():
        video.parent.mkdir(parents=True, exist_ok=True)
        synth.encode_h264(scene, video.with_suffix(".tmp.ts"))
        video.with_suffix(".tmp.ts").rename(video)
    model = DEMO / "models" / "detector.pt2"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        synth_detector.export_synth_detector(model, INPUT_SHAPE, max_batch_size=8)
    return video, scene


def pipeline_doc(camera_url: str) -> dict[str, Any]:
    """The ``basic`` sample, pointed at the demo camera, model and local services."""
    docs = [
        d for d in yaml.safe_load_all((REPO / "manifests/samples/basic/pipeline.yaml").read_text())
    ]
    doc: dict[str, Any] = docs[0]
    spec = doc["spec"]
    spec["model"].update(
        {
            "inputShape": list(INPUT_SHAPE),
            "outputFormat": "yolo",
            "precision": "fp32",
            "classNames": ["background", "car", "truck"],
            "scoreThreshold": 0.5,
        }
    )
    mid = {"name": "mid", "start": [0.5, 1.0], "end": [0.5, 0.0]}
    right = {"name": "right-half", "polygon": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}
    spec["cameras"] = [
        {"name": name, "url": camera_url, "fps": 30, "lines": [mid], "regions": [right]}
        for name in CAMERAS
    ]
    spec["cache"] = {"redisUrl": services.Services(services.state_dir()).redis_url}
    # Two replicas (played here by two processes) share one engine cache and one
    # journal volume (ReadWriteMany), as a multi-replica pipeline does in a cluster.
    spec["runtime"]["replicas"] = REPLICAS
    spec["engineCache"] = {"size": "2Gi", "accessMode": "ReadWriteMany", "retention": "Delete"}
    spec["journal"] = {"enabled": True, "size": "1Gi"}
    return doc


def apply_pipeline(c: devcluster.Cluster, doc: dict[str, Any], dsn: str) -> str:
    sample = REPO / "manifests/samples/basic"
    # The namespace and the models PVC from the sample, as they are.
    for file in ("namespace.yaml", "models-pvc.yaml"):
        text = (sample / file).read_text()
        c.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=text)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "its-db", "namespace": NAMESPACE},
        "stringData": {"dsn": dsn},
    }
    c.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(secret))
    name: str = doc["metadata"]["name"]
    old = c.kubectl("get", "ap", name, "-n", NAMESPACE, "-o", "json", check=False)
    if old.returncode == 0:
        mode = json.loads(old.stdout)["spec"].get("engineCache", {}).get("accessMode")
        if mode != doc["spec"]["engineCache"]["accessMode"]:
            # An earlier demo's pipeline: its cache volume's access mode is immutable.
            info(f"replacing the earlier demo's pipeline (engine cache {mode})")
            c.kubectl("delete", "ap", name, "-n", NAMESPACE, "--wait=true", timeout=120)
    c.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(doc))
    return name


def wait_ready(c: devcluster.Cluster, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj: dict[str, Any] = json.loads(
            c.kubectl("get", "ap", name, "-n", NAMESPACE, "-o", "json").stdout
        )
        conds = {x["type"]: x for x in obj.get("status", {}).get("conditions", [])}
        ok = (
            conds.get("Ready", {}).get("status") == "True"
            and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        )
        return obj if ok else None

    result: dict[str, Any] = procs.eventually(f"AnalyticsPipeline {name} Ready", ready, timeout=120)
    return result


def runtime_from_cluster(
    c: devcluster.Cluster, name: str
) -> tuple[str, dict[str, str], pathlib.Path]:
    """The runtime pods' config and env, as the operator rendered them, mapped to here,
    and a kubeconfig holding the token of the pods' ServiceAccount."""
    from its_runtime import config as rc

    dep = localrun.deployment(c, NAMESPACE, name)
    pod_spec = dep["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    config_map = next(v["configMap"]["name"] for v in volumes.values() if "configMap" in v)
    text = localrun.configmap_data(c, NAMESPACE, config_map)[rc.CONFIGMAP_KEY]
    cfg = rc.RuntimeConfig.from_yaml(text)
    if not cfg.scale_out.enabled:
        raise SystemExit(
            "the rendered runtime config has scaleOut disabled: replicas would double-count"
        )
    local = DEMO / "pod"
    mapped = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(
                update={"path": str(DEMO / "models" / pathlib.Path(cfg.model.path).name)}
            ),
            # One engine cache and one journal root shared by the replicas (the shared
            # volumes); each replica journals into its own directory under the root.
            "engine_cache": cfg.engine_cache.model_copy(update={"dir": str(local / "engines")}),
            "database": cfg.database.model_copy(update={"journal_dir": str(local / "journal")}),
        }
    )
    env = localrun.pod_env(c, NAMESPACE, container, deployment_name=name)
    for key in ("POD_NAME", "POD_NAMESPACE"):
        env.pop(key, None)  # each replica gets its own (replicas.start)
    account = pod_spec.get("serviceAccountName", "default")
    kubeconfig = localrun.service_account_kubeconfig(
        c, RUN / "runtime.kubeconfig", namespace=NAMESPACE, name=account
    )
    config_text = rc.RuntimeConfig.model_validate(mapped.model_dump()).to_yaml()
    return config_text, env, kubeconfig


def replica_names(name: str) -> list[str]:
    return [f"{name}-replica-{i}" for i in range(REPLICAS)]


def start_runtimes(
    name: str, config_text: str, env: dict[str, str], kubeconfig: pathlib.Path
) -> list[replicas.Replica]:
    for old in ("runtime", *replica_names(name)):
        procs.stop(old, run_dir=RUN)
    started = []
    for i, pod in enumerate(replica_names(name)):
        port = RUNTIME_PORT + i
        if ports.port_open(port):
            raise SystemExit(f"port {port} is busy; set ITS_DEMO_PORT to a free port and rerun")
        started.append(
            replicas.start(
                pod,
                config_text,
                port=port,
                run_dir=RUN,
                namespace=NAMESPACE,
                kubeconfig=kubeconfig,
                env=env,
            )
        )
    return started


def assignment_line(pods: list[replicas.Replica]) -> str:
    try:
        held = replicas.holders(pods)
    except AssertionError as exc:
        return f"OVERLAP: {exc}"
    return ", ".join(f"{cam}@{held.get(cam, 'nobody')}" for cam in CAMERAS)


def live_summary(seconds: float, pods: list[replicas.Replica]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(5)
        try:
            perfs = [_http_json("/v1/performance", port=r.port) for r in pods]
            fps = sum(p["throughput"]["fps"] for p in perfs)
            p99 = max((p["latency_ms"]["p99"] or 0) for p in perfs)
            parts = [f"fps {fps:.1f}", f"p99 {p99:.1f} ms", assignment_line(pods)]
            for cam in CAMERAS:
                crossed = sum(x["count"] for x in _counts(cam)["totals"]["crossings"])
                parts.append(f"{cam} {crossed} crossings")
            info(" | ".join(parts))
        except (OSError, ValueError, KeyError) as exc:
            info(f"(waiting for the runtime: {exc})")


def _counts(camera: str) -> dict[str, Any]:
    out: dict[str, Any] = _http_json(f"/v1/cameras/{camera}/counts?interval=60")
    return out


async def _plays(
    dsn: str, since: datetime.datetime
) -> dict[tuple[str, str], list[dict[tuple[str, str], int]]]:
    """(camera, replica) -> the crossings of each play that replica saw, in order.

    The camera replays the file on every connection; stream time (``media_time``)
    going back marks a new play, so a play can be compared with the truth. A camera
    that moved between replicas (while the two joined) has plays on both.
    """
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT camera, replica, media_time, direction, class_name FROM traffic_events "
            "WHERE kind = 'crossing' AND ts >= $1 ORDER BY camera, replica, ts",
            since,
        )
    finally:
        await conn.close()
    out: dict[tuple[str, str], list[dict[tuple[str, str], int]]] = {}
    last: dict[tuple[str, str], float] = {}
    for r in rows:
        key, t = (r["camera"], r["replica"]), float(r["media_time"] or 0.0)
        if key not in out or t < last[key] - 1.0:
            out.setdefault(key, []).append({})
        last[key] = t
        play = out[key][-1]
        k = (r["direction"], r["class_name"])
        play[k] = play.get(k, 0) + 1
    return out


def report(scene: Any, dsn: str, since: datetime.datetime, pods: list[replicas.Replica]) -> bool:
    """Print the report, write it to ``.demo/report.json``; return whether every
    camera's first play by its holder matched the truth."""
    from its_runtime.config import CountingLine, Point

    say("Report")
    perfs = {r.name: _http_json("/v1/performance", port=r.port) for r in pods}
    ready = _http_json("/ready")
    for pod, perf in perfs.items():
        lat = perf["latency_ms"]
        info(
            f"{pod}: frames in the {perf['window_s']:.0f}s window: {perf['frames']}, "
            f"{perf['throughput']['fps']:.1f} fps; latency p50 {lat['p50'] or 0:.1f} ms, "
            f"p95 {lat['p95'] or 0:.1f} ms, p99 {lat['p99'] or 0:.1f} ms; "
            f"share under the SLO: {perf['sla']['compliance']}"
        )
    info(
        f"backend: {ready.get('backend', '?')} "
        f"(fallbacks: {[f['backend'] for f in ready.get('fallbacks', [])]}, "
        f"engine cache: {ready.get('engine_cache')})"
    )
    line = CountingLine(name="mid", start=Point(x=0.5, y=1.0), end=Point(x=0.5, y=0.0))
    truth: dict[tuple[str, str], int] = {}
    for crossing in scene.crossings(line):
        key = (crossing.direction, crossing.class_name)
        truth[key] = truth.get(key, 0) + 1

    def fmt(counts: dict[tuple[str, str], int]) -> str:
        return ", ".join(f"{d} {c} {n}" for (d, c), n in sorted(counts.items())) or "none"

    held = replicas.holders(pods)
    plays = asyncio.run(_plays(dsn, since))
    info(f"ground truth of one play ({VIDEO_SECONDS:.0f}s video): {fmt(truth)}")
    info(f"assignment: {assignment_line(pods)}")
    ok = True
    cameras: dict[str, Any] = {}
    for cam in CAMERAS:
        holder = held.get(cam)
        mine = plays.get((cam, holder or ""), [])
        first = mine[0] if mine else {}
        verdict = "exact" if first == truth else "DIFFERENT"
        ok = ok and first == truth
        info(f"{cam}, held by {holder}, its first play, in PostgreSQL: {fmt(first)}  -> {verdict}")
        others = {r: len(v) for (c, r), v in plays.items() if c == cam and r != holder}
        if others:
            info(f"    before it moved there: plays begun on {others} (cut short by the move)")
        cameras[cam] = {
            "holder": holder,
            "first_play": {f"{d} {c}": n for (d, c), n in first.items()},
            "plays_begun": len(mine),
            "moved_from": sorted(others),
            "exact": first == truth,
        }
    REPORT.write_text(
        json.dumps(
            {
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "replicas": [r.name for r in pods],
                "truth": {f"{d} {c}": n for (d, c), n in truth.items()},
                "cameras": cameras,
                "exact": ok,
                "fps": {k: v["throughput"]["fps"] for k, v in perfs.items()},
                "p99_ms": {k: v["latency_ms"]["p99"] for k, v in perfs.items()},
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    info(f"written to {REPORT}")
    return ok


def explore(c: devcluster.Cluster) -> None:
    say("Explore")
    print(
        f"""    export KUBECONFIG={c.kubeconfig}
    export PATH={c.bin_dir}:$PATH
    kubectl get ap -n {NAMESPACE}                   # Ready, Reason, Replicas, Cameras, Cache
    kubectl describe ap main-street -n {NAMESPACE}  # conditions and events
    kubectl get deploy,svc,cm,pvc,hpa,pdb,networkpolicy -n {NAMESPACE}
    curl -s localhost:{RUNTIME_PORT}/v1/ownership | python3 -m json.tool   # who holds what
    curl -s localhost:{RUNTIME_PORT}/ready | python3 -m json.tool
    curl -s localhost:{RUNTIME_PORT}/v1/performance | python3 -m json.tool
    curl -s 'localhost:{RUNTIME_PORT}/v1/cameras/{CAMERAS[0]}/counts?interval=60'
    curl -s localhost:{RUNTIME_PORT}/v1/cameras/{CAMERAS[0]}/latest
    curl -s localhost:{RUNTIME_PORT}/metrics | grep ^its_frame_latency
    logs: {RUN}/operator.log, {RUN}/*-replica-*.log
    make demo-down      # stops the operator, runtime, camera, cluster and services"""
    )


def up(live_seconds: float) -> int:
    t0 = time.monotonic()
    say("Local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok GPU nodes)")
    c, _ = devcluster.up()
    info(
        c.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product")
        .stdout.strip()
        .replace("\n", "\n    ")
    )

    say("PostgreSQL and Redis on loopback")
    svc, _ = services.up(quiet=True)
    info(f"{svc.postgres_dsn}   {svc.redis_url}")

    say("CRDs, RBAC and the operator (kubectl apply -k manifests/base)")
    install_base(c)
    start_operator(c)

    say("A camera: generated traffic video over RTSP, and an exported detector")
    video, scene = prepare_media()
    procs.stop("rtsp", run_dir=RUN)
    camera_url = rtsp.start_detached(video, RUN)
    info(f"{camera_url}  ({video.name}, ground truth known)")

    say("The basic sample pipeline, pointed at that camera")
    doc = pipeline_doc(camera_url)
    name = apply_pipeline(c, doc, svc.postgres_dsn)
    wait_ready(c, name)
    info(c.kubectl("get", "ap", "-n", NAMESPACE).stdout.strip().replace("\n", "\n    "))

    say(f"{REPLICAS} runtime replicas (the Deployment's pods), here on the CPU")
    config_text, env, kubeconfig = runtime_from_cluster(c, name)
    info(
        "config from the ConfigMap; env from the Deployment: "
        + ", ".join(f"{k}=<{'secret' if 'DSN' in k else 'value'}>" for k in sorted(env))
        + "; each replica its own POD_NAME and the ServiceAccount's token"
    )
    # The report counts this run's events only (the database keeps earlier runs').
    since = datetime.datetime.now(datetime.UTC)
    pods = start_runtimes(name, config_text, env, kubeconfig)
    procs.eventually(
        "the runtime replicas to be ready (engine load + warm-up)",
        lambda: all(r.ready() for r in pods),
        timeout=300,
        interval=1,
    )
    info(f"ready after {time.monotonic() - t0:.0f}s of demo")
    procs.eventually(
        "each camera to be held by one replica",
        lambda: len(replicas.holders(pods)) == len(CAMERAS),
        timeout=60,
        interval=1,
    )
    info(f"assignment: {assignment_line(pods)}")
    time.sleep(6)  # the operator reads the Leases every 5 s for status.cameras
    info(c.kubectl("get", "ap", "-n", NAMESPACE).stdout.strip().replace("\n", "\n    "))

    say(f"Live ({live_seconds:.0f}s): frames per second, latency, holders, crossings per camera")
    live_summary(live_seconds, pods)
    exact = report(scene, env.get("ITS_DATABASE_DSN", svc.postgres_dsn), since, pods)
    explore(c)
    info(f"demo took {time.monotonic() - t0:.0f}s")
    return 0 if exact else 1


def down() -> int:
    for pid_file in sorted(RUN.glob("*-replica-*.pid")):
        procs.stop(pid_file.stem, run_dir=RUN)
    for name in ("runtime", "operator", "rtsp"):
        procs.stop(name, run_dir=RUN)
    services.down()
    devcluster.down()
    print("demo stopped (data kept in .demo/, .devcluster/ and .services/)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="its-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("action", nargs="?", default="up", choices=["up", "down"])
    ap.add_argument(
        "--live-seconds",
        type=float,
        default=VIDEO_SECONDS + 20,
        help="how long to show live numbers (at least one play of the video)",
    )
    args = ap.parse_args(argv)
    try:
        return up(args.live_seconds) if args.action == "up" else down()
    except (TimeoutError, urllib.error.URLError) as exc:
        print(f"\ndemo failed: {exc}\nlogs are in {RUN}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

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
5. the runtime pod's program started here on the CPU from what the operator rendered:
   the ConfigMap's config file, the Deployment's env resolved from the Secret;
6. a live summary (FPS, p99 latency, counts per camera), then a report that compares
   the counts in PostgreSQL with the video's ground truth, and the commands to explore.

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
from its_devenv import localrun, ports, procs, rtsp, services

REPO = localrun.REPO_ROOT
DEMO = pathlib.Path(os.environ.get("ITS_DEMO_DIR", REPO / ".demo"))
RUN = DEMO / "run"
NAMESPACE = "its-demo"
CAMERAS = ("north-approach", "south-approach")
INPUT_SHAPE = (3, 96, 160)
RUNTIME_PORT = int(os.environ.get("ITS_DEMO_PORT", "8080"))
VIDEO_SECONDS = 40.0


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def info(msg: str) -> None:
    print(f"    {msg}", flush=True)


def _http_json(path: str, timeout: float = 5) -> Any:
    url = f"http://127.0.0.1:{RUNTIME_PORT}{path}"
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
    spec["engineCache"] = {"size": "2Gi", "accessMode": "ReadWriteOnce", "retention": "Delete"}
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
    c.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(doc))
    name: str = doc["metadata"]["name"]
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


def runtime_from_cluster(c: devcluster.Cluster, name: str) -> tuple[pathlib.Path, dict[str, str]]:
    """The runtime pod's config and env, as the operator rendered them, mapped to here."""
    from its_runtime import config as rc

    dep = localrun.deployment(c, NAMESPACE, name)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
    config_map = next(v["configMap"]["name"] for v in volumes.values() if "configMap" in v)
    text = localrun.configmap_data(c, NAMESPACE, config_map)[rc.CONFIGMAP_KEY]
    cfg = rc.RuntimeConfig.from_yaml(text)
    local = DEMO / "pod"
    mapped = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(
                update={"path": str(DEMO / "models" / pathlib.Path(cfg.model.path).name)}
            ),
            "engine_cache": cfg.engine_cache.model_copy(update={"dir": str(local / "engines")}),
            "database": cfg.database.model_copy(update={"journal_dir": str(local / "journal")}),
            "server": cfg.server.model_copy(update={"host": "127.0.0.1", "port": RUNTIME_PORT}),
        }
    )
    path = local / "runtime.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rc.RuntimeConfig.model_validate(mapped.model_dump()).to_yaml())
    env = localrun.pod_env(c, NAMESPACE, container)
    return path, env


def start_runtime(config_path: pathlib.Path, env: dict[str, str]) -> None:
    procs.stop("runtime", run_dir=RUN)
    if ports.port_open(RUNTIME_PORT):
        raise SystemExit(f"port {RUNTIME_PORT} is busy; set ITS_DEMO_PORT to a free port and rerun")
    procs.start("runtime", localrun.runtime_argv(config_path), run_dir=RUN, env=env)


def live_summary(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(5)
        try:
            perf = _http_json("/v1/performance")
            lat = perf["latency_ms"]
            parts = [
                f"fps {perf['throughput']['fps']:.1f}",
                f"p50 {lat['p50'] or 0:.1f} ms",
                f"p99 {lat['p99'] or 0:.1f} ms",
            ]
            for cam in CAMERAS:
                crossed = sum(x["count"] for x in _counts(cam)["totals"]["crossings"])
                parts.append(f"{cam} {crossed} crossings")
            info(" | ".join(parts))
        except (OSError, ValueError, KeyError) as exc:
            info(f"(waiting for the runtime: {exc})")


def _counts(camera: str) -> dict[str, Any]:
    out: dict[str, Any] = _http_json(f"/v1/cameras/{camera}/counts?interval=60")
    return out


async def _first_play_crossings(
    dsn: str, since: datetime.datetime
) -> tuple[dict[str, dict[tuple[str, str], int]], int]:
    """Crossings per camera in the first play of the video, and how many plays began.

    The camera replays the file on every connection; stream time (``media_time``)
    going back marks a new play, so the first play can be compared with the truth.
    """
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT camera, media_time, direction, class_name FROM traffic_events "
            "WHERE kind = 'crossing' AND ts >= $1 ORDER BY camera, ts",
            since,
        )
    finally:
        await conn.close()
    out: dict[str, dict[tuple[str, str], int]] = {}
    plays: dict[str, int] = {}
    last: dict[str, float] = {}
    for r in rows:
        cam, t = r["camera"], float(r["media_time"] or 0.0)
        if cam in last and t < last[cam] - 1.0:
            plays[cam] = plays.get(cam, 0) + 1
        last[cam] = t
        if plays.get(cam, 0) == 0:
            key = (r["direction"], r["class_name"])
            out.setdefault(cam, {})[key] = out.setdefault(cam, {}).get(key, 0) + 1
    return out, 1 + max(plays.values(), default=0)


def report(scene: Any, dsn: str, since: datetime.datetime) -> bool:
    """Print the report; return whether every camera's first play matched the truth."""
    from its_runtime.config import CountingLine, Point

    say("Report")
    perf = _http_json("/v1/performance")
    ready = _http_json("/ready")
    lat = perf["latency_ms"]
    info(
        f"backend: {ready.get('backend', '?')} "
        f"(fallbacks: {[f['backend'] for f in ready.get('fallbacks', [])]}, "
        f"engine cache: {ready.get('engine_cache')}); "
        f"frames in the {perf['window_s']:.0f}s window: {perf['frames']}, "
        f"{perf['throughput']['fps']:.1f} fps; latency p50 {lat['p50'] or 0:.1f} ms, "
        f"p95 {lat['p95'] or 0:.1f} ms, p99 {lat['p99'] or 0:.1f} ms; "
        f"share under the SLO: {perf['sla']['compliance']}"
    )
    line = CountingLine(name="mid", start=Point(x=0.5, y=1.0), end=Point(x=0.5, y=0.0))
    truth: dict[tuple[str, str], int] = {}
    for crossing in scene.crossings(line):
        key = (crossing.direction, crossing.class_name)
        truth[key] = truth.get(key, 0) + 1

    def fmt(counts: dict[tuple[str, str], int]) -> str:
        return ", ".join(f"{d} {c} {n}" for (d, c), n in sorted(counts.items())) or "none"

    found, plays = asyncio.run(_first_play_crossings(dsn, since))
    info(f"ground truth of one play ({VIDEO_SECONDS:.0f}s video): {fmt(truth)}")
    ok = True
    for cam in CAMERAS:
        mine = found.get(cam, {})
        verdict = "exact" if mine == truth else "DIFFERENT"
        ok = ok and mine == truth
        info(f"{cam}, first play, in PostgreSQL: {fmt(mine)}  -> {verdict}")
    info(f"plays begun so far: {plays} (the camera replays the file on each connection)")
    return ok


def explore(c: devcluster.Cluster) -> None:
    say("Explore")
    print(
        f"""    export KUBECONFIG={c.kubeconfig}
    export PATH={c.bin_dir}:$PATH
    kubectl get ap -n {NAMESPACE}                   # columns: Ready, Reason, Replicas, Cache
    kubectl describe ap main-street -n {NAMESPACE}  # conditions and events
    kubectl get deploy,svc,cm,pvc,hpa,pdb,networkpolicy -n {NAMESPACE}
    curl -s localhost:{RUNTIME_PORT}/ready | python3 -m json.tool
    curl -s localhost:{RUNTIME_PORT}/v1/performance | python3 -m json.tool
    curl -s 'localhost:{RUNTIME_PORT}/v1/cameras/{CAMERAS[0]}/counts?interval=60'
    curl -s localhost:{RUNTIME_PORT}/v1/cameras/{CAMERAS[0]}/latest
    curl -s localhost:{RUNTIME_PORT}/metrics | grep ^its_frame_latency
    logs: {RUN}/operator.log, {RUN}/runtime.log
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

    say("The runtime pod's program, here on the CPU, from what the operator rendered")
    config_path, env = runtime_from_cluster(c, name)
    info(
        f"config from ConfigMap -> {config_path}; env from the Deployment: "
        + ", ".join(f"{k}=<{'secret' if 'DSN' in k else 'value'}>" for k in sorted(env))
    )
    # The report counts this run's events only (the database keeps earlier runs').
    since = datetime.datetime.now(datetime.UTC)
    start_runtime(config_path, env)
    procs.eventually(
        "the runtime to be ready (engine load + warm-up)",
        lambda: _http_json("/ready").get("ready"),
        timeout=300,
        interval=1,
    )
    info(f"ready after {time.monotonic() - t0:.0f}s of demo")

    say(f"Live ({live_seconds:.0f}s): frames per second, latency, crossings per camera")
    live_summary(live_seconds)
    exact = report(scene, env.get("ITS_DATABASE_DSN", svc.postgres_dsn), since)
    explore(c)
    info(f"demo took {time.monotonic() - t0:.0f}s")
    return 0 if exact else 1


def down() -> int:
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
        default=VIDEO_SECONDS + 8,
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

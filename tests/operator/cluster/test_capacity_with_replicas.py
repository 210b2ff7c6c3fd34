"""Capacity, end to end: the operator renders a 12-camera pipeline with room for 4
cameras per replica, and real ``its-runtime`` processes (the Deployment's pods, each
with its own pod name and the pipeline ServiceAccount's token) share what fits.

With 2 replicas, 4 cameras fit nowhere: ``kubectl get ap`` shows ``8/12`` and
Ready=False ``InsufficientCapacity``, and the replicas themselves report the same 4
unassigned cameras. With autoscaling the HPA's floor becomes 3; a third replica joins
and all 12 are assigned.
"""

from __future__ import annotations

import json
import pathlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from its_devenv import localrun, ports, replicas
from its_runtime import config as rc
from its_runtime.kits import synth_detector

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

INPUT_SHAPE = (3, 96, 160)


@pytest.fixture
def model(tmp_path: pathlib.Path) -> pathlib.Path:
    return synth_detector.export_synth_detector(tmp_path / "synth.pt2", INPUT_SHAPE, 8)


@pytest.fixture
def pods() -> Iterator[list[replicas.Replica]]:
    started: list[replicas.Replica] = []
    yield started
    for r in started:
        r.signal(signal.SIGKILL)


def rendered(kube: Any, name: str, model: pathlib.Path, tmp: pathlib.Path) -> tuple[str, str]:
    """The runtime config the operator rendered (in-pod paths mapped to here) and the
    pods' ServiceAccount."""
    dep = kube.get("deployment", name)
    pod_spec = dep["spec"]["template"]["spec"]
    cm_name = next(v["configMap"]["name"] for v in pod_spec["volumes"] if "configMap" in v)
    text = localrun.configmap_data(kube.cluster, kube.ns, cm_name)[rc.CONFIGMAP_KEY]
    cfg = rc.RuntimeConfig.from_yaml(text)
    mapped = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"path": str(model)}),
            "engine_cache": cfg.engine_cache.model_copy(update={"dir": str(tmp / "engines")}),
            "database": cfg.database.model_copy(update={"journal_dir": str(tmp / "journal")}),
        }
    )
    out = rc.RuntimeConfig.model_validate(mapped.model_dump()).to_yaml()
    return out, str(pod_spec["serviceAccountName"])


def test_twelve_cameras_four_per_replica(
    kube: Any,
    operator: Any,
    spec_of: Callable[..., dict[str, Any]],
    pipeline: Callable[[str, dict[str, Any]], dict[str, Any]],
    wait_until: Any,
    model: pathlib.Path,
    pods: list[replicas.Replica],
    tmp_path: pathlib.Path,
) -> None:
    operator("--lease-poll-seconds", "1")
    closed = ports.free_port()  # cameras that do not stream: ownership does not care
    cams = [{"name": f"cam-{i:02d}", "url": f"rtsp://127.0.0.1:{closed}/{i}"} for i in range(12)]
    spec = spec_of(
        model={
            "path": "/models/synth.pt2",
            "inputShape": list(INPUT_SHAPE),
            "outputFormat": "yolo",
            "precision": "fp32",
            "backend": "eager",
            "classNames": list(synth_detector.CLASS_NAMES),
        },
        cameras=cams,
        runtime={"replicas": 2, "maxCamerasPerReplica": 4},
        engineCache={"accessMode": "ReadWriteMany"},
    )
    kube.apply(pipeline("corr", spec))
    wait_until(lambda: kube.get("deployment", "corr"), 30, what="the Deployment")
    config_text, account = rendered(kube, "corr", model, tmp_path)
    kubeconfig = localrun.service_account_kubeconfig(
        kube.cluster, tmp_path / "runtime.kubeconfig", namespace=kube.ns, name=account
    )

    def start(pod: str) -> replicas.Replica:
        r = replicas.start(
            pod,
            config_text,
            port=ports.free_port(),
            run_dir=tmp_path / "run",
            namespace=kube.ns,
            kubeconfig=kubeconfig,
        )
        pods.append(r)
        return r

    def logs() -> str:
        return "\n".join(f"--- {r.name}\n{r.log_tail(1500)}" for r in pods)

    def held(n: int) -> dict[str, str] | None:
        try:
            h = replicas.holders(pods)
        except AssertionError:
            raise
        views = [r.ownership() for r in pods]
        if any(v is None or v["pending"] or len(v["members"]) != len(pods) for v in views):
            return None
        return h if len(h) == n else None

    start("corr-7c9f-a")
    start("corr-7c9f-b")
    try:
        two = wait_until(lambda: held(8), 120, interval=0.5, what="8 cameras held")
    except Exception:
        pytest.fail(logs())
    assert sorted(list(two.values()).count(r.name) for r in pods) == [4, 4]
    view = pods[0].ownership()
    assert view is not None
    unassigned = sorted(view["unassigned"])
    assert len(unassigned) == 4
    assert not set(unassigned) & set(two)

    def table() -> list[str]:
        lines: list[str] = kube.cluster.kubectl(
            "get", "ap", "corr", "-n", kube.ns
        ).stdout.splitlines()
        return lines

    row = wait_until(
        lambda: (t := table()) and t[1].split()[4] == "8/12" and t[1].split(), 20, what="8/12"
    )
    assert row[1:3] == ["False", "InsufficientCapacity"], row
    ready = kube.condition("corr", "Ready")
    assert "need 3 replicas" in ready["message"], ready
    status = kube.get("analyticspipeline", "corr")["status"]["cameras"]
    assert sorted(status["unassignedNames"]) == unassigned
    print(f"\n{' '.join(table()[0].split())}\n{' '.join(row)}\n{ready['message']}")

    # Autoscaling instead of a fixed count: the operator raises the HPA's floor to 3.
    auto = json.loads(json.dumps(spec))
    del auto["runtime"]["replicas"]
    auto["autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 2,
        "targets": {"cpuUtilizationPercent": 60},
    }
    kube.apply(pipeline("corr", auto))  # the same apply as before: replicas is removed
    hpa = wait_until(
        lambda: (
            (h := kube.get("horizontalpodautoscaler", "corr"))
            and h["spec"]["minReplicas"] == 3
            and h
        ),
        30,
        what="the HPA floor",
    )
    assert hpa["spec"]["maxReplicas"] >= 3
    start("corr-7c9f-c")  # the pod the HPA's floor adds
    three = wait_until(lambda: held(12), 120, interval=0.5, what="12 cameras held")
    assert sorted(list(three.values()).count(r.name) for r in pods) == [4, 4, 4]
    wait_until(lambda: (t := table()) and t[1].split()[4] == "12/12", 20, what="12/12")
    wait_until(lambda: kube.ready("corr"), 60, what="Ready")
    print(" ".join(table()[1].split()))

"""Scale-out against the real control plane: the runtime's least-privilege identity,
status.cameras following the membership Leases (with failover and rebalance Events),
and the replica floor with and without the HorizontalPodAutoscaler.

Runtime pods are kwok's, so they run nothing: the Leases a runtime replica would keep
are written here, as ``its_runtime.dataplane.membership`` writes them.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
from collections.abc import Callable
from typing import Any, cast

import pytest

from its_devenv import localrun
from its_runtime.dataplane import membership

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]


def _cameras(n: int) -> list[dict[str, Any]]:
    return [{"name": f"cam-{i:02d}", "url": f"rtsp://cams.local/{i:02d}"} for i in range(n)]


def _can(cluster: Any, sa: str, verb: str, resource: str, namespace: str) -> bool:
    proc = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={sa}", check=False
    )
    answer = str(proc.stdout).strip()
    assert answer in ("yes", "no"), proc.stdout + proc.stderr
    return answer == "yes"


def _renew(k8s_api: Any, ns: str, pipeline: str, pod: str, capacity: int) -> None:
    """Create or renew a membership Lease the way a runtime replica does."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CoordinationV1Api(k8s_api)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": f"{pipeline}-{pod}",
            "labels": {membership.PIPELINE_LABEL: pipeline},
            "annotations": {membership.CAPACITY_ANNOTATION: str(capacity)},
        },
        "spec": {
            "holderIdentity": pod,
            "leaseDurationSeconds": 4,
            "renewTime": now.replace("+00:00", "Z"),
        },
    }
    try:
        api.create_namespaced_lease(ns, cast(Any, body))
    except ApiException as exc:
        if exc.status != 409:
            raise
        patch = {"metadata": {"annotations": body["metadata"]["annotations"]}, "spec": body["spec"]}
        api.patch_namespaced_lease(f"{pipeline}-{pod}", ns, patch)


def _events(kube: Any, reason: str) -> list[dict[str, Any]]:
    out = kube.cluster.kubectl(
        "get", "events", "-n", kube.ns, "--field-selector", f"reason={reason}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_the_runtime_account_holds_its_leases_and_nothing_else(
    cluster: Any,
    kube: Any,
    operator: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    tmp_path: pathlib.Path,
) -> None:
    operator()
    kube.apply(pipeline("demo", spec_of()))
    uid = wait_until(lambda: (kube.get("analyticspipeline", "demo") or {}).get("metadata"), 5)[
        "uid"
    ]
    for kind in ("serviceaccount", "role", "rolebinding"):
        child = wait_until(lambda k=kind: kube.get(k, "demo-runtime"), 15, what=kind)
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["uid"], ref["controller"]) == (uid, True), kind
    wait_until(lambda: kube.items("pods", "app.kubernetes.io/instance=demo"), 30, what="a pod")
    (pod,) = kube.items("pods", "app.kubernetes.io/instance=demo")
    assert pod["spec"]["serviceAccountName"] == "demo-runtime"

    sa = f"system:serviceaccount:{kube.ns}:demo-runtime"
    for verb in ("get", "list", "watch", "create", "update", "delete"):
        assert _can(cluster, sa, verb, "leases.coordination.k8s.io", kube.ns), verb
    assert not _can(cluster, sa, "update", "leases.coordination.k8s.io", "default")
    assert not _can(cluster, sa, "create", "leases.coordination.k8s.io", "kube-system")
    assert not _can(cluster, sa, "get", "secrets", kube.ns)
    assert not _can(cluster, sa, "list", "pods", kube.ns)
    assert not _can(cluster, sa, "update", "configmaps", kube.ns)
    assert not _can(cluster, sa, "patch", "analyticspipelines.its.ai", kube.ns)

    # With the account's own token (as a runtime pod's), a Lease can really be written.
    cfg = localrun.service_account_kubeconfig(
        cluster, tmp_path / "runtime.kubeconfig", namespace=kube.ns, name="demo-runtime"
    )
    as_runtime = [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cfg), "-n", kube.ns]
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "demo-pod-0", "labels": {membership.PIPELINE_LABEL: "demo"}},
        "spec": {"holderIdentity": "pod-0", "leaseDurationSeconds": 10},
    }
    made = subprocess.run(
        [*as_runtime, "create", "-f", "-"], input=json.dumps(lease), capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    secret = subprocess.run(
        [*as_runtime, "get", "secrets"], capture_output=True, text=True, check=False
    )
    assert "Forbidden" in secret.stderr, secret.stderr

    # A named account is bound, not created: the operator's own is pruned.
    spec = spec_of(
        runtime={"image": "registry.local/its-runtime:0.1.0", "serviceAccountName": "byo"}
    )
    kube.apply(pipeline("demo", spec))
    wait_until(lambda: kube.get("serviceaccount", "demo-runtime") is None, 15, what="SA pruned")
    binding = wait_until(
        lambda: (
            (b := kube.get("rolebinding", "demo-runtime")) and b["subjects"][0]["name"] == "byo"
        ),
        15,
        what="binding moved to the named account",
    )
    assert binding
    assert _can(cluster, f"system:serviceaccount:{kube.ns}:byo", "update", "leases", kube.ns)


def test_status_cameras_follow_the_leases_with_failover_and_rebalance_events(
    cluster: Any,
    kube: Any,
    operator: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    k8s_api: Any,
) -> None:
    operator("--lease-poll-seconds", "1")
    spec = spec_of(
        cameras=_cameras(12),
        runtime={
            "image": "registry.local/its-runtime:0.1.0",
            "replicas": 2,
            "maxCamerasPerReplica": 4,
        },
        engineCache={"accessMode": "ReadWriteMany"},
    )
    kube.apply(pipeline("corr", spec))
    ready = wait_until(
        lambda: (
            (c := kube.condition("corr", "Ready")).get("reason") == "InsufficientCapacity" and c
        ),
        30,
        what="Ready=False InsufficientCapacity",
    )
    assert ready["status"] == "False"
    assert "need 3 replicas" in ready["message"]
    assert "4 cameras stay unassigned" in ready["message"]

    def cameras() -> dict[str, Any]:
        out: dict[str, Any] = (kube.get("analyticspipeline", "corr") or {}).get("status", {}).get(
            "cameras"
        ) or {}
        return out

    for pod in ("corr-a", "corr-b"):
        _renew(k8s_api, kube.ns, "corr", pod, 4)
    got = wait_until(lambda: (c := cameras()).get("summary") == "8/12" and c, 15, what="8/12")
    assert (got["assigned"], got["unassigned"], got["replicasNeeded"]) == (8, 4, 3)
    assert len(got["unassignedNames"]) == 4
    assert sorted(got["holders"].values()) == ["corr-a"] * 4 + ["corr-b"] * 4
    table = cluster.kubectl("get", "ap", "corr", "-n", kube.ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "REASON", "REPLICAS", "CAMERAS", "CACHE", "AGE"]
    assert table[1].split()[4] == "8/12"

    # corr-b stops renewing (a kill -9): its Lease expires, its cameras move.
    b_held = sorted(c for c, h in got["holders"].items() if h == "corr-b")

    def a_alone() -> bool:
        _renew(k8s_api, kube.ns, "corr", "corr-a", 8)  # and corr-a takes more
        return [m["name"] for m in cameras().get("members", [])] == ["corr-a"]

    wait_until(a_alone, 20, interval=1.0, what="corr-b expired")
    (failover,) = wait_until(lambda: _events(kube, "CameraFailover"), 10, what="failover Event")
    assert failover["type"] == "Warning"
    assert "corr-b stopped renewing its Lease" in failover["message"]
    for cam in b_held:  # to corr-a, or unassigned where corr-a has no room left
        assert f"{cam} -> " in failover["message"]
    assert "-> corr-a" in failover["message"]

    def a_took_more() -> bool:
        _renew(k8s_api, kube.ns, "corr", "corr-a", 8)
        return cameras().get("summary") == "8/12"

    wait_until(a_took_more, 10, interval=1.0, what="corr-a holds 8")

    # A new replica joins: a rebalance, and all 12 fit.
    def joined() -> bool:
        for pod, cap in (("corr-a", 8), ("corr-c", 4)):
            _renew(k8s_api, kube.ns, "corr", pod, cap)
        return cameras().get("summary") == "12/12"

    wait_until(joined, 20, interval=1.0, what="12/12")
    # (The first members, corr-a and corr-b, were an assignment, not a rebalance.)
    (rebalanced,) = wait_until(lambda: _events(kube, "CamerasRebalanced"), 10, what="Event")
    assert "joined: corr-c" in rebalanced["message"]


def test_autoscaling_raises_the_hpa_floor_instead_of_failing(
    kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    spec = spec_of(
        cameras=_cameras(12),
        runtime={"image": "registry.local/its-runtime:0.1.0", "maxCamerasPerReplica": 4},
        engineCache={"accessMode": "ReadWriteMany"},
        autoscaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 2,
            "targets": {"cpuUtilizationPercent": 60},
        },
    )
    kube.apply(pipeline("auto", spec))
    hpa = wait_until(lambda: kube.get("horizontalpodautoscaler", "auto"), 15, what="HPA")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)
    # The HPA (not the operator) brings the Deployment up to its floor.
    wait_until(
        lambda: (kube.get("deployment", "auto") or {}).get("spec", {}).get("replicas") == 3,
        30,
        what="the HPA scales to 3",
    )
    wait_until(lambda: kube.ready("auto"), 30, what="Ready")
    assert kube.condition("auto", "Ready")["reason"] != "InsufficientCapacity"


def test_replicas_share_one_journal_claim(
    kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    spec = spec_of(
        runtime={"image": "registry.local/its-runtime:0.1.0", "replicas": 2},
        engineCache={"accessMode": "ReadWriteMany"},
        journal={"enabled": True},
    )
    kube.apply(pipeline("spool", spec))
    wait_until(lambda: kube.ready("spool"), 30, what="Ready")
    claim = kube.get("persistentvolumeclaim", "spool-journal")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = kube.items("pods", "app.kubernetes.io/instance=spool")
    assert len(pods) == 2
    for pod in pods:
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["journal"]["persistentVolumeClaim"]["claimName"] == "spool-journal"

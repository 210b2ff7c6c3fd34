"""The local control plane behaves like a real cluster: nodes, scheduling, garbage
collection and admission are done by the real Kubernetes components."""

from __future__ import annotations

import json
from typing import Any

import pytest

from its_devenv import cluster as devcluster
from its_devenv import procs

pytestmark = pytest.mark.cluster


def _deployment(name: str, gpus: int, replicas: int = 2) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "infer",
                                "image": "example.invalid/infer:1",
                                "resources": {
                                    "limits": {"nvidia.com/gpu": str(gpus)},
                                    "requests": {"cpu": "100m", "memory": "128Mi"},
                                },
                            }
                        ]
                    },
                },
            },
        }
    )


def _pods(cluster: devcluster.Cluster, ns: str, app: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", f"app={app}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_kubectl_shows_fake_gpu_nodes_ready_with_gpus(cluster: devcluster.Cluster) -> None:
    table = cluster.kubectl("get", "nodes").stdout
    for node in devcluster.GPU_NODES:
        line = next(ln for ln in table.splitlines() if ln.startswith(node))
        assert " Ready " in line, table
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    gpu_nodes = [n for n in nodes if "nvidia.com/gpu.product" in n["metadata"]["labels"]]
    assert len(gpu_nodes) >= 2
    for n in gpu_nodes:
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == str(devcluster.GPUS_PER_NODE)


def test_gpu_pods_run_on_gpu_nodes_and_oversized_requests_stay_pending(
    cluster: devcluster.Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_deployment("fits", gpus=1))
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=_deployment("too-big", gpus=devcluster.GPUS_PER_NODE + 1, replicas=1),
    )

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = _pods(cluster, namespace, "fits")
        ok = [
            p
            for p in pods
            if p["status"].get("phase") == "Running"
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return ok if len(ok) == 2 else None

    pods = procs.eventually("2 Ready GPU pods", ready_pods)
    assert {p["spec"]["nodeName"] for p in pods} <= set(devcluster.GPU_NODES)
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/fits", "--timeout=60s")

    def failed_scheduling() -> str | None:
        ev = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "reason=FailedScheduling",
            "-o",
            "json",
        ).stdout
        msgs = [e["message"] for e in json.loads(ev)["items"]]
        return next((m for m in msgs if "nvidia.com/gpu" in m), None)

    message = procs.eventually("a FailedScheduling event", failed_scheduling)
    assert "Insufficient nvidia.com/gpu" in message
    big = _pods(cluster, namespace, "too-big")
    assert len(big) == 1
    assert big[0]["status"]["phase"] == "Pending"


def test_deleting_an_owner_garbage_collects_what_it_owns(
    cluster: devcluster.Cluster, namespace: str
) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    uid = cluster.kubectl(
        "get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"x": "y"},
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(owned))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    procs.eventually(
        "the owned ConfigMap to be collected",
        lambda: (
            cluster.kubectl("get", "configmap", "owned", "-n", namespace, check=False).returncode
            != 0
        ),
        timeout=60,
    )


def test_restricted_namespace_rejects_privileged_pods(
    cluster: devcluster.Cluster, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "example.invalid/x:1",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    proc = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    assert "privileged" in proc.stderr

"""Acceptance 2, 4-8: the operator process against the real control plane and kwok GPUs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from its_operator.builders import meta

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]
CHILDREN = [
    ("configmap", "{n}-config"),
    ("persistentvolumeclaim", "{n}-engine-cache"),
    ("service", "{n}"),
    ("serviceaccount", "{n}-runtime"),
    ("role", "{n}-runtime"),
    ("rolebinding", "{n}-runtime"),
    ("deployment", "{n}"),
    ("poddisruptionbudget", "{n}"),
    ("networkpolicy", "{n}"),
]


def _selector(name: str) -> str:
    return f"{meta.LABEL_INSTANCE}={name},{meta.LABEL_NAME}={meta.APP_NAME}"


def test_sample_yields_owned_children_and_becomes_ready(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    t0 = time.monotonic()
    kube.apply(pipeline("demo", spec_of(engineCache={"retention": "Delete"})))
    uid = wait_until(lambda: (kube.get("analyticspipeline", "demo") or {}).get("metadata"), 5)[
        "uid"
    ]

    def all_children() -> list[dict[str, Any]] | None:
        found = [kube.get(kind, name.format(n="demo")) for kind, name in CHILDREN]
        return found if all(found) else None

    found = wait_until(all_children, 10, what="every child")
    assert time.monotonic() - t0 < 10
    for child in found:
        labels = child["metadata"]["labels"]
        assert labels[meta.LABEL_MANAGED_BY] == "its-operator", child["kind"]
        assert labels[meta.LABEL_INSTANCE] == "demo"
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["uid"], ref["controller"]) == (uid, True), child["kind"]

    wait_until(lambda: kube.ready("demo"), 30, what="Ready=True at the current generation")
    pods = kube.items("pods", _selector("demo"))
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"].startswith("gpu-node-")
    ap = kube.get("analyticspipeline", "demo")
    assert ap["status"]["observedGeneration"] == ap["metadata"]["generation"]
    assert ap["status"]["engineCache"]["phase"] == "Bound"
    assert ap["status"]["endpoint"] == f"http://demo.{kube.ns}.svc:8080"
    assert ap["status"]["monitoring"] == {"serviceMonitor": "CRDNotInstalled"}

    header = ["NAME", "READY", "REASON", "REPLICAS", "CAMERAS", "CACHE", "AGE"]
    row = ["demo", "True", "Available", "1/1", "0/1", "Bound"]  # kwok pods hold no Lease
    table = wait_until(
        lambda: (
            (t := cluster.kubectl("get", "ap", "-n", kube.ns).stdout.splitlines())
            and t[1].split()[:6] == row
            and t
        ),
        10,
        what="the table row",
    )
    assert table[0].split() == header


def test_spec_change_rolls_pods_while_old_pods_serve(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    spec = spec_of(
        runtime={"image": "registry.local/its-runtime:0.1.0", "replicas": 2},
        engineCache={"accessMode": "ReadWriteMany"},
        rollout={"maxSurge": 0, "maxUnavailable": 1},
    )
    kube.apply(pipeline("roll", spec))
    wait_until(lambda: kube.ready("roll"), 30, what="first rollout")
    before = kube.get("deployment", "roll")["spec"]["template"]["metadata"]["annotations"]
    old_pods = {p["metadata"]["name"] for p in kube.items("pods", _selector("roll"))}

    watch = subprocess.Popen(
        [
            str(cluster.bin_dir / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "get",
            "ap",
            "roll",
            "-n",
            kube.ns,
            "-w",
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration} "
            '{.status.conditions[?(@.type=="Ready")].status} '
            '{.status.conditions[?(@.type=="Progressing")].status}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        spec["model"]["scoreThreshold"] = 0.55
        kube.apply(pipeline("roll", spec))
        wait_until(
            lambda: (
                kube.ready("roll")
                and kube.condition("roll", "Progressing").get("status") == "False"
                and kube.get("analyticspipeline", "roll")["status"]["observedGeneration"] == 2
            ),
            60,
            what="second rollout",
        )
        time.sleep(1)
    finally:
        watch.terminate()
        lines, _ = watch.communicate(timeout=10)
    seen = [line.split() for line in lines.splitlines() if line.strip()]
    after = kube.get("deployment", "roll")["spec"]["template"]["metadata"]["annotations"]
    assert after[meta.CONFIG_HASH] != before[meta.CONFIG_HASH]
    new_pods = {p["metadata"]["name"] for p in kube.items("pods", _selector("roll"))}
    assert len(new_pods) == 2
    assert not (new_pods & old_pods)
    gen2 = [s for s in seen if s[:2] == ["2", "2"]]
    assert ["2", "2", "True", "True"] in gen2, seen  # progressing, still ready
    assert all(s[2] == "True" for s in seen if len(s) >= 3), seen  # never unready
    assert gen2[-1] == ["2", "2", "True", "False"]


def test_deleted_or_edited_children_are_repaired_and_hpa_replicas_left_alone(
    cluster: Any,
    kube: Any,
    operator: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    audit: Any,
) -> None:
    operator()
    kube.apply(pipeline("drift", spec_of()))
    kube.apply(
        pipeline(
            "scaled",
            spec_of(
                engineCache={"accessMode": "ReadWriteMany"},
                autoscaling={
                    "enabled": True,
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "targets": {"cpuUtilizationPercent": 60},
                },
            ),
        )
    )
    wait_until(lambda: kube.ready("drift") and kube.ready("scaled"), 30, what="both ready")

    old_uid = kube.get("configmap", "drift-config")["metadata"]["uid"]
    cluster.kubectl("delete", "configmap", "drift-config", "-n", kube.ns)
    t0 = time.monotonic()
    wait_until(
        lambda: (
            (kube.get("configmap", "drift-config") or {}).get("metadata", {}).get("uid")
            not in (None, old_uid)
        ),
        10,
        interval=0.1,
        what="ConfigMap re-created",
    )
    assert time.monotonic() - t0 < 10

    cluster.kubectl("set", "image", "deployment/drift", "runtime=evil/image:latest", "-n", kube.ns)
    wait_until(
        lambda: (
            kube.get("deployment", "drift")["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.local/its-runtime:0.1.0"
        ),
        10,
        interval=0.1,
        what="image restored",
    )
    cluster.kubectl("delete", "service", "drift", "-n", kube.ns)
    wait_until(lambda: kube.get("service", "drift"), 10, interval=0.1, what="Service re-created")

    # The HPA owns replicas: a scale by anyone else (here, as the HPA would) stays.
    wait_until(lambda: kube.get("horizontalpodautoscaler", "scaled"), 10, what="HPA")
    mark = audit.mark()
    cluster.kubectl("scale", "deployment/scaled", "--replicas=3", "-n", kube.ns)
    wait_until(lambda: len(kube.items("pods", _selector("scaled"))) == 3, 20, what="3 pods")
    time.sleep(3)
    assert kube.get("deployment", "scaled")["spec"]["replicas"] == 3
    deployment_writes = [
        e
        for e in audit.writes(mark, kube.ns)
        if e["objectRef"]["resource"] == "deployments" and e["objectRef"]["name"] == "scaled"
    ]
    assert deployment_writes == []
    wait_until(
        lambda: kube.get("analyticspipeline", "scaled")["status"]["replicasSummary"] == "3/3",
        15,
        what="status follows the HPA's count",
    )


def test_missing_secret_is_reported_and_heals_when_created(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    kube.apply(
        pipeline(
            "needs-db", spec_of(database={"dsnSecretRef": {"name": "db-credentials", "key": "dsn"}})
        )
    )
    ready = wait_until(
        lambda: (
            kube.condition("needs-db", "Ready").get("reason") == "SecretNotFound"
            and kube.condition("needs-db", "Ready")
        ),
        15,
        what="SecretNotFound",
    )
    assert ready["status"] == "False"
    assert "db-credentials" in ready["message"]
    env = kube.get("deployment", "needs-db")["spec"]["template"]["spec"]["containers"][0]["env"]
    dsn = next(e for e in env if e["name"] == "ITS_DATABASE_DSN")
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "db-credentials", "key": "dsn"}
    generation = kube.get("analyticspipeline", "needs-db")["metadata"]["generation"]

    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "db-credentials",
        "-n",
        kube.ns,
        "--from-literal=dsn=postgresql://its@db/its",
    )
    wait_until(lambda: kube.ready("needs-db"), 20, what="Ready after the Secret appears")
    assert kube.get("analyticspipeline", "needs-db")["metadata"]["generation"] == generation
    events = kube.items("events")
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "needs-db"}
    assert {"SecretNotFound", "Recovered"} <= reasons


def test_too_many_gpus_ends_degraded_with_the_schedulers_reason(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    kube.apply(
        pipeline(
            "greedy",
            spec_of(
                runtime={"image": "registry.local/its-runtime:0.1.0", "resources": {"gpu": 8}},
                rollout={"progressDeadlineSeconds": 10},
            ),
        )
    )
    wait_until(
        lambda: kube.condition("greedy", "Ready").get("reason") == "Unschedulable",
        20,
        what="Ready=False with reason Unschedulable",
    )
    degraded = wait_until(
        lambda: (
            kube.condition("greedy", "Degraded").get("status") == "True"
            and kube.condition("greedy", "Degraded")
        ),
        60,
        what="Degraded after the progress deadline",
    )
    assert degraded["reason"] == "ProgressDeadlineExceeded"
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    row = cluster.kubectl("get", "ap", "greedy", "-n", kube.ns).stdout.splitlines()[1].split()
    assert row[1:3] == ["False", "ProgressDeadlineExceeded"]
    events = [
        e
        for e in kube.items("events")
        if e["involvedObject"].get("name") == "greedy" and e["type"] == "Warning"
    ]
    assert any(
        e["reason"] == "ProgressDeadlineExceeded" and "nvidia.com/gpu" in e["message"]
        for e in events
    ), events


def test_delete_collects_children_and_honours_cache_retention(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    operator()
    kube.apply(pipeline("keep", spec_of(engineCache={"retention": "Delete"})))
    kube.apply(pipeline("drop", spec_of(engineCache={"retention": "Delete"})))
    wait_until(lambda: kube.ready("keep") and kube.ready("drop"), 30, what="both ready")
    assert kube.get("pvc", "keep-engine-cache")["metadata"]["ownerReferences"]
    # Switching to Retain releases the claim from the pipeline before any deletion.
    kube.apply(pipeline("keep", spec_of(engineCache={"retention": "Retain"})))
    wait_until(
        lambda: not kube.get("pvc", "keep-engine-cache")["metadata"].get("ownerReferences"),
        10,
        what="ownerReference dropped",
    )
    cluster.kubectl("delete", "ap", "keep", "drop", "-n", kube.ns, "--wait=true")

    def gone(name: str) -> bool:
        return all(
            kube.get(kind, child.format(n=name)) is None
            for kind, child in CHILDREN
            if kind != "persistentvolumeclaim"
        ) and not kube.items("pods", _selector(name))

    wait_until(lambda: gone("keep") and gone("drop"), 60, what="children collected")
    wait_until(lambda: kube.get("pvc", "drop-engine-cache") is None, 30, what="Delete claim gone")
    kept = kube.get("pvc", "keep-engine-cache")
    assert kept is not None
    assert not kept["metadata"].get("ownerReferences")

    # A pipeline re-created with the same name adopts its retained engine cache.
    kube.apply(pipeline("keep", spec_of(engineCache={"retention": "Retain"})))
    wait_until(lambda: kube.ready("keep"), 30, what="re-created pipeline ready")
    assert kube.get("pvc", "keep-engine-cache")["metadata"]["uid"] == kept["metadata"]["uid"]

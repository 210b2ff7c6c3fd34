"""Acceptance 9 and 10: no writes when nothing changed; crashes and replicas are safe."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from its_operator.builders import meta

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]


def _cluster_wide_wait(kube: Any) -> float:
    """Seconds a namespaced operator waits before acting because a cluster-wide
    installation (``make demo``'s) holds its Lease: one renew deadline (8 s), so the
    cluster-wide one has let go of the namespace before the namespaced one writes."""
    out = kube.cluster.kubectl(
        "get", "leases", "-A", "-l", "its.ai/operator-lease=cluster", "-o", "name"
    ).stdout
    return 8.0 if out.strip() else 0.0


def _operator_writes(audit: Any, mark: int, namespace: str) -> list[str]:
    """The operator's reconcile writes (Lease renewals have their own user agent)."""
    return [
        f"{e['verb']} {e['objectRef']['resource']}/{e['objectRef'].get('name')}"
        for e in audit.writes(mark, namespace)
    ]


def test_full_resync_and_restart_make_zero_writes(
    kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any, audit: Any
) -> None:
    op = operator("--resync-seconds", "2")
    for name in ("idle-a", "idle-b"):
        kube.apply(
            pipeline(
                name,
                spec_of(
                    database={"dsnSecretRef": {"name": "db", "key": "dsn"}},
                    engineCache={"accessMode": "ReadWriteMany"},
                    autoscaling={
                        "enabled": True,
                        "targets": {"queueTimeMs": 12.5, "cpuUtilizationPercent": 70},
                    },
                    runtime={
                        "image": "registry.local/its-runtime:0.1.0",
                        "resources": {"cpu": "0.5", "memory": "1024Mi"},
                    },
                ),
            )
        )
    kube.cluster.kubectl(
        "create", "secret", "generic", "db", "-n", kube.ns, "--from-literal=dsn=postgresql://x"
    )
    wait_until(lambda: kube.ready("idle-a") and kube.ready("idle-b"), 30, what="ready")
    time.sleep(6)  # let the last cosmetic status update land

    mark = audit.mark()
    reconciles = op.metric("its_operator_reconciles_total")
    time.sleep(7)  # three periodic full resyncs
    assert op.metric("its_operator_reconciles_total") >= reconciles + 4
    assert _operator_writes(audit, mark, kube.ns) == []

    op.stop()
    mark = audit.mark()
    op2 = operator()
    wait_until(lambda: op2.metric("its_operator_reconciles_total") >= 2, 20, what="resync")
    time.sleep(3)
    assert _operator_writes(audit, mark, kube.ns) == []
    ap = kube.get("analyticspipeline", "idle-a")
    assert not any(k.startswith("kopf.") for k in ap["metadata"].get("annotations", {}))
    assert not ap["metadata"].get("finalizers")


def test_killed_mid_reconcile_converges_without_duplicates(
    kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    op = operator()
    # Beside a cluster-wide installation (make demo's) the namespaced one acts only once
    # the other has stood back; a pipeline created before that is the cluster-wide
    # one's to apply, and this operator would find nothing left to apply (and nothing
    # to be killed in the middle of).
    wait_until(
        lambda: op.metric("its_operator_active") == 1,
        10 + _cluster_wide_wait(kube),
        what="the operator acting",
    )
    kube.apply(pipeline("crash", spec_of(engineCache={"retention": "Delete"})))
    wait_until(lambda: "applying" in op.text(), 10, interval=0.02, what="first apply")
    op.kill()  # SIGKILL, somewhere among the child applies
    applied_before = op.text().count("applying ")
    op2 = operator()
    # op2 takes the Lease once op's expires (12 s), then waits as op did.
    wait_until(
        lambda: kube.ready("crash"), 30 + _cluster_wide_wait(kube), what="ready after restart"
    )
    selector = f"{meta.LABEL_INSTANCE}=crash"
    counts = Counter(
        item["kind"]
        for kind in (
            "configmaps",
            "services",
            "deployments",
            "replicasets",
            "pods",
            "persistentvolumeclaims",
            "poddisruptionbudgets",
            "networkpolicies",
            "serviceaccounts",
            "roles",
            "rolebindings",
        )
        for item in kube.items(kind, selector)
    )
    assert counts == Counter(
        {
            k: 1
            for k in (
                "ConfigMap",
                "Service",
                "Deployment",
                "ReplicaSet",
                "Pod",
                "PersistentVolumeClaim",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "ServiceAccount",
                "Role",
                "RoleBinding",
            )
        }
    ), (applied_before, counts)
    assert op2.alive()


def test_only_one_replica_acts_and_the_other_takes_over(
    kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any, audit: Any
) -> None:
    """Two replicas contend for the namespace's Lease: the first holds it, the other
    stands by and takes over once the Lease expires after a kill -9. A cluster-wide
    operator elsewhere (``make demo``'s) leaves this namespace to them: the namespaced
    installation wins its namespace, so only this test's identities write here."""
    first = operator()
    second = operator()  # finds the Lease held: stands by
    wait_until(
        lambda: (
            first.metric("its_operator_active") == 1 and second.metric("its_operator_active") == 0
        ),
        30,
        what="one acting replica",
    )
    assert first.metric("its_operator_leader") == 1
    assert second.metric("its_operator_leader") == 0

    mark = audit.mark()
    kube.apply(pipeline("ha", spec_of()))
    wait_until(lambda: kube.ready("ha"), 30, what="ready")
    writers = {e["userAgent"] for e in audit.writes(mark, kube.ns)}
    assert writers
    assert all(first.identity in ua for ua in writers), writers

    first.kill()
    t0 = time.monotonic()
    wait_until(lambda: second.metric("its_operator_active") == 1, 40, what="take-over")
    takeover = time.monotonic() - t0
    mark = audit.mark()
    kube.cluster.kubectl("delete", "configmap", "ha-config", "-n", kube.ns)
    wait_until(lambda: kube.get("configmap", "ha-config"), 20, what="repaired by the survivor")
    writers = {e["userAgent"] for e in audit.writes(mark, kube.ns)}
    assert writers
    assert all(second.identity in ua for ua in writers), writers
    # Our defaults (12 / 8 / 2): the Lease lasts 12 s from the standby's last sight of
    # a renew, plus a retry period or two; plus a renew deadline beside a cluster-wide
    # installation (the demo's), which must let go of the namespace first.
    assert takeover < 12 + 2 * 2 + 1 + _cluster_wide_wait(kube), takeover
    lease = kube.get("lease", "its-operator")
    assert lease["spec"]["holderIdentity"] == second.identity
    assert lease["spec"]["leaseTransitions"] == 1

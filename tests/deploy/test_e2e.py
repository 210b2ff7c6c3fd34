"""End to end with the real kubectl: the kustomize tree installs, the operator runs
with its own ServiceAccount (not cluster-admin) and the manifest's command line, a
sample reaches Ready, and every manifest passes server-side dry-run."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from its_devenv import cluster as devcluster
from its_devenv import localrun, procs
from its_devenv import third_party_crds as third_party_crds_mod
from tests.deploy import argocd

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MANIFESTS = localrun.REPO_ROOT / "manifests"
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))
MONITORING = MANIFESTS / "overlays" / "monitoring"


@pytest.fixture(scope="module")
def installed(cluster: devcluster.Cluster) -> devcluster.Cluster:
    out = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS / "base")
    )
    assert "deployment.apps/its-operator serverside-applied" in out.stdout
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/analyticspipelines.its.ai"
    )
    return cluster


@pytest.fixture
def operator_as_service_account(
    installed: devcluster.Cluster, tmp_path: pathlib.Path
) -> Iterator[pathlib.Path]:
    run_dir = tmp_path / "run"
    localrun.start_operator(installed, run_dir, name="operator", pod_name="e2e-operator")
    yield run_dir / "operator.log"
    procs.stop("operator", run_dir=run_dir)


def _sample_into(namespace: str, cluster: devcluster.Cluster) -> list[dict[str, Any]]:
    """manifests/samples/basic, moved into the test's namespace."""
    docs = [d for d in localrun.kustomize(MANIFESTS / "samples" / "basic", cluster)]
    out = []
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue
        doc["metadata"]["namespace"] = namespace
        out.append(doc)
    return out


def _pipeline(cluster: devcluster.Cluster, ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        cluster.kubectl("get", "analyticspipeline", name, "-n", ns, "-o", "json").stdout
    )
    return out


def _ready(obj: dict[str, Any]) -> bool:
    conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    return bool(
        obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        and conds.get("Ready", {}).get("status") == "True"
        and conds.get("Progressing", {}).get("status") == "False"
    )


def test_sample_reaches_ready_with_the_operator_running_as_its_service_account(
    installed: devcluster.Cluster,
    namespace: str,
    operator_as_service_account: pathlib.Path,
) -> None:
    c = installed
    c.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    docs = _sample_into(namespace, c)
    c.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    name = next(d["metadata"]["name"] for d in docs if d["kind"] == "AnalyticsPipeline")

    log = operator_as_service_account
    obj = procs.eventually(
        "the sample to be Ready",
        lambda: o if _ready(o := _pipeline(c, namespace, name)) else None,
        timeout=90,
    )
    assert "Forbidden" not in log.read_text(), log.read_text()[-3000:]

    # Flux (kstatus) and Argo CD read the live status right.
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert argocd.health(obj)[0] == "Healthy"

    table = c.kubectl("get", "ap", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "READY", "REASON", "REPLICAS", "CAMERAS", "CACHE", "AGE"], table
    row = table.splitlines()[1].split()
    assert row[0] == name
    assert row[1] == "True"

    # The runtime pods passed `restricted` PodSecurity admission and run (kwok).
    pods = json.loads(c.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert pods
    assert all(p["status"].get("phase") == "Running" for p in pods)
    failed = c.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate", "-o", "json"
    ).stdout
    assert json.loads(failed)["items"] == []


def test_the_operator_pods_pass_restricted_admission(installed: devcluster.Cluster) -> None:
    ns = json.loads(installed.kubectl("get", "namespace", "its-system", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    procs.eventually(
        "the operator Deployment's pods (played by kwok) to be admitted and ready",
        lambda: (
            json.loads(
                installed.kubectl(
                    "get", "deployment", "its-operator", "-n", "its-system", "-o", "json"
                ).stdout
            )["status"].get("readyReplicas")
            == 2
        ),
    )


def test_kubectl_explain_shows_the_schema_descriptions(installed: devcluster.Cluster) -> None:
    out = installed.kubectl("explain", "analyticspipeline.spec.model.batching").stdout
    assert "maxQueueDelayMs" in out
    assert "Longest time a request may wait" in out


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("get", "secrets", True),
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("create", "pods", False),
        ("delete", "namespaces", False),
        ("delete", "analyticspipelines.its.ai", False),
        ("patch", "analyticspipelines.its.ai/status", True),
        ("patch", "deployments.apps", True),
        ("create", "clusterroles.rbac.authorization.k8s.io", False),
        ("*", "*", False),
    ],
)
def test_the_service_account_can_do_what_it_needs_and_nothing_more(
    installed: devcluster.Cluster, verb: str, resource: str, allowed: bool
) -> None:
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    proc = installed.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        *extra,
        "--all-namespaces",
        f"--as=system:serviceaccount:{localrun.OPERATOR_NAMESPACE}:{localrun.OPERATOR_SA}",
        check=False,
    )
    assert proc.stdout.strip() == ("yes" if allowed else "no"), proc.stdout + proc.stderr


def test_rbac_rules_have_no_wildcards_and_each_says_why() -> None:
    text = (MANIFESTS / "base" / "rbac.yaml").read_text()
    role = next(d for d in yaml.safe_load_all(text) if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
    # Every rule starts right after a comment line that explains it.
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if re.match(r"^- apiGroups:", ln)]
    assert len(starts) == len(role["rules"])
    for i in starts:
        assert lines[i - 1].lstrip().startswith("#"), lines[i]


@pytest.fixture(scope="module")
def third_party_crds(installed: devcluster.Cluster) -> Iterator[None]:
    """The Prometheus Operator's and KEDA's real CRDs (pinned versions), so the dry runs
    check the overlay against their schemas; removed afterwards if this installed them.
    Applied even over an existing one (e.g. another test's schemaless stand-in)."""
    c = installed
    added = []
    for path in third_party_crds_mod.ensure():
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        present = c.kubectl("get", "crd", name, check=False).returncode == 0
        # Too large for client-side apply's last-applied annotation.
        c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        c.kubectl("wait", "--for=condition=Established", f"crd/{name}")
        if not present:
            added.append(name)
    yield
    for name in added:
        c.kubectl("delete", "crd", name, "--wait=true")


@pytest.mark.parametrize(
    "kustomization",
    KUSTOMIZATIONS,
    ids=[str(p.relative_to(MANIFESTS.parent)) for p in KUSTOMIZATIONS],
)
def test_every_manifest_passes_server_side_dry_run(
    installed: devcluster.Cluster, third_party_crds: None, kustomization: pathlib.Path
) -> None:
    c = installed
    docs = localrun.kustomize(kustomization, c)
    proc = _dry_run(c, docs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(docs)


def _dry_run(c: devcluster.Cluster, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    # Namespaced objects of a dry run need their namespace to exist for real.
    for ns in {d["metadata"].get("namespace") for d in docs} - {None}:
        if c.kubectl("get", "namespace", ns, check=False).returncode != 0:
            c.kubectl("create", "namespace", ns)
    return c.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
    )


THIRD_PARTY_KINDS = ("ServiceMonitor", "PrometheusRule", "ScaledObject")


def _third_party_docs(c: devcluster.Cluster) -> dict[str, dict[str, Any]]:
    docs = {
        d["kind"]: d for d in localrun.kustomize(MONITORING, c) if d["kind"] in THIRD_PARTY_KINDS
    }
    assert set(docs) == set(THIRD_PARTY_KINDS)
    return docs


def test_the_overlay_passes_the_real_third_party_schemas(
    installed: devcluster.Cluster, third_party_crds: None
) -> None:
    docs = _third_party_docs(installed)
    proc = _dry_run(installed, list(docs.values()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(THIRD_PARTY_KINDS)


def _break(kind: str, doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    if kind == "ServiceMonitor":
        del spec["selector"]
    elif kind == "PrometheusRule":
        del spec["groups"][0]["rules"][0]["expr"]
    else:
        del spec["scaleTargetRef"]


#: What the real schema says about each broken object (stand-ins accept them all).
REJECTED = {
    "ServiceMonitor": r"spec\.selector: Required value",
    "PrometheusRule": r"spec\.groups\[0\]\.rules\[0\]\.expr: Required value",
    "ScaledObject": r"spec\.scaleTargetRef: Required value",
}


@pytest.mark.parametrize("kind", THIRD_PARTY_KINDS)
def test_the_real_third_party_schema_rejects_a_broken_object(
    installed: devcluster.Cluster, third_party_crds: None, kind: str
) -> None:
    doc = _third_party_docs(installed)[kind]
    _break(kind, doc)
    proc = _dry_run(installed, [doc])
    assert proc.returncode != 0, proc.stdout
    assert re.search(REJECTED[kind], proc.stderr), proc.stderr

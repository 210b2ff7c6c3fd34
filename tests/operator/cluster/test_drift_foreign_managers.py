"""Fields other writers add to a child are theirs: the operator leaves them alone.

Two real mutations of the runtime Deployment, each adding an env var to the runtime
container and a sidecar container: a ``MutatingAdmissionPolicy`` (CEL, in the API
server's admission chain, so it runs on the operator's own applies too) and a second
field manager (a server-side apply as ``policy-engine``, as a policy engine or a
GitOps tool would). With a resync every few seconds the operator judges drift over
and over; during 60 idle seconds it must write nothing (the audit log is the
witness), while a field it owns that someone deletes is still put back.

Seen on the 1.37 API server: what the policy adds during the operator's own apply is
not recorded in the operator's managedFields entry (nor in anyone's), so the
operator's entry lists exactly what it applied.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from its_operator.builders import deployment, meta

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]
IDLE_S = 60
RESYNC_S = 3
ADMITTED, FOREIGN = "admitted", "foreign"
#: Leader election / peering keep-alives are not reconcile writes.
KEEPALIVES = ("kopfpeerings", "leases")


def _operator_writes(audit: Any, mark: int, namespace: str) -> list[str]:
    return [
        f"{e['verb']} {e['objectRef']['resource']}/{e['objectRef'].get('name')}"
        for e in audit.writes(mark, namespace)
        if e["objectRef"]["resource"] not in KEEPALIVES
    ]


def _runtime(dep: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c
        for c in dep["spec"]["template"]["spec"]["containers"]
        if c["name"] == deployment.CONTAINER
    )
    return found


def _env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _runtime(dep).get("env", [])}


def _containers(dep: dict[str, Any]) -> list[str]:
    return sorted(c["name"] for c in dep["spec"]["template"]["spec"]["containers"])


def _policy(name: str, namespace: str) -> list[dict[str, Any]]:
    """A MutatingAdmissionPolicy adding ``MESH=on`` and a ``mesh-proxy`` sidecar to the
    ``admitted`` pipeline's Deployment, bound to this test's namespace only."""
    c = "Object.spec.template.spec.containers"
    expression = (
        "Object{spec: Object.spec{template: Object.spec.template{"
        "spec: Object.spec.template.spec{containers: ["
        f'{c}{{name: "{deployment.CONTAINER}", env: [{c}.env{{name: "MESH", value: "on"}}]}},'
        f'{c}{{name: "mesh-proxy", image: "mesh/proxy:1"}}'
        "]}}}}"
    )
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "only-the-admitted-pipeline",
                        "expression": (
                            "has(object.metadata.labels) && "
                            f"'{meta.LABEL_INSTANCE}' in object.metadata.labels && "
                            f"object.metadata.labels['{meta.LABEL_INSTANCE}'] == '{ADMITTED}'"
                        ),
                    }
                ],
                "mutations": [
                    {
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {"expression": expression},
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]


def _probe(namespace: str) -> dict[str, Any]:
    """A Deployment created with server-side dry run: shows whether the policy acts."""
    labels = {meta.LABEL_INSTANCE: ADMITTED, "probe": "1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"probe": "1"}},
            "template": {
                "metadata": {"labels": {"probe": "1"}},
                "spec": {"containers": [{"name": deployment.CONTAINER, "image": "x:1"}]},
            },
        },
    }


@pytest.fixture
def mutating_policy(cluster: Any, namespace: str, wait_until: Any) -> Iterator[None]:
    """The policy installed and acting (or the test skipped, saying why)."""
    served = cluster.kubectl(
        "api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name"
    ).stdout
    if "mutatingadmissionpolicies" not in served:
        pytest.skip("this API server does not serve MutatingAdmissionPolicy")
    name = f"its-drift-{uuid.uuid4().hex[:8]}"
    cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump_all(_policy(name, namespace)), timeout=30
    )
    try:

        def acting() -> bool:
            out = cluster.kubectl(
                "create",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
                input=json.dumps(_probe(namespace)),
                check=False,
            )
            return out.returncode == 0 and "mesh-proxy" in out.stdout

        wait_until(acting, 20, interval=0.5, what="the MutatingAdmissionPolicy to act")
        yield
    finally:
        cluster.kubectl("delete", "mutatingadmissionpolicybinding", name, check=False)
        cluster.kubectl("delete", "mutatingadmissionpolicy", name, check=False)


def _apply_as_policy_engine(cluster: Any, namespace: str, name: str) -> None:
    """A second field manager adds ``TRACE=1`` and a ``trace-agent`` sidecar."""
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": deployment.CONTAINER, "env": [{"name": "TRACE", "value": "1"}]},
                        {"name": "trace-agent", "image": "trace/agent:1"},
                    ]
                }
            }
        },
    }
    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=policy-engine",
        "-f",
        "-",
        input=yaml.safe_dump(doc),
    )


def _settled(kube: Any, name: str) -> bool:
    dep = kube.get("deployment", name) or {}
    st = dep.get("status", {})
    return bool(
        st.get("observedGeneration") == dep.get("metadata", {}).get("generation")
        and st.get("replicas") == st.get("updatedReplicas") == st.get("readyReplicas") == 1
        and kube.ready(name)
    )


def _repairs(cluster: Any, kube: Any, name: str, extra_env: str, sidecar: str, wait: Any) -> None:
    """Deleting fields the operator owns is repaired; what others added survives it."""
    ns = kube.ns

    def holds(check: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
        return lambda: check(kube.get("deployment", name) or {})

    cluster.kubectl(
        "set", "env", f"deployment/{name}", "-c", deployment.CONTAINER, "HOME-", "-n", ns
    )
    wait(holds(lambda d: _env(d).get("HOME") == "/tmp"), 10, interval=0.1, what="HOME restored")

    cluster.kubectl("label", "deployment", name, f"{meta.LABEL_PART_OF}-", "-n", ns)
    wait(
        holds(lambda d: meta.LABEL_PART_OF in d["metadata"].get("labels", {})),
        10,
        interval=0.1,
        what="label restored",
    )

    dep = kube.get("deployment", name)
    index = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]].index(
        deployment.CONTAINER
    )
    want = _runtime(dep)["resources"]
    patch = [{"op": "remove", "path": f"/spec/template/spec/containers/{index}/resources"}]
    cluster.kubectl("patch", "deployment", name, "--type=json", "-p", json.dumps(patch), "-n", ns)
    wait(
        holds(lambda d: _runtime(d).get("resources") == want),
        10,
        interval=0.1,
        what="resources restored",
    )

    dep = kube.get("deployment", name)
    assert extra_env in _env(dep), _env(dep)
    assert sidecar in _containers(dep), _containers(dep)


def test_fields_other_writers_add_make_no_writes_and_owned_fields_are_still_repaired(
    cluster: Any,
    kube: Any,
    operator: Any,
    mutating_policy: None,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    audit: Any,
) -> None:
    op = operator("--resync-seconds", str(RESYNC_S))
    kube.apply(pipeline(ADMITTED, spec_of()))
    kube.apply(pipeline(FOREIGN, spec_of()))
    wait_until(lambda: kube.ready(ADMITTED) and kube.ready(FOREIGN), 40, what="both ready")
    _apply_as_policy_engine(cluster, kube.ns, FOREIGN)

    admitted, foreign = kube.get("deployment", ADMITTED), kube.get("deployment", FOREIGN)
    assert _env(admitted)["MESH"] == "on"
    assert "mesh-proxy" in _containers(admitted)
    assert _env(foreign)["TRACE"] == "1"
    assert "trace-agent" in _containers(foreign)
    wait_until(
        lambda: _settled(kube, ADMITTED) and _settled(kube, FOREIGN), 40, what="rollouts done"
    )
    time.sleep(RESYNC_S + 3)  # the last status update for the rollout lands

    mark = audit.mark()
    reconciles = op.metric("its_operator_reconciles_total")
    deployment_writes = op.metric("its_operator_api_writes_total", kind="Deployment")
    time.sleep(IDLE_S)
    assert _operator_writes(audit, mark, kube.ns) == []
    assert op.metric("its_operator_api_writes_total", kind="Deployment") == deployment_writes
    # Every pipeline was judged again and again in that window (full resyncs).
    judged = op.metric("its_operator_reconciles_total") - reconciles
    print(f"{IDLE_S} idle s with foreign fields: {judged:.0f} reconciles, 0 writes")
    assert judged >= IDLE_S // RESYNC_S
    assert "drift at" not in op.text()

    _repairs(cluster, kube, FOREIGN, "TRACE", "trace-agent", wait_until)
    _repairs(cluster, kube, ADMITTED, "MESH", "mesh-proxy", wait_until)

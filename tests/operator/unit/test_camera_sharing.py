"""Scale-out, operator side: the runtime's identity and RBAC, the rendered ``scaleOut``,
the replica floor, ``status.cameras`` and its Events, and the 1,000-camera bound."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any, cast

import pytest
import yaml

from its_devenv import localrun
from its_operator.api import crdgen, resource, spec, spec_runtime
from its_operator.api import status as st
from its_operator.builders import cameras, children, configmap, deployment, hpa, rbac
from its_operator.builders import status as status_builder
from its_operator.handlers import camera_leases
from its_runtime import config as rc
from its_runtime.dataplane import assignment, membership

Make = Callable[..., resource.Pipeline]
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T0 = "2026-01-01T12:00:00Z"


def _cameras(n: int, *, rich: bool = False) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        cam: dict[str, Any] = {"name": f"cam-{i:04d}", "url": f"rtsp://cams.local/{i:04d}"}
        if rich:  # what a corridor camera carries: two lines and a region
            cam["url"] = f"rtsp://camera-gateway.corridor.example.net:8554/north/{i:04d}/main"
            cam["lines"] = [
                {"name": "in", "start": [0.0, 0.55], "end": [1.0, 0.55]},
                {"name": "out", "start": [0.0, 0.75], "end": [1.0, 0.75]},
            ]
            cam["regions"] = [
                {"name": "lane", "polygon": [[0.1, 0.2], [0.9, 0.2], [0.9, 0.9], [0.1, 0.9]]}
            ]
        out.append(cam)
    return out


def _lease(
    pod: str, *, capacity: int = 32, age_s: float = 1.0, duration: int = 10
) -> dict[str, Any]:
    renewed = NOW - datetime.timedelta(seconds=age_s)
    return {
        "metadata": {
            "name": f"demo-{pod}",
            "namespace": "ns",
            "labels": {membership.PIPELINE_LABEL: "demo"},
            "annotations": {membership.CAPACITY_ANNOTATION: str(capacity)},
        },
        "spec": {
            "holderIdentity": pod,
            "leaseDurationSeconds": duration,
            "renewTime": renewed.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        },
    }


# --- the runtime's identity -------------------------------------------------------


def test_runtime_pods_know_who_they_are_and_run_as_the_pipeline_account(
    make_pipeline: Make,
) -> None:
    d = deployment.build(make_pipeline(), config_hash="x")
    pod = d["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env[rc.POD_NAME_ENV]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env[rc.POD_NAMESPACE_ENV]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert pod["serviceAccountName"] == "demo-runtime"
    assert pod["automountServiceAccountToken"] is True


def test_the_runtime_role_grants_leases_in_its_namespace_only(make_pipeline: Make) -> None:
    p = make_pipeline()
    sa, role, binding = rbac.service_account(p), rbac.role(p), rbac.role_binding(p)
    assert sa is not None
    for m in (sa, role, binding):
        assert m["metadata"]["name"] == "demo-runtime"
        assert m["metadata"]["namespace"] == "ns"
        (ref,) = m["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("AnalyticsPipeline", "uid-1", True)
    assert role["kind"] == "Role"  # namespaced: never a ClusterRole
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
        }
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "demo-runtime",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-runtime", "namespace": "ns"}
    ]


def test_a_named_service_account_is_bound_not_created(make_pipeline: Make) -> None:
    p = make_pipeline(runtime={"serviceAccountName": "workload-identity"})
    kinds = [m["kind"] for m in children.desired(p, children.Observed())]
    assert "ServiceAccount" not in kinds
    assert {"Role", "RoleBinding"} <= set(kinds)
    assert rbac.role_binding(p)["subjects"][0]["name"] == "workload-identity"
    pod = deployment.build(p, config_hash="x")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "workload-identity"


@pytest.mark.parametrize("name", [rc.POD_NAME_ENV, rc.POD_NAMESPACE_ENV])
def test_the_pod_identity_variables_are_reserved(make_pipeline: Make, name: str) -> None:
    with pytest.raises(resource.InvalidSpecError, match="reserved"):
        make_pipeline(runtime={"image": "i", "env": [{"name": name, "value": "other-pod"}]})


def test_a_local_process_plays_a_named_pod() -> None:
    container = {
        "name": "runtime",
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "HOME", "value": "/tmp"},
        ],
    }
    c = cast(Any, None)  # no Secret or ConfigMap ref: the cluster is not asked
    env = localrun.pod_env(c, "its-demo", container, pod_name="ring-road-0")
    assert env == {"POD_NAME": "ring-road-0", "NS": "its-demo", "HOME": "/tmp"}
    default = localrun.pod_env(c, "its-demo", container, deployment_name="ring-road")
    assert default["POD_NAME"] == "ring-road-local"


# --- the rendered runtime config ----------------------------------------------------


def test_configmap_tells_the_replicas_to_share_the_cameras(make_pipeline: Make) -> None:
    p = make_pipeline(
        runtime={"maxCamerasPerReplica": 4, "cameraLease": {"durationSeconds": 20}},
    )
    cm = configmap.build(p)
    parsed = rc.RuntimeConfig.from_yaml(cm["data"][rc.CONFIGMAP_KEY])
    assert parsed.scale_out == rc.ScaleOutConfig(
        enabled=True,
        pipeline="demo",
        lease_duration_seconds=20,
        renew_period_seconds=2,
        max_cameras_per_replica=4,
    )


def test_lease_fields_take_bounds_and_defaults_from_the_runtime_and_fail_over_within_15s() -> None:
    crd = crdgen.pipeline_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    runtime = crd["properties"]["spec"]["properties"]["runtime"]["properties"]
    pairs = [
        (runtime["maxCamerasPerReplica"], "max_cameras_per_replica"),
        (runtime["cameraLease"]["properties"]["durationSeconds"], "lease_duration_seconds"),
        (runtime["cameraLease"]["properties"]["renewPeriodSeconds"], "renew_period_seconds"),
    ]
    wire = rc.ScaleOutConfig.model_json_schema()["properties"]
    for schema, field in pairs:
        want = wire[rc.ScaleOutConfig.model_fields[field].alias or field]
        assert (schema["minimum"], schema["maximum"], schema["default"]) == (
            want["minimum"],
            want["maximum"],
            want["default"],
        ), field
    lease = spec_runtime.CameraLeaseSpec()
    assert lease.failover_bound_seconds <= 15
    rules = [r["rule"] for r in runtime["cameraLease"]["x-kubernetes-validations"]]
    assert rules == ["self.durationSeconds > 3 * self.renewPeriodSeconds"]


def test_a_lease_not_longer_than_three_renewals_is_rejected(make_pipeline: Make) -> None:
    with pytest.raises(resource.InvalidSpecError, match="exceed three times renewPeriodSeconds"):
        make_pipeline(runtime={"cameraLease": {"durationSeconds": 6, "renewPeriodSeconds": 2}})


# --- capacity ----------------------------------------------------------------------


def test_the_hpa_never_goes_below_the_replica_floor(make_pipeline: Make) -> None:
    p = make_pipeline(
        cameras=_cameras(12),
        runtime={"maxCamerasPerReplica": 4},
        engineCache={"accessMode": "ReadWriteMany"},
        autoscaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 2,
            "targets": {"cpuUtilizationPercent": 60},
        },
    )
    h = hpa.build(p)["spec"]
    assert (h["minReplicas"], h["maxReplicas"]) == (3, 3)
    assert "replicas" not in deployment.build(p, config_hash="x")["spec"]  # the HPA's own
    assert cameras.capacity_problem(p) is None


def test_too_few_fixed_replicas_is_insufficient_capacity(make_pipeline: Make) -> None:
    p = make_pipeline(
        cameras=_cameras(12),
        runtime={"replicas": 2, "maxCamerasPerReplica": 4},
        engineCache={"accessMode": "ReadWriteMany"},
    )
    problem = cameras.capacity_problem(p)
    assert problem is not None
    assert problem.reason == "InsufficientCapacity"
    assert "need 3 replicas" in problem.message
    assert "4 cameras stay unassigned" in problem.message
    obs = status_builder.Observation(p, 3, problems=[problem])
    s, _ = status_builder.compute(obs, None, T0)
    ready = next(c for c in s["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InsufficientCapacity")
    enough = make_pipeline(
        cameras=_cameras(12),
        runtime={"replicas": 3, "maxCamerasPerReplica": 4},
        engineCache={"accessMode": "ReadWriteMany"},
    )
    assert cameras.capacity_problem(enough) is None
    stopped = make_pipeline(cameras=_cameras(12), runtime={"replicas": 0})
    assert cameras.capacity_problem(stopped) is None  # scaled to zero on purpose


def test_a_read_write_once_cache_cannot_follow_a_floor_above_one(make_pipeline: Make) -> None:
    with pytest.raises(resource.InvalidSpecError, match="ReadWriteOnce serves one replica"):
        make_pipeline(
            cameras=_cameras(3),
            runtime={"maxCamerasPerReplica": 2},
            autoscaling={
                "enabled": True,
                "maxReplicas": 1,
                "targets": {"cpuUtilizationPercent": 60},
            },
        )


# --- status.cameras ---------------------------------------------------------------


def test_status_shows_the_assignment_the_replicas_compute(make_pipeline: Make) -> None:
    p = make_pipeline(cameras=_cameras(12), runtime={"maxCamerasPerReplica": 4})
    leases = [_lease("demo-a", capacity=4), _lease("demo-b", capacity=4)]
    leases.append(_lease("demo-dead", capacity=4, age_s=30))  # expired 20 s ago
    view = cameras.live_view(leases, NOW)
    assert [m.name for m in view.members] == ["demo-a", "demo-b"]
    assert view.expired == {"demo-dead"}
    out = cameras.build(p, view)
    expected = assignment.assign([c.name for c in p.spec.cameras], list(view.members))
    assert out["holders"] == dict(expected.holders)
    assert (out["total"], out["assigned"], out["unassigned"]) == (12, 8, 4)
    assert out["summary"] == "8/12"
    assert out["replicasNeeded"] == 3
    assert out["unassignedNames"] == list(expected.unassigned)
    assert out["members"] == [
        {"name": "demo-a", "capacity": 4, "cameras": 4},
        {"name": "demo-b", "capacity": 4, "cameras": 4},
    ]


def test_status_with_1000_cameras_stays_small(make_pipeline: Make) -> None:
    p = make_pipeline(cameras=_cameras(1000), runtime={"maxCamerasPerReplica": 40})
    view = cameras.live_view([_lease(f"demo-{i:02d}", capacity=40) for i in range(20)], NOW)
    obs = status_builder.Observation(p, 3, cameras=cameras.build(p, view))
    s, _ = status_builder.compute(obs, None, T0)
    cams = s["cameras"]
    assert (cams["total"], cams["assigned"], cams["unassigned"]) == (1000, 800, 200)
    assert "holders" not in cams  # per camera only for small pipelines
    assert len(cams["unassignedNames"]) == st.UNASSIGNED_NAMES_MAX
    size = len(json.dumps(s))
    assert size < 8 * 1024, size


def test_failover_and_rebalance_are_events_naming_the_cameras(make_pipeline: Make) -> None:
    p = make_pipeline(cameras=_cameras(6))
    names = [c.name for c in p.spec.cameras]
    three = cameras.live_view([_lease(x) for x in ("demo-a", "demo-b", "demo-c")], NOW)
    before = cameras.build(p, three)
    assert cameras.transitions(None, before, names, frozenset()) == []  # first sight
    assert cameras.transitions(before, before, names, frozenset()) == []

    dead = cameras.live_view([_lease("demo-a"), _lease("demo-b"), _lease("demo-c", age_s=60)], NOW)
    after = cameras.build(p, dead)
    (event,) = cameras.transitions(before, after, names, dead.expired)
    assert (event.type, event.reason) == ("Warning", "CameraFailover")
    lost = sorted(c for c, h in before["holders"].items() if h == "demo-c")
    assert lost
    assert f"{len(lost)} cameras moved" in event.message
    for cam in lost:
        assert f"{cam} -> {after['holders'][cam]}" in event.message

    (joined,) = cameras.transitions(after, before, names, frozenset())
    assert (joined.type, joined.reason) == ("Normal", "CamerasRebalanced")
    assert "joined: demo-c" in joined.message


def test_a_reconcile_before_the_first_lease_poll_keeps_the_stored_cameras(
    make_pipeline: Make,
) -> None:
    p = make_pipeline()
    stored = {"total": 1, "assigned": 1, "unassigned": 0, "summary": "1/1"}
    s, events = status_builder.compute(
        status_builder.Observation(p, 3, cameras=None), {"cameras": stored}, T0
    )
    assert s["cameras"] == stored
    assert not [e for e in events if e.reason.startswith("Camera")]


def test_only_pipelines_whose_members_changed_are_queued() -> None:
    snapshot = camera_leases.LeaseSnapshot(cast(Any, None), ["ns"])
    snapshot._by_key = {("ns", "demo"): [_lease("demo-a", capacity=4)]}
    stored = {"cameras": {"members": [{"name": "demo-a", "capacity": 4, "cameras": 1}]}}
    body = {"status": stored}
    assert snapshot.changed([(("ns", "demo"), body)], NOW) == []
    snapshot._by_key[("ns", "demo")].append(_lease("demo-b", capacity=4))
    assert snapshot.changed([(("ns", "demo"), body)], NOW) == [("ns", "demo")]
    # Not again while the status still shows the old members (a write pending or failing).
    assert snapshot.changed([(("ns", "demo"), body)], NOW) == []
    # An expiry is a change without any Lease event.
    later = NOW + datetime.timedelta(seconds=30)
    assert snapshot.changed([(("ns", "demo"), body)], later) == [("ns", "demo")]
    assert snapshot.changed([(("ns", "other"), {"status": {}})], NOW) == [("ns", "other")]


# --- 1,000 cameras -------------------------------------------------------------------


def test_a_1000_camera_pipeline_fits_its_configmap(make_pipeline: Make) -> None:
    assert spec.MAX_CAMERAS == 1000
    p = make_pipeline(cameras=_cameras(1000, rich=True))
    cm = configmap.build(p)
    size = sum(len(v.encode()) for v in cm["data"].values())
    assert size < 1024 * 1024, size  # a ConfigMap holds at most 1 MiB
    assert len(rc.RuntimeConfig.from_yaml(cm["data"][rc.CONFIGMAP_KEY]).cameras) == 1000
    # The CR itself (JSON in etcd, at most ~1.5 MiB) is about as large as the config.
    assert len(json.dumps(yaml.safe_load(cm["data"][rc.CONFIGMAP_KEY]))) < 1024 * 1024
    with pytest.raises(resource.InvalidSpecError):
        make_pipeline(cameras=_cameras(1001))


def test_the_operator_imports_the_assignment_without_torch() -> None:
    code = (
        "import sys, its_runtime.dataplane.assignment, its_runtime.dataplane.membership;"
        "print(sorted(m for m in ('torch', 'numpy', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

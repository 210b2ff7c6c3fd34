"""Flux's verdict on live pipelines: kstatus (``sigs.k8s.io/cli-utils/pkg/kstatus``, the
Go library Flux's ``wait: true`` uses) run on the objects as the API server serves them.

A pipeline that cannot work must read as Failed at once, not InProgress until Flux's
timeout: a missing Secret, a GPU request no node has, a model the runtime cannot
load. A healthy one reads Current, and a spec the operator has not observed yet reads
InProgress. kwok runs no kubelet, so the crash loop of a runtime that cannot load its
model is written into the pod's status by the test, as a kubelet would write it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from its_devenv import kstatus
from its_operator.builders import meta

pytestmark = [pytest.mark.cluster]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def verdicts() -> Callable[[list[dict[str, Any]]], list[kstatus.Result]]:
    kstatus.ensure()  # built once per machine (minutes the first time)
    return kstatus.compute


def _live(cluster: Any, ns: str) -> dict[str, dict[str, Any]]:
    """Every pipeline of ``ns``, read from the API server (no kubectl in between)."""
    items = cluster.get_json(f"/apis/its.ai/v1alpha1/namespaces/{ns}/analyticspipelines")["items"]
    return {ap["metadata"]["name"]: ap for ap in items}


def _observed(ap: dict[str, Any]) -> bool:
    return bool((ap.get("status") or {}).get("observedGeneration") == ap["metadata"]["generation"])


def test_flux_sees_current_and_failed_pipelines_at_once(
    cluster: Any,
    kube: Any,
    operator: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    verdicts: Any,
) -> None:
    operator()
    gpu = {"image": "registry.local/its-runtime:0.1.0", "resources": {"gpu": 8}}  # nodes have 4
    docs = [
        pipeline("healthy", spec_of()),
        pipeline(
            "no-secret",
            spec_of(database={"dsnSecretRef": {"name": "db-credentials", "key": "dsn"}}),
        ),
        pipeline("greedy", spec_of(runtime=gpu)),  # default progress deadline: 10 minutes
    ]
    t0 = time.monotonic()
    kube.apply({"apiVersion": "v1", "kind": "List", "items": docs})
    want = {"healthy": "Current", "no-secret": "Failed", "greedy": "Failed"}
    reached: dict[str, float] = {}
    seen: dict[str, list[str]] = {name: [] for name in want}
    last: dict[str, kstatus.Result] = {}

    def all_reached() -> bool:
        live = _live(cluster, kube.ns)
        names = sorted(live)
        for name, result in zip(names, verdicts([live[n] for n in names]), strict=True):
            # Only what the operator has written counts: kstatus reads an object that
            # has no status yet (no conditions, no observedGeneration) as Current.
            if not _observed(live[name]):
                continue
            last[name] = result
            if not seen[name] or seen[name][-1] != result.status:
                seen[name].append(result.status)
            if result.status == want[name]:
                reached.setdefault(name, time.monotonic() - t0)
        return reached.keys() == want.keys()

    wait_until(all_reached, 40, interval=0.25, what=f"kstatus verdicts {want} (seen {seen})")
    print(f"kstatus verdicts reached after {reached} s; sequence {seen}")
    assert reached["no-secret"] < 10, reached  # Failed at once, no timeout to wait for
    assert reached["greedy"] < 30, reached  # well before the 10-minute deadline
    assert "Failed" not in seen["healthy"], seen
    assert "Current" not in seen["no-secret"] + seen["greedy"], seen
    assert "db-credentials" in last["no-secret"].message
    assert "nvidia.com/gpu" in last["greedy"].message

    live = _live(cluster, kube.ns)
    stalled = {
        name: {c["type"]: c for c in live[name]["status"]["conditions"]}["Stalled"]
        for name in ("no-secret", "greedy")
    }
    assert stalled["no-secret"]["reason"] == "SecretNotFound"
    assert stalled["greedy"]["reason"] == "Unschedulable"
    degraded = {c["type"]: c for c in live["greedy"]["status"]["conditions"]}["Degraded"]
    assert degraded["status"] == "False"  # Degraded still waits for the deadline

    # The Secret appears: the same pipeline turns Current without a spec change.
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "db-credentials",
        "-n",
        kube.ns,
        "--from-literal=dsn=postgresql://its@db/its",
    )
    wait_until(
        lambda: verdicts([_live(cluster, kube.ns)["no-secret"]])[0].status == "Current",
        20,
        what="Current once the Secret exists",
    )


def _crash_loop_status(pod: dict[str, Any], exit_code: int) -> dict[str, Any]:
    """What a kubelet writes for a runtime container that exited ``exit_code`` twice."""
    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    container = pod["spec"]["containers"][0]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "message": f"containers with unready status: [{container['name']}]",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "message": f"containers with unready status: [{container['name']}]",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 2,
                    "state": {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 20s restarting failed "
                            f"container={container['name']} pod={name}_{ns}",
                        }
                    },
                    "lastState": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Error",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }


def test_flux_waits_for_a_new_generation_and_fails_a_model_that_cannot_load(
    cluster: Any,
    kube: Any,
    operator: Any,
    spec_of: SpecOf,
    pipeline: Doc,
    wait_until: Any,
    verdicts: Any,
) -> None:
    op = operator()
    spec = spec_of()
    kube.apply(pipeline("model", spec))

    def verdict() -> tuple[dict[str, Any], kstatus.Result]:
        ap = _live(cluster, kube.ns)["model"]
        return ap, verdicts([ap])[0]

    wait_until(
        lambda: (v := verdict()) and _observed(v[0]) and v[1].status == "Current",
        30,
        what="Current",
    )

    # A spec the operator has not observed yet (it is stopped) is InProgress.
    op.stop()
    spec["model"]["scoreThreshold"] = 0.55
    kube.apply(pipeline("model", spec))
    ap, result = verdict()
    assert ap["metadata"]["generation"] == 2
    assert result.status == "InProgress"
    assert "generation is 2, but latest observed generation is 1" in result.message
    operator()
    wait_until(
        lambda: (v := verdict()) and _observed(v[0]) and v[1].status == "Current",
        30,
        what="Current at generation 2",
    )

    # The runtime exits with its own "model cannot load" code (3) and crash-loops.
    selector = f"{meta.LABEL_INSTANCE}=model,{meta.LABEL_NAME}={meta.APP_NAME}"
    (pod,) = [p for p in kube.items("pods", selector) if not p["metadata"].get("deletionTimestamp")]
    t0 = time.monotonic()
    cluster.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        kube.ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(_crash_loop_status(pod, exit_code=3)),
    )
    ap, result = wait_until(
        lambda: (v := verdict()) and v[1].status == "Failed" and v,
        30,
        what="Failed for a model that cannot load",
    )
    print(f"Failed {time.monotonic() - t0:.1f}s after the crash loop: {result.message}")
    stalled = {c["type"]: c for c in ap["status"]["conditions"]}["Stalled"]
    assert stalled["reason"] == "ModelLoadFailed"
    assert pod["metadata"]["name"] in result.message
    assert "exited with code 3" in result.message

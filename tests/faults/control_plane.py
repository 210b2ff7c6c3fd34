"""Control-plane fault scenarios: the operator killed, its leader killed, the API server
and etcd restarted, each under a reconcile of many pipelines.

Every scenario runs on a private control plane (:mod:`its_devenv.private_cluster`:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on free ports,
the project's CRDs installed), so the shared dev cluster is never stopped, and the
audit log holds only this scenario's writes. The operator runs as in production
(``python -m its_operator.main``, leader election on) against its kubeconfig.

What is counted, against the pipelines the scenario created or changed:

- ``lost``: pipelines that never converge (Ready for their current generation, the
  Deployment carrying the spec's current memory request, every deleted child back);
- ``duplicated``: children made twice or conflicting writes: a second object of one
  kind for one pipeline (a second ReplicaSet, too, where no spec changed: a rollout
  nobody asked for), ``AlreadyExists`` surfacing in a status, and for two replicas,
  writes of two identities that interleave in the audit log.

``recovery_s`` is measured from the fault's end (the operator restarted, the leader
killed, the API server ready again) until every pipeline converged. After an API
server restart most of it is kube-controller-manager's (its informers come back
tens of seconds after the server), so the restart scenarios also report when the
operator had made all its writes (``operator_applied_all_s``) and when the
Deployments were rolled out (``deployments_rolled_out_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import yaml

from its_devenv import cluster as devcluster
from its_devenv import ports, procs
from its_devenv.private_cluster import PrivateCluster, private_cluster
from its_operator.api import resource
from its_operator.builders import children as children_builder
from its_operator.builders import meta
from its_operator.handlers import kube as opkube
from tests.faults.scenarios import Outcome
from tests.operator.cluster.conftest import AuditLog, OperatorProcess, pipeline, wait_until
from tests.operator.cluster.test_leader_election_cluster import (
    FAST,
    _assert_never_interleaved,
    _leader,
    _writes_by_identity,
)
from tests.operator.conftest import sample_spec

#: Pipelines the kwok nodes run by the hundred: no GPU, a sliver of CPU and memory.
MEMORY, CHANGED_MEMORY = "64Mi", "96Mi"
SMALL = sample_spec(runtime={"resources": {"gpu": 0, "cpu": "50m", "memory": MEMORY}})
CONVERGE_TIMEOUT_S = 180.0


# -- the operator and the cluster, as plain objects (the scenarios run outside pytest) ------


@contextlib.contextmanager
def _cluster(given: devcluster.Cluster | None) -> Iterator[tuple[devcluster.Cluster, float]]:
    """``given``, or a private control plane started for this scenario (and its
    start-up seconds)."""
    if given is not None:
        yield given, 0.0
        return
    started = time.monotonic()
    with private_cluster() as pc:
        yield pc.cluster, time.monotonic() - started


class Operators:
    """Operator processes serving one namespace; all stopped on :meth:`close`."""

    def __init__(self, c: devcluster.Cluster, namespace: str) -> None:
        self.cluster = c
        self.namespace = namespace
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="its-faults-operator-"))
        self.started: list[OperatorProcess] = []

    def start(self, *extra: str, identity: str | None = None) -> OperatorProcess:
        """One more replica; ``identity`` reuses a killed one's (a container restarted
        in its pod keeps the pod name, hence the Lease holder identity)."""
        identity = identity or f"op-{len(self.started)}-{uuid.uuid4().hex[:6]}"
        metrics_port, liveness_port = ports.free_port(), ports.free_port()
        log = self.dir / f"{identity}-{len(self.started)}.log"
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), "POD_NAME": identity}
        cmd = [
            sys.executable,
            "-m",
            "its_operator.main",
            "--namespace",
            self.namespace,
            "--metrics-port",
            str(metrics_port),
            "--liveness-port",
            str(liveness_port),
            *extra,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        op = OperatorProcess(identity, log, proc, metrics_port, liveness_port)
        self.started.append(op)
        wait_until(lambda: op.healthy() or not op.alive(), 60, what="operator liveness")
        if not op.alive():
            raise RuntimeError(f"the operator exited at start:\n{op.text()[-3000:]}")
        return op

    def log_tails(self, chars: int = 4000) -> dict[str, str]:
        return {op.log.name: op.text()[-chars:] for op in self.started}

    def close(self) -> None:
        for op in self.started:
            op.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def _namespace(c: devcluster.Cluster) -> Iterator[tuple[str, Operators]]:
    ns = f"f-{uuid.uuid4().hex[:10]}"
    c.kubectl("create", "namespace", ns)
    ops = Operators(c, ns)
    try:
        yield ns, ops
    finally:
        ops.close()
        c.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def _apply(c: devcluster.Cluster, namespace: str, docs: list[dict[str, Any]]) -> None:
    c.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), timeout=120)


# -- what converged, from the API (one LIST per kind, by HTTP: cheap enough to poll) ---------


def _list(c: devcluster.Cluster, url: str, selector: str | None = None) -> list[dict[str, Any]]:
    query = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
    items: list[dict[str, Any]] = c.get_json(url + query, timeout=15)["items"]
    return items


def _pipelines(c: devcluster.Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    url = opkube.path(resource.API_VERSION, resource.KIND, namespace)
    return {ap["metadata"]["name"]: ap for ap in _list(c, url)}


def _ready(ap: dict[str, Any]) -> bool:
    status = ap.get("status") or {}
    return bool(
        status.get("observedGeneration") == ap["metadata"]["generation"]
        and any(
            cond["type"] == "Ready" and cond["status"] == "True"
            for cond in status.get("conditions", [])
        )
    )


def _memory(deployment: dict[str, Any]) -> str | None:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    value = containers[0].get("resources", {}).get("requests", {}).get("memory")
    return str(value) if value is not None else None


def _rolled_out(deployment: dict[str, Any]) -> bool:
    """The Deployment controller finished this generation's rollout."""
    status, want = deployment.get("status") or {}, deployment["spec"].get("replicas", 1)
    return bool(
        status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


def _children(c: devcluster.Cluster, namespace: str) -> dict[str, Counter[str]]:
    """kind -> pipeline -> how many of that kind it has (ReplicaSets included)."""
    urls = {kind: opkube.path(v, kind, namespace) for v, kind in children_builder.KINDS}
    urls["ReplicaSet"] = f"/apis/apps/v1/namespaces/{namespace}/replicasets"
    urls["ActiveReplicaSet"] = urls["ReplicaSet"]
    out: dict[str, Counter[str]] = {}
    for kind, url in urls.items():
        try:
            items = _list(c, url, meta.LABEL_INSTANCE)
        except OSError as exc:  # a kind this cluster does not serve (ServiceMonitor)
            if getattr(exc, "code", None) == 404:
                continue
            raise
        if kind == "ActiveReplicaSet":
            items = [i for i in items if (i["spec"].get("replicas") or 0) > 0]
        out[kind] = Counter(i["metadata"]["labels"][meta.LABEL_INSTANCE] for i in items)
    return out


class Watch:
    """The pipelines a scenario expects to converge, and what each must show."""

    def __init__(self, c: devcluster.Cluster, namespace: str) -> None:
        self.cluster = c
        self.namespace = namespace
        #: name -> the memory request its Deployment must carry
        self.expected: dict[str, str] = {}
        #: (kind, name) of children deleted during the fault, which must come back
        self.deleted: list[tuple[str, str]] = []
        #: When (monotonic) the operator's writes were all seen (every Deployment with
        #: its spec's memory, every deleted child back), and when the Deployment
        #: controller had rolled them all out: the operator's part of a recovery and
        #: kube-controller-manager's, told apart.
        self.applied_at: float | None = None
        self.rolled_out_at: float | None = None

    def pending(self) -> list[str]:
        """Pipelines not converged yet (all of them while the API does not answer)."""
        try:
            aps = _pipelines(self.cluster, self.namespace)
            deps = _list(
                self.cluster,
                f"/apis/apps/v1/namespaces/{self.namespace}/deployments",
                meta.LABEL_INSTANCE,
            )
        except OSError:
            return sorted(self.expected)
        memory = {d["metadata"]["labels"][meta.LABEL_INSTANCE]: _memory(d) for d in deps}
        rolled = {d["metadata"]["labels"][meta.LABEL_INSTANCE] for d in deps if _rolled_out(d)}
        missing = []
        for kind, name in self.deleted:
            url = opkube.path("v1", kind, self.namespace, name)
            try:
                self.cluster.get_json(url, timeout=5)
            except OSError:
                missing.append(f"{kind}/{name}")
        applied = not missing and all(memory.get(n) == w for n, w in self.expected.items())
        if applied and self.applied_at is None:
            self.applied_at = time.monotonic()
        if applied and self.rolled_out_at is None and rolled >= set(self.expected):
            self.rolled_out_at = time.monotonic()
        out = [
            name
            for name, want in self.expected.items()
            if not (name in aps and _ready(aps[name]) and memory.get(name) == want)
        ]
        return sorted(set(out + missing))

    def until_converged(self, timeout: float = CONVERGE_TIMEOUT_S) -> tuple[float, list[str]]:
        """(seconds until nothing is pending, or inf; what is still pending)."""
        start = time.monotonic()
        left = self.pending()
        while left and time.monotonic() - start < timeout:
            time.sleep(0.5)
            left = self.pending()
        return (time.monotonic() - start if not left else float("inf")), left

    def duplicates(self, *, all_replicasets: bool) -> tuple[int, dict[str, Any]]:
        """(count, what): extra children per pipeline and AlreadyExists in a status."""
        counts = _children(self.cluster, self.namespace)
        skip = "ActiveReplicaSet" if all_replicasets else "ReplicaSet"
        extra = {
            f"{kind}/{name}": n
            for kind, per in counts.items()
            if kind != skip
            for name, n in per.items()
            if n > 1
        }
        aps = _pipelines(self.cluster, self.namespace)
        exists = [
            name
            for name, ap in aps.items()
            if "alreadyexists" in json.dumps(ap.get("status") or {}).lower().replace(" ", "")
        ]
        missing_deployment = [n for n in self.expected if counts["Deployment"][n] == 0]
        total = sum(n - 1 for n in extra.values()) + len(exists)
        return total, {
            "extra_children": extra,
            "already_exists_in_status": exists,
            "without_deployment": missing_deployment,
            "deployments": sum(counts["Deployment"].values()),
        }


def _writes(op: OperatorProcess) -> float:
    try:
        return op.metric("its_operator_api_writes_total")
    except OSError:
        return -1.0


# -- (1) operator kill -9 mid-reconcile, one replica restarted ------------------------------


def _operator_kill(pipelines: int, c: devcluster.Cluster, started_s: float) -> Outcome:
    with _namespace(c) as (ns, ops):
        op = ops.start()
        watch = Watch(c, ns)
        docs = [pipeline(f"p{i:03d}", SMALL) for i in range(pipelines)]
        watch.expected = {d["metadata"]["name"]: MEMORY for d in docs}
        kill_after = 3 * pipelines  # about a quarter of the ~12 writes each needs
        _apply(c, ns, docs)
        wait_until(lambda: _writes(op) >= kill_after, 120, interval=0.02, what="first writes")
        writes_at_kill = _writes(op)
        op.kill()  # SIGKILL in the middle of the reconcile
        ready_at_kill = pipelines - len(watch.pending())
        restarted = time.monotonic()
        op2 = ops.start(identity=op.identity)  # kubelet restarts the container in its pod
        up_s = time.monotonic() - restarted
        recovery_s, left = watch.until_converged()
        dup, dup_details = watch.duplicates(all_replicasets=True)
        alive = op2.alive()
        tails = ops.log_tails() if left or dup or not alive else {}
    return Outcome(
        name="operator_kill_mid_reconcile",
        lost=len([x for x in left if "/" not in x]),
        duplicated=dup,
        recovery_s=round(recovery_s, 3),
        details={
            "pipelines": pipelines,
            "killed_after_writes": writes_at_kill,
            "ready_at_kill": ready_at_kill,
            "restart_to_healthy_s": round(up_s, 2),
            "restarted_operator_alive": alive,
            "private_cluster_start_s": round(started_s, 1),
            **dup_details,
            **({"pending": left, "logs": tails} if tails else {}),
        },
    )


async def operator_kill_mid_reconcile(
    pipelines: int = 20, cluster: devcluster.Cluster | None = None
) -> Outcome:
    """N pipelines created, the (single) operator killed -9 about a quarter through
    their writes and restarted with the same identity; ``recovery_s``: restart until
    every pipeline is Ready with exactly one child of each kind."""

    def run() -> Outcome:
        with _cluster(cluster) as (c, started_s):
            return _operator_kill(pipelines, c, started_s)

    return await asyncio.to_thread(run)


# -- (2) the leader of two replicas killed -9 mid-reconcile -------------------------------


def _leader_kill(pipelines: int, c: devcluster.Cluster, started_s: float) -> Outcome:
    with _namespace(c) as (ns, ops):
        replicas = [ops.start(*FAST), ops.start(*FAST)]
        leader = wait_until(lambda: _leader(replicas), 30, what="one leader")
        standby = next(op for op in replicas if op is not leader)
        audit = AuditLog(c.audit_log)
        mark = audit.mark()
        watch = Watch(c, ns)
        docs = [pipeline(f"p{i:03d}", SMALL) for i in range(pipelines)]
        watch.expected = {d["metadata"]["name"]: MEMORY for d in docs}
        _apply(c, ns, docs)
        kill_after = max(60, 3 * pipelines)
        wait_until(lambda: _writes(leader) >= kill_after, 120, interval=0.02, what="writes")
        leader.kill()
        killed = time.monotonic()
        ready_at_kill = pipelines - len(watch.pending())
        wait_until(lambda: standby.metric("its_operator_leader") == 1, 60, what="take-over")
        takeover_s = time.monotonic() - killed
        converged_s, left = watch.until_converged()
        recovery_s = time.monotonic() - killed if not left else float("inf")
        dup, dup_details = watch.duplicates(all_replicasets=True)
        writes = _writes_by_identity(audit, mark, ns)
        try:
            runs = _assert_never_interleaved(writes)
            overlapping = 0
        except AssertionError as exc:  # a run began before the previous one's last write ended
            runs, overlapping = [f"overlap: {exc}"], 1
        expected_runs = [leader.identity, standby.identity]
        interleaved = overlapping + (0 if runs == expected_runs else max(1, len(runs) - 2))
        per_identity = Counter(w[0] for w in writes)
        tails = ops.log_tails() if left or dup or interleaved else {}
    return Outcome(
        name="leader_kill_two_replicas",
        lost=len([x for x in left if "/" not in x]),
        duplicated=dup + interleaved,
        recovery_s=round(recovery_s, 3),
        details={
            "pipelines": pipelines,
            "ready_at_kill": ready_at_kill,
            "takeover_s": round(takeover_s, 2),
            "writer_runs": runs,
            "writes_by_leader": per_identity[leader.identity],
            "writes_by_standby": per_identity[standby.identity],
            "interleaved_runs": interleaved,
            "converged_after_takeover_s": round(converged_s, 2),
            "private_cluster_start_s": round(started_s, 1),
            **dup_details,
            **({"pending": left, "logs": tails} if tails else {}),
        },
    )


async def leader_kill_two_replicas(
    pipelines: int = 20, cluster: devcluster.Cluster | None = None
) -> Outcome:
    """Two replicas with leader election (10/7/2 s); the leader killed -9 during the
    N-pipeline reconcile. ``recovery_s``: kill until every pipeline converged;
    ``details.takeover_s``: kill until the standby leads."""

    def run() -> Outcome:
        with _cluster(cluster) as (c, started_s):
            return _leader_kill(pipelines, c, started_s)

    return await asyncio.to_thread(run)


# -- (3, 4) kube-apiserver or etcd killed -9 and restarted under a running operator -------


def _restart(pc: PrivateCluster, component: str, down_s: float, pipelines: int) -> Outcome:
    c = pc.cluster
    with _namespace(c) as (ns, ops):
        op = ops.start()  # production settings: leader election on, 12/8/2 s
        watch = Watch(c, ns)
        docs = [pipeline(f"p{i:03d}", SMALL) for i in range(pipelines)]
        watch.expected = {d["metadata"]["name"]: MEMORY for d in docs}
        _apply(c, ns, docs)
        initial_s, left = watch.until_converged()
        if left:
            raise RuntimeError(f"not converged before the fault: {left}\n{ops.log_tails()}")
        pid = op.proc.pid

        pc.kill(component)
        stopped = time.monotonic()
        time.sleep(max(0.0, down_s - (time.monotonic() - stopped)))
        pc.restart(component)
        procs.wait_for("kube-apiserver /readyz", c.apiserver_ready, timeout=120, interval=0.1)
        back = time.monotonic()
        down = back - stopped  # kill until the API server answers /readyz again

        # Only now can anything change: spec edits, new pipelines, a deleted child.
        changed = [d["metadata"]["name"] for d in docs[::2]]
        patch = json.dumps({"spec": {"runtime": {"resources": {"memory": CHANGED_MEMORY}}}})
        for name in changed:
            c.kubectl("patch", "analyticspipeline", name, "-n", ns, "--type=merge", "-p", patch)
        fresh = [pipeline(f"new{i:02d}", SMALL) for i in range(max(1, pipelines // 5))]
        _apply(c, ns, fresh)
        repaired = docs[1]["metadata"]["name"]
        c.kubectl("delete", "configmap", f"{repaired}-config", "-n", ns)
        watch.deleted = [("ConfigMap", f"{repaired}-config")]
        watch.expected.update({n: CHANGED_MEMORY for n in changed})
        watch.expected.update({d["metadata"]["name"]: MEMORY for d in fresh})

        watch.applied_at = watch.rolled_out_at = None
        first_s = _first_reconcile(c, ns, changed, back)
        _, left = watch.until_converged()
        applied_s = watch.applied_at - back if watch.applied_at else float("inf")
        rolled_s = watch.rolled_out_at - back if watch.rolled_out_at else float("inf")
        recovery_s = time.monotonic() - back if not left else float("inf")
        dup, dup_details = watch.duplicates(all_replicasets=False)
        same_process = op.alive() and op.proc.pid == pid
        tails = ops.log_tails() if left or dup or not same_process else {}
        retries = op.text().count("failed; will retry")  # kopf's, at ERROR level
    return Outcome(
        name=f"{component.replace('kube-', '').replace('-', '_')}_restart",
        lost=len(left),
        duplicated=dup,
        recovery_s=round(recovery_s, 3),
        details={
            "pipelines": pipelines,
            "component": component,
            "api_down_s": round(down, 2),
            "changed": len(changed),
            "created_after": len(fresh),
            "deleted_child": watch.deleted[0][1],
            "first_changed_reconciled_s": round(first_s, 3),
            "operator_applied_all_s": round(applied_s, 3),
            "deployments_rolled_out_s": round(rolled_s, 3),
            "operator_same_process": same_process,
            "initial_converge_s": round(initial_s, 2),
            "kopf_request_retries": retries,
            **dup_details,
            **({"pending": left, "logs": tails} if tails else {}),
        },
    )


def _first_reconcile(
    c: devcluster.Cluster, namespace: str, changed: list[str], since: float
) -> float:
    """Seconds from ``since`` until the operator reported one changed pipeline's new
    generation in its status (or inf after the convergence timeout)."""
    while time.monotonic() - since < CONVERGE_TIMEOUT_S:
        with contextlib.suppress(OSError):
            for name, ap in _pipelines(c, namespace).items():
                observed = (ap.get("status") or {}).get("observedGeneration")
                if name in changed and observed == ap["metadata"]["generation"] > 1:
                    return time.monotonic() - since
        time.sleep(0.1)
    return float("inf")


async def _component_restart(component: str, down_s: float, pipelines: int) -> Outcome:
    def run() -> Outcome:
        pc = PrivateCluster()
        try:
            started_s = pc.start()
            outcome = _restart(pc, component, down_s, pipelines)
        finally:
            pc.close()
        outcome.details["private_cluster_start_s"] = round(started_s, 1)
        return outcome

    return await asyncio.to_thread(run)


async def apiserver_restart(down_s: float = 10, pipelines: int = 10) -> Outcome:
    """kube-apiserver killed -9 under a running operator with N Ready pipelines and
    started again ``down_s`` later; then half the specs change, N/5 pipelines are
    created and a child is deleted. The operator must pick all of it up through its
    re-established watches, without restarting. ``recovery_s``: API server ready
    until all converged; ``details.first_changed_reconciled_s``: until the first."""
    return await _component_restart("kube-apiserver", down_s, pipelines)


async def etcd_restart(down_s: float = 10, pipelines: int = 10) -> Outcome:
    """The same with etcd killed -9 under the API server and restarted on its data
    dir; ``recovery_s`` counts from the API server's /readyz answering again."""
    return await _component_restart("etcd", down_s, pipelines)

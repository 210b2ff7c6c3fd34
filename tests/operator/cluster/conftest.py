"""Cluster fixtures: the generated CRDs installed, and the operator as a real process.

The operator runs exactly as in production (``python -m its_operator.main``) against
the local control plane, serving only the test's namespace, with peering on (each
namespace has its own KopfPeering object, so tests cannot disturb each other) and a
short peering lifetime so take-over tests stay quick. Its log is printed when a test
fails. The apiserver's audit log is how tests count the operator's writes.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from its_devenv import ports
from its_operator.api import crdgen

OPERATOR_UA = "its-operator/"
PEERING_LIFETIME_S = 10


def wait_until(
    fn: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class OperatorProcess:
    identity: str
    log: pathlib.Path
    proc: subprocess.Popen[bytes]
    metrics_port: int
    liveness_port: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class AuditLog:
    path: pathlib.Path
    _offsets: list[int] = field(default_factory=list)

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def writes(self, since: int, namespace: str, ua: str = OPERATOR_UA) -> list[dict[str, Any]]:
        """Completed write requests in ``namespace`` by user agents starting with ``ua``."""
        out = []
        with self.path.open("rb") as f:
            f.seek(since)
            for raw in f:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                ref = event.get("objectRef") or {}
                if (
                    event.get("stage") == "ResponseComplete"
                    and event.get("verb") in ("create", "update", "patch", "delete")
                    and str(event.get("userAgent", "")).startswith(ua)
                    and ref.get("namespace") == namespace
                ):
                    out.append(event)
        return out


@pytest.fixture(scope="session")
def crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(crdgen.CRD_DIR))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/analyticspipelines.its.ai",
        "crd/kopfpeerings.kopf.dev",
    )


@pytest.fixture
def audit(cluster: Any) -> AuditLog:
    return AuditLog(pathlib.Path(cluster.audit_log))


@pytest.fixture
def operator(
    cluster: Any, crds: None, namespace: str, tmp_path: pathlib.Path, request: Any
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operator processes serving ``namespace``; all are stopped afterwards."""
    started: list[OperatorProcess] = []

    def start(
        *extra: str,
        wait: bool = True,
        scope: tuple[str, ...] | None = None,
        kubeconfig: pathlib.Path | None = None,
    ) -> OperatorProcess:
        """``scope`` replaces ``--namespace <the test's>`` (e.g. ``("--all-namespaces",)``)."""
        identity = f"op-{len(started)}-{uuid.uuid4().hex[:6]}"
        metrics_port, liveness_port = ports.free_port(), ports.free_port()
        log = tmp_path / f"{identity}.log"
        config = kubeconfig or cluster.kubeconfig
        env = {**os.environ, "KUBECONFIG": str(config), "POD_NAME": identity}
        cmd = [
            sys.executable,
            "-m",
            "its_operator.main",
            *(scope or ("--namespace", namespace)),
            "--metrics-port",
            str(metrics_port),
            "--liveness-port",
            str(liveness_port),
            "--peering-lifetime",
            str(PEERING_LIFETIME_S),
            *extra,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        op = OperatorProcess(identity, log, proc, metrics_port, liveness_port)
        started.append(op)
        if wait:
            wait_until(lambda: op.healthy() or not op.alive(), 30, what="operator liveness")
            assert op.alive(), op.text()
        return op

    yield start
    failed = getattr(request.node, "rep_call", None)
    for op in started:
        op.stop()
    if failed is not None and failed.failed:
        for op in started:
            print(f"----- operator {op.identity} log -----\n{op.text()[-20000:]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: Any
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can print logs on failure."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


class Kube:
    """kubectl-based helpers bound to one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace

    def apply(self, doc: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=yaml.safe_dump(doc))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.cluster.kubectl("get", kind, name, "-n", self.ns, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", self.ns, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.cluster.kubectl(*args).stdout)["items"]
        return items

    def condition(self, name: str, ctype: str) -> dict[str, Any]:
        ap = self.get("analyticspipeline", name) or {}
        for c in (ap.get("status") or {}).get("conditions", []):
            if c["type"] == ctype:
                return dict(c)
        return {}

    def ready(self, name: str) -> bool:
        ap = self.get("analyticspipeline", name) or {}
        status = ap.get("status") or {}
        return bool(
            self.condition(name, "Ready").get("status") == "True"
            and status.get("observedGeneration") == ap["metadata"]["generation"]
        )


@pytest.fixture
def kube(cluster: Any, namespace: str) -> Kube:
    return Kube(cluster, namespace)


def pipeline(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "its.ai/v1alpha1",
        "kind": "AnalyticsPipeline",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


@pytest.fixture(name="pipeline")
def pipeline_fixture() -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    return pipeline

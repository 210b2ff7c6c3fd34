"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok fake GPU nodes, all on loopback.

Why real components and not envtest or a mock: the operator's promises (garbage
collection through ownerReferences, Deployment rollouts, scheduling against
``nvidia.com/gpu``, PodSecurity admission, RBAC, CEL validation of the CRD) are made
by these very controllers, so tests must run against them. The binaries are built
from Go modules (``build-control-plane.sh``) and cached outside the work tree.

State lives in ``.devcluster/`` (git-ignored): certificates, etcd data, logs, pid
files, the admin kubeconfig and the apiserver's audit log. ``up`` is idempotent: a
healthy cluster is reused, a broken one is stopped and started again.

The shared dev cluster listens on the fixed ports below; :class:`Ports` and
:func:`start_components` let another state dir run a second, private control plane
on other ports (``private_cluster``: fault tests that stop its API server or etcd).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

from its_devenv import certs, ports, procs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).resolve().parent / "data"
BUILD_SCRIPT = pathlib.Path(__file__).resolve().parent / "build-control-plane.sh"

ETCD_PORT = 23790
ETCD_PEER_PORT = 23800
APISERVER_PORT = 16443
KCM_PORT = 20257
SCHEDULER_PORT = 20259
SERVICE_CIDR = "10.96.0.0/16"
#: Components in start order; ``down`` stops them in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

GPU_NODES = ("gpu-node-0", "gpu-node-1")
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPUS_PER_NODE = 4


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one control plane (default: the shared dev cluster's)."""

    etcd: int = ETCD_PORT
    etcd_peer: int = ETCD_PEER_PORT
    apiserver: int = APISERVER_PORT
    kcm: int = KCM_PORT
    scheduler: int = SCHEDULER_PORT


def _log(msg: str) -> None:
    print(f"[dev-cluster] {msg}", file=sys.stderr, flush=True)


def state_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ITS_DEVCLUSTER_DIR", REPO_ROOT / ".devcluster"))


def bin_dirs() -> list[pathlib.Path]:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "print-bindir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return [pathlib.Path(p) for p in out.split(":")]


def build() -> None:
    """Build whatever binaries are missing (minutes the first time, a no-op later)."""
    subprocess.run(["bash", str(BUILD_SCRIPT), "all"], check=True)


def _which(name: str) -> str:
    for d in bin_dirs():
        if (d / name).exists():
            return str(d / name)
    raise FileNotFoundError(f"{name} is not built; run `make dev-cluster` (or {BUILD_SCRIPT})")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own words."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


@dataclass(frozen=True)
class Cluster:
    """A handle on a running local cluster: what tests and tools need to reach it."""

    root: pathlib.Path
    ports: Ports = Ports()

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> certs.Pki:
        return certs.Pki(self.root / "pki")

    @property
    def run_dir(self) -> pathlib.Path:
        return self.root / "run"

    @property
    def audit_log(self) -> pathlib.Path:
        return self.root / "audit" / "audit.log"

    @property
    def bin_dir(self) -> pathlib.Path:
        return pathlib.Path(_which("kubectl")).parent

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the Go-built kubectl against this cluster."""
        proc = subprocess.run(
            [_which("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr)
        return proc

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.cert("admin")), str(self.pki.key("admin")))
        return ctx

    def get_json(self, path: str, timeout: float = 5) -> Any:
        with urllib.request.urlopen(
            self.server + path, context=self._ssl_context(), timeout=timeout
        ) as resp:
            return json.loads(resp.read())

    def apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                self.server + "/readyz", context=self._ssl_context(), timeout=3
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def running_components(self) -> list[str]:
        return [c for c in COMPONENTS if procs.pid_of(self.run_dir / f"{c}.pid") is not None]

    def healthy(self) -> bool:
        return len(self.running_components()) == len(COMPONENTS) and self.apiserver_ready()


def _kubeconfig(cluster: Cluster, user: str) -> dict[str, Any]:
    pki = cluster.pki
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "its-dev",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki.cert(user)),
                    "client-key": str(pki.key(user)),
                },
            }
        ],
        "contexts": [{"name": "its-dev", "context": {"cluster": "its-dev", "user": user}}],
        "current-context": "its-dev",
    }


def _kubeconfig_paths(cluster: Cluster) -> dict[str, pathlib.Path]:
    return {user: cluster.root / "kubeconfigs" / f"{user}.yaml" for user in certs.CLIENTS}


def _write_kubeconfigs(cluster: Cluster) -> dict[str, pathlib.Path]:
    out = _kubeconfig_paths(cluster)
    (cluster.root / "kubeconfigs").mkdir(parents=True, exist_ok=True)
    for user, path in out.items():
        path.write_text(yaml.safe_dump(_kubeconfig(cluster, user)))
    shutil.copyfile(out["admin"], cluster.kubeconfig)
    cluster.kubeconfig.chmod(0o600)
    return out


def _argv(cluster: Cluster, component: str, kcfg: dict[str, pathlib.Path]) -> list[str]:
    pki = cluster.pki
    root = cluster.root
    p = cluster.ports
    if component == "etcd":
        return [
            _which("etcd"),
            "--name=devcluster",
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p.etcd}",
            f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-cluster=devcluster=http://127.0.0.1:{p.etcd_peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ]
    if component == "kube-apiserver":
        cluster.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return [
            _which("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p.etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={p.apiserver}",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
            "PodSecurity,DefaultStorageClass,ResourceQuota,Priority,DefaultTolerationSeconds,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            "--allow-privileged=true",
            f"--audit-policy-file={DATA / 'audit-policy.yaml'}",
            f"--audit-log-path={cluster.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",
            "--audit-log-maxbackup=1",
        ]
    if component == "kube-controller-manager":
        k = str(kcfg["controller-manager"])
        return [
            _which("kube-controller-manager"),
            f"--kubeconfig={k}",
            f"--authentication-kubeconfig={k}",
            f"--authorization-kubeconfig={k}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.kcm}",
            "--leader-elect=false",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_key}",
            "--use-service-account-credentials=true",
            "--enable-hostpath-provisioner=true",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--cert-dir={root / 'kcm-certs'}",
            # Fast sync so HPA conditions and GC show up promptly in tests.
            "--horizontal-pod-autoscaler-sync-period=5s",
            # The default client rate limit (20 QPS) makes the Deployment and ReplicaSet
            # controllers, not the operator, the bottleneck when hundreds of pipelines
            # start at once (benchmarks/operator_scale.py); raised for this one-node
            # control plane, as large clusters do.
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
        ]
    if component == "kube-scheduler":
        k = str(kcfg["scheduler"])
        return [
            _which("kube-scheduler"),
            f"--kubeconfig={k}",
            f"--authentication-kubeconfig={k}",
            f"--authorization-kubeconfig={k}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.scheduler}",
            "--leader-elect=false",
            f"--cert-dir={root / 'scheduler-certs'}",
        ]
    if component == "kwok":
        return [
            _which("kwok"),
            f"--kubeconfig={kcfg['kwok']}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--config={DATA / 'kwok-stages.yaml'}",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
        ]
    raise ValueError(component)


def gpu_node(name: str) -> dict[str, Any]:
    """A fake GPU node as a kwok-managed Node, capacity set in the create body."""
    resources = {
        "cpu": "32",
        "memory": "256Gi",
        "pods": "110",
        "ephemeral-storage": "500Gi",
        "nvidia.com/gpu": str(GPUS_PER_NODE),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": str(GPUS_PER_NODE),
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.0.{GPU_NODES.index(name) + 10}"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def schemaless_crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    """A CRD that accepts any object: a stand-in for a third party's CRD (Prometheus
    Operator, KEDA) whose real schema cannot be fetched here. It makes the kind exist,
    so API discovery, RBAC and dry runs see it; it checks no third-party schema."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


DEFAULT_STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    # kube-controller-manager's hostPath provisioner (--enable-hostpath-provisioner)
    # binds claims for real, so pods with an engine-cache PVC can schedule.
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}


def _bootstrap_objects(cluster: Cluster) -> None:
    docs = [gpu_node(n) for n in GPU_NODES] + [DEFAULT_STORAGE_CLASS]
    for doc in docs:
        name = doc["metadata"]["name"]
        kind = doc["kind"].lower()
        if cluster.kubectl("get", kind, name, check=False).returncode == 0:
            continue
        cluster.kubectl("create", "-f", "-", input=json.dumps(doc))


def _nodes_ready(cluster: Cluster) -> bool:
    nodes = cluster.get_json("/api/v1/nodes")["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
    }
    return set(GPU_NODES) <= ready


def _default_sa(cluster: Cluster) -> bool:
    cluster.get_json("/api/v1/namespaces/default/serviceaccounts/default")
    return True


COMPONENT_PORTS = {
    "etcd": ETCD_PORT,
    "etcd peer": ETCD_PEER_PORT,
    "kube-apiserver": APISERVER_PORT,
    "kube-controller-manager": KCM_PORT,
    "kube-scheduler": SCHEDULER_PORT,
}


def _check_ports_free() -> None:
    """Fail at once, and say why, when another process holds a control-plane port
    (typically a dev cluster started from another checkout, with its own certificates)."""
    busy = []
    for component, port in COMPONENT_PORTS.items():
        if ports.port_open(port):
            busy.append(f"{port} ({component})")
    if busy:
        raise RuntimeError(
            f"ports {', '.join(busy)} are in use, but not by the cluster of {state_dir()}: "
            "another checkout's dev cluster (run `make dev-cluster-down` there) or another "
            "program holds them"
        )


def up(*, quiet: bool = False) -> tuple[Cluster, bool]:
    """Start the cluster unless a healthy one runs; return it and whether we started it."""
    cluster = Cluster(state_dir())
    if cluster.healthy():
        if not quiet:
            _log(f"reusing the running cluster ({cluster.server})")
        return cluster, False
    t0 = time.monotonic()
    build()
    t_build = time.monotonic() - t0
    if cluster.running_components():
        _log("a partial cluster is running: restarting it")
        down()
    _check_ports_free()
    start_components(cluster)
    _log(
        f"cluster up in {time.monotonic() - t0:.1f}s (build/check {t_build:.1f}s); "
        f"kubeconfig {cluster.kubeconfig}"
    )
    return cluster, True


def start_component(cluster: Cluster, component: str) -> None:
    """Start one component of ``cluster`` (its certificates and kubeconfigs exist);
    wait until etcd or the apiserver answers its health check."""
    run = cluster.run_dir
    procs.start(component, _argv(cluster, component, _kubeconfig_paths(cluster)), run_dir=run)
    log = run / f"{component}.log"
    if component == "etcd":
        health = f"http://127.0.0.1:{cluster.ports.etcd}/health"
        procs.wait_for(
            "etcd",
            lambda: urllib.request.urlopen(health, timeout=2).status == 200,
            timeout=30,
            log=log,
        )
    elif component == "kube-apiserver":
        procs.wait_for("kube-apiserver", cluster.apiserver_ready, timeout=90, log=log)


def start_components(cluster: Cluster) -> None:
    """Create ``cluster.root``'s certificates and kubeconfigs, start every component
    on ``cluster.ports`` and wait until the fake GPU nodes are Ready."""
    cluster.root.mkdir(parents=True, exist_ok=True)
    certs.ensure_pki(cluster.root / "pki")
    _write_kubeconfigs(cluster)
    run = cluster.run_dir
    for component in COMPONENTS:
        start_component(cluster, component)
    procs.wait_for(
        "default ServiceAccount (kube-controller-manager)",
        lambda: _default_sa(cluster),
        timeout=60,
        log=run / "kube-controller-manager.log",
    )
    _bootstrap_objects(cluster)
    procs.wait_for(
        "fake GPU nodes Ready (kwok)",
        lambda: _nodes_ready(cluster),
        timeout=60,
        log=run / "kwok.log",
    )


def down() -> list[str]:
    """Stop every component this state dir started, by pid file; return what ran."""
    run = state_dir() / "run"
    stopped = [c for c in reversed(COMPONENTS) if procs.stop(c, run_dir=run)]
    return stopped


def reset_data() -> None:
    """Forget the cluster's contents (etcd data, audit log); keep certificates."""
    down()
    root = state_dir()
    for sub in ("etcd", "audit"):
        shutil.rmtree(root / sub, ignore_errors=True)

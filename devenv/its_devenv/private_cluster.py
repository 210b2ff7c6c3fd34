"""A private control plane: the dev cluster's components on free ports in a temp dir.

The shared dev cluster (:mod:`its_devenv.cluster`) serves every test at once, so a
test must never stop its API server or etcd. A fault test that does starts one of
these instead: the same binaries, flags, certificates and bootstrap objects (fake GPU
nodes, default StorageClass) through :func:`cluster.start_components`, only with its
own :class:`cluster.Ports` and state dir, and the project's CRDs installed. It has
its own audit log, so a test can read every write made to it.

:meth:`PrivateCluster.kill` and :meth:`PrivateCluster.restart` stop and start one
component (``kill -9``, then the same argv on the same data dir), which is what the
control-plane fault scenarios (``tests/faults/control_plane.py``) do to etcd and
kube-apiserver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

from its_devenv import cluster as devcluster
from its_devenv import ports, procs

CRD_DIR = devcluster.REPO_ROOT / "crds"


def free_ports() -> devcluster.Ports:
    """Five distinct loopback ports nothing listens on now."""
    picked: list[int] = []
    while len(picked) < 5:
        port = ports.free_port()
        if port not in picked:
            picked.append(port)
    etcd, peer, apiserver, kcm, scheduler = picked
    return devcluster.Ports(etcd, peer, apiserver, kcm, scheduler)


def install_crds(c: devcluster.Cluster) -> None:
    """The project's CRDs (``crds/``), applied and Established."""
    c.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRD_DIR))
    c.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/analyticspipelines.its.ai",
        "crd/kopfpeerings.kopf.dev",
    )


class PrivateCluster:
    """One private control plane; :meth:`start` it, :meth:`close` it (removes its dir)."""

    def __init__(self, root: pathlib.Path | None = None) -> None:
        self.root = root or pathlib.Path(tempfile.mkdtemp(prefix="its-private-cp-"))
        self.cluster = devcluster.Cluster(self.root, free_ports())

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.cluster.kubeconfig

    def start(self) -> float:
        """Start every component and install the CRDs; return the seconds it took."""
        t0 = time.monotonic()
        busy = [p for p in dataclasses.astuple(self.cluster.ports) if ports.port_open(p)]
        if busy:
            raise RuntimeError(f"ports {busy} were free a moment ago and are taken now")
        devcluster.start_components(self.cluster)
        install_crds(self.cluster)
        return time.monotonic() - t0

    def pid(self, component: str) -> int | None:
        return procs.pid_of(self.cluster.run_dir / f"{component}.pid")

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` (default: kill -9) to ``component`` and wait until it is gone."""
        pid = self.pid(component)
        if pid is None:
            raise RuntimeError(f"{component} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        procs.wait_for(
            f"{component} to exit",
            lambda: self.pid(component) is None,
            timeout=60,
            interval=0.05,
        )

    def restart(self, component: str) -> None:
        """Start ``component`` again with its argv (same data dir, same ports); for
        etcd and kube-apiserver, return once it answers its health check."""
        if self.pid(component) is not None:
            raise RuntimeError(f"{component} is still running")
        devcluster.start_component(self.cluster, component)

    def close(self) -> None:
        run = self.cluster.run_dir
        for component in reversed(devcluster.COMPONENTS):
            procs.stop(component, run_dir=run)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private control plane, stopped and removed on leaving the block."""
    pc = PrivateCluster()
    try:
        pc.start()
        yield pc
    finally:
        pc.close()

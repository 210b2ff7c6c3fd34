"""Runtime replicas of one pipeline, played by local ``its-runtime`` processes.

What a Deployment's pods would get from the cluster, each replica gets here: its own
pod name and namespace (the downward-API variables), the pipeline's ServiceAccount
token (a kubeconfig holding only that token, so the Lease RBAC is really exercised),
the rendered config with its own listening port, and one journal root shared by all
replicas (the shared journal volume). Used by the scale-out tests, the benchmark and
``make demo``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from its_devenv import cluster as devcluster
from its_devenv import localrun, procs
from its_operator.builders import rbac

#: The runtime's Role, exactly as the operator grants it.
LEASE_RULE = rbac.LEASE_RULE


def runtime_identity(
    c: devcluster.Cluster, namespace: str, account: str, kubeconfig: pathlib.Path
) -> pathlib.Path:
    """A ServiceAccount with the runtime's Lease Role, and a kubeconfig with its token
    (what the operator creates for a pipeline whose pods are not run by kwok here)."""
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account},
            "rules": [LEASE_RULE],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": account,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]
    for doc in docs:
        c.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(doc))
    return localrun.service_account_kubeconfig(c, kubeconfig, namespace=namespace, name=account)


@dataclass
class Replica:
    """One runtime "pod": a detached ``its-runtime`` process with a pod identity."""

    name: str
    port: int
    run_dir: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> pathlib.Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return procs.pid_of(self.run_dir / f"{self.name}.pid")

    def signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def get(self, path: str, timeout: float = 3.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.load(resp)

    def text(self, path: str, timeout: float = 3.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            body: bytes = resp.read()
        return body.decode()

    def ownership(self) -> dict[str, Any] | None:
        """``/v1/ownership``, or None while the process does not answer."""
        try:
            out: dict[str, Any] = self.get("/v1/ownership")
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return out

    def ready(self) -> bool:
        try:
            return bool(self.get("/ready").get("ready"))
        except urllib.error.HTTPError:
            return False
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (as a rollout or scale-down does), SIGKILL after ``timeout``."""
        procs.stop(self.name, run_dir=self.run_dir, timeout=timeout)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def start(
    name: str,
    config_yaml: str,
    *,
    port: int,
    run_dir: pathlib.Path,
    namespace: str,
    kubeconfig: pathlib.Path | None,
    env: dict[str, str] | None = None,
) -> Replica:
    """Start a replica named ``name`` (its pod name) from a rendered runtime config."""
    from its_runtime import config as rc

    cfg = rc.RuntimeConfig.from_yaml(config_yaml)
    mapped = cfg.model_copy(
        update={"server": cfg.server.model_copy(update={"host": "127.0.0.1", "port": port})}
    )
    path = run_dir / f"{name}.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(rc.RuntimeConfig.model_validate(mapped.model_dump()).to_yaml())
    full = dict(env or {})
    full.update({rc.POD_NAME_ENV: name, rc.POD_NAMESPACE_ENV: namespace})
    if kubeconfig is not None:
        full["KUBECONFIG"] = str(kubeconfig)
    procs.start(name, localrun.runtime_argv(path), run_dir=run_dir, env=full)
    return Replica(name, port, run_dir)


def holders(replicas: list[Replica]) -> dict[str, str]:
    """camera -> the replica that runs it now, from every replica's ``/v1/ownership``;
    raises if two replicas both run one camera."""
    out: dict[str, str] = {}
    for r in replicas:
        view = r.ownership()
        if view is None:
            continue
        for cam in view.get("running", []):
            if cam in out:
                raise AssertionError(f"camera {cam} runs on both {out[cam]} and {r.name}")
            out[cam] = r.name
    return out

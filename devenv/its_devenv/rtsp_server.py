"""A real RTSP camera for tests and the demo: GStreamer's rtsp-server serving a file.

It runs as its own process under the Debian interpreter (``/usr/bin/python3``), which
is where ``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0`` are installed; the project's
interpreter need not have ``gi`` at all, so this file imports nothing of the project
and is run by path, not as a module (:mod:`its_devenv.rtsp` does that). A caller
starts it, reads the ``READY <port>`` line, points a camera at
``rtsp://127.0.0.1:<port>/cam`` and kills the process to simulate a camera that goes
away. Every client gets its own pipeline (not shared), so each connection plays the
file from its start at its native rate: the ground truth of the generated video stays
aligned with what the client sees.

Usage: rtsp_server.py FILE.ts [PORT]   (PORT 0 or absent: any free port)
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    path = sys.argv[1]
    port = sys.argv[2] if len(sys.argv) > 2 else "0"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{path}" ! tsdemux ! h264parse config-interval=-1 '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print("FAILED to bind", flush=True)
        sys.exit(1)
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()

"""Loopback ports: the one place that asks whether a port is taken or picks a free one.

The dev cluster, the services, the demo, the tests and the benchmarks all run servers
on 127.0.0.1; they share these two questions instead of each opening its own socket.
"""

from __future__ import annotations

import socket


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

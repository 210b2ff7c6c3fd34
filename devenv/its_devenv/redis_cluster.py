"""A real Redis Cluster on loopback: three masters, no replicas, for the L2 cache tests.

``redis-server --cluster-enabled yes`` processes on free loopback ports, each with its
own directory (``nodes.conf``, log) under a temporary root, joined by ``redis-cli
--cluster create ... --cluster-replicas 0``. No persistence (``--save ''``,
``--appendonly no``): the tests care about topology and failures, not data.

Failures are real too: :meth:`RedisCluster.kill` SIGKILLs one node (its slots then have
no owner; after ``cluster-node-timeout`` the others say ``cluster_state:fail`` and
answer ``CLUSTERDOWN``), :meth:`RedisCluster.pause` SIGSTOPs one (a hung node: clients
wait for their timeouts), :meth:`RedisCluster.restart` brings a killed one back with the
same ``nodes.conf`` (same identity and slots, so the cluster heals),
:meth:`RedisCluster.stop` kills them all. The node timeout is short by default so a
test sees the failure within a second or two instead of the server's 15 s.

The servers are children of the calling process (not detached like the shared
services of :mod:`its_devenv.services`): they belong to one test and die with it.
"""

from __future__ import annotations

import contextlib
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from redis.crc import key_slot

from its_devenv import procs
from its_devenv.ports import port_open

#: Redis' cluster bus listens on the client port + 10000.
BUS_OFFSET = 10000


def binaries() -> tuple[str, str]:
    """``redis-server`` and ``redis-cli``; both ship with Debian's ``redis-server``."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise FileNotFoundError(
            "redis-server and redis-cli are needed: apt-get install redis-server"
        )
    return server, cli


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_node_ports(n: int, *, avoid: frozenset[int] = frozenset()) -> list[int]:
    """``n`` distinct ports whose cluster-bus ports (port + 10000) are free as well."""
    rng = random.Random()
    out: list[int] = []
    for _ in range(1000):
        port = rng.randrange(20000, 30000)
        taken = {*out, *(p + BUS_OFFSET for p in out), *avoid}
        if port in taken or port + BUS_OFFSET in taken:
            continue
        if _free(port) and _free(port + BUS_OFFSET):
            out.append(port)
            if len(out) == n:
                return out
    raise RuntimeError(f"no {n} free port pairs for redis cluster nodes")


@dataclass
class RedisCluster:
    """Handle of a running cluster; :func:`running` starts one and stops it after."""

    root: pathlib.Path
    ports: list[int]
    node_timeout_ms: int = 1000
    _procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _paused: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        """A startup node's URL (any node would do: the client discovers the others)."""
        return self.url_of(self.ports[0])

    def url_of(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    # -- processes --------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        node = self.root / str(port)
        cluster = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
        ]  # fmt: skip
        self._procs[port] = _server(node, port, cluster)

    def start(self) -> None:
        """Start every node, create the cluster and wait for ``cluster_state:ok``."""
        _, cli = binaries()
        for port in self.ports:
            self._spawn(port)
        proc = subprocess.run(
            [
                cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {proc.stdout}{proc.stderr}")
        self.wait_state("ok")

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash (no goodbye to clients or to the other nodes)."""
        proc = self._procs.pop(port)
        self._paused.discard(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def pause(self, port: int) -> None:
        """SIGSTOP one node: it hangs (the kernel still accepts connections, nothing
        answers), so a client waits for its socket timeout instead of being refused."""
        self._procs[port].send_signal(signal.SIGSTOP)
        self._paused.add(port)

    def resume(self, port: int) -> None:
        self._procs[port].send_signal(signal.SIGCONT)
        self._paused.discard(port)

    def restart(self, port: int, *, wait: bool = True) -> None:
        """Start a killed node again from its ``nodes.conf`` (same identity and slots);
        with ``wait``, until the cluster has healed (every running node says ok)."""
        self._spawn(port)
        if wait:
            self.wait_state("ok")

    def stop(self) -> None:
        for port in list(self._procs):
            self.kill(port)

    # -- inspection -------------------------------------------------------------------

    def cli(self, port: int, *args: str) -> str:
        _, cli = binaries()
        return subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def info(self, port: int | None = None) -> dict[str, str]:
        """``CLUSTER INFO`` of a node (by default the first one still running)."""
        port = port if port is not None else self._any_running()
        out: dict[str, str] = {}
        for line in self.cli(port, "cluster", "info").splitlines():
            key, _, value = line.strip().partition(":")
            if key:
                out[key] = value
        return out

    def _any_running(self) -> int:
        for port in self.ports:
            if port in self._procs and port not in self._paused:
                return port
        raise RuntimeError("no node of the redis cluster is running")

    def wait_state(self, state: str, *, timeout: float = 30.0) -> None:
        """Until every running (not paused) node reports ``cluster_state:<state>``."""
        procs.wait_for(
            f"redis cluster state {state}",
            lambda: all(
                self.info(p).get("cluster_state") == state
                for p in self._procs
                if p not in self._paused
            ),
            timeout=timeout,
            interval=0.1,
        )

    def owners(self, keys: Iterable[str]) -> dict[str, int]:
        """The port of the node that owns each key's slot (from one ``CLUSTER NODES``)."""
        spans: list[tuple[int, int, int]] = []
        for line in self.cli(self._any_running(), "cluster", "nodes").splitlines():
            parts = line.split()  # id host:port@bus flags master ping pong epoch link slots...
            for span in parts[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit():
                    port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                    spans.append((int(lo), int(hi or lo), port))
        out: dict[str, int] = {}
        for key in keys:
            slot = key_slot(key.encode())
            owner = next((port for lo, hi, port in spans if lo <= slot <= hi), None)
            if owner is None:
                raise LookupError(f"no node owns the slot of {key!r}")
            out[key] = owner
        return out

    def alive(self, port: int) -> bool:
        """Whether the node on ``port`` runs (started here, not killed) and listens."""
        return port in self._procs and port_open(port)


def _server(node: pathlib.Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    """A ``redis-server`` child on ``127.0.0.1:port`` with its files in ``node``; returns
    once it answers ``PING``."""
    server, cli = binaries()
    node.mkdir(parents=True, exist_ok=True)
    argv = [
        server,
        "--port", str(port),
        "--bind", "127.0.0.1",
        *extra,
        "--dir", str(node),
        "--save", "",
        "--appendonly", "no",
        "--logfile", str(node / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    ping = [cli, "-h", "127.0.0.1", "-p", str(port), "ping"]

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
        reply = subprocess.run(ping, capture_output=True, text=True, timeout=5).stdout
        return reply.strip() == "PONG"

    try:
        procs.wait_for(
            f"redis-server on port {port}",
            answers,
            timeout=15,
            log=node / "redis.log",
            interval=0.05,
        )
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc


@contextlib.contextmanager
def running(
    root: pathlib.Path | None = None, *, nodes: int = 3, node_timeout_ms: int = 1000
) -> Iterator[RedisCluster]:
    """A started cluster of ``nodes`` masters under ``root`` (default: a new temporary
    directory, removed after); every node is killed on exit."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="its-rc-")))
        cluster = RedisCluster(root, free_node_ports(nodes), node_timeout_ms)
        stack.callback(cluster.stop)
        cluster.start()
        yield cluster


@contextlib.contextmanager
def standalone(root: pathlib.Path) -> Iterator[str]:
    """A plain (non-cluster) ``redis-server`` of one's own, for the wrong-topology case;
    yields its URL and kills it on exit (never the shared one of :mod:`.services`)."""
    port = free_node_ports(1)[0]
    proc = _server(root / f"standalone-{port}", port, [])
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)

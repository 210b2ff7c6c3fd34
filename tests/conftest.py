"""Shared fixtures: the real local control plane and real PostgreSQL/Redis.

Both are reused when already running (``make dev-cluster`` / ``make services``) and
otherwise started here and stopped at the end of the session, through the same code
the Makefile uses (``its_devenv``). Each test gets a fresh namespace or database, so
tests never see each other's objects.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from its_devenv import cluster as devcluster
from its_devenv import localrun, private_cluster
from its_devenv import services as devservices

KEEP = os.environ.get("ITS_KEEP_SERVICES") == "1"

#: A test that uses one of these fixtures (directly or through another fixture) gets the
#: marker, so ``make check`` (``-m "not cluster and not services and not slow"``) selects
#: the fast tests by what they really need rather than by hand-kept lists.
_MARKER_BY_FIXTURE = {
    "cluster": "cluster",
    "services": "services",
    "rtsp_server": "services",
    "serve": "slow",
    "redis_cluster": "slow",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they need; skip ``gpu`` tests where CUDA is absent.

    One rule for the ``gpu`` marker: a test marked ``gpu`` runs only with a CUDA device
    and is skipped elsewhere with the reason shown (``-ra``), so no test writes its own
    skip. torch is imported only when a ``gpu`` test was collected.
    """
    cuda: bool | None = None
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARKER_BY_FIXTURE.items():
            if fixture in names:
                item.add_marker(marker)
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                import torch

                cuda = bool(torch.cuda.is_available())
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="gpu: needs a CUDA device"))


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, past pytest's output capture."""
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        if reporter:
            reporter.write_line(f"\n{line}")


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[devcluster.Cluster]:
    """The shared dev cluster; a private control plane while a cluster-wide operator
    (``make demo``'s) acts on the shared one.

    A cluster-wide installation reconciles every namespace no namespaced installation
    holds, the tests' namespaces too, so beside ``make demo`` the tests would meet the
    demo's writes (and it theirs). The session then runs on its own control plane (the
    same binaries, ~6 s to start) and leaves the demo alone.
    """
    c, started = devcluster.up(quiet=True)
    acting = localrun.live_cluster_wide_operators(c)
    if acting:
        _say(
            pytestconfig,
            f"a cluster-wide operator acts on the shared dev cluster ({'; '.join(acting)}), "
            "e.g. make demo's: this session's tests use a private control plane instead",
        )
        with private_cluster.private_cluster() as pc:
            yield pc.cluster
    else:
        yield c
    if started and not KEEP:
        devcluster.down()


@pytest.fixture(scope="session")
def k8s_api(cluster: devcluster.Cluster) -> Iterator[object]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    yield api
    api.close()


@pytest.fixture
def namespace(cluster: devcluster.Cluster, k8s_api: object) -> Iterator[str]:
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(k8s_api)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"its-test": "1"}))
    )
    yield name
    with contextlib.suppress(Exception):
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def services() -> Iterator[devservices.Services]:
    svc, started = devservices.up(quiet=True)
    yield svc
    if started and not KEEP:
        devservices.down()


@pytest.fixture
def pg_dsn(services: devservices.Services) -> Iterator[str]:
    """A fresh, empty database for one test (the server may be stopped by the test)."""
    services.start_postgres()
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = services.create_database(name)
    yield dsn
    services.start_postgres()
    services.drop_database(name)


@pytest.fixture
def redis_url(services: devservices.Services) -> str:
    """The Redis URL, flushed; the server is (re)started if a previous test stopped it."""
    import socket

    services.start_redis()
    with socket.create_connection(("127.0.0.1", devservices.REDIS_PORT), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        s.recv(64)
    return services.redis_url

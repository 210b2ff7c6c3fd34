"""The operator process (``its-operator``): settings, leader election, probes, metrics, kopf.

Everything process-level is decided here and nowhere else: which namespaces are
served (``--namespace`` repeatable, or ``--all-namespaces``), leader election (a
``coordination.k8s.io/v1`` Lease per scope, on by default, so several replicas and
overlapping installations can run and only one acts on a namespace: see
:mod:`handlers.leadership`; ``--standalone`` for one replica), the liveness
endpoint (kopf's, answering from the event loop, so a wedged loop fails it),
Prometheus metrics, and watch settings that survive a silently dropped connection:
the server ends each watch after ``server_timeout``, the client gives up after
``client_timeout``, and kopf reconnects when no event (bookmarks included) arrives
within its inactivity timeout. A watch that fails while the API server is away
(restarted, or its etcd is) is retried every 2 s, so it is back within about 2 s of
the server (kopf's default backoff grows to 21 s between tries).

kopf's own Kubernetes Events from log lines are turned off: the operator posts its
own, on condition transitions only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any, cast

import kopf
import prometheus_client
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from its_operator.handlers import camera_leases, election, kube, registration
from its_runtime import redaction

logger = logging.getLogger("its_operator")
WATCH_SERVER_TIMEOUT_S = 270
WATCH_CLIENT_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 60


class UnboundedBackoffs:
    """Delays between kopf's tries of a failed API request, its watch requests included:
    ``first_s``, then ``every_s`` for ever. kopf escalates only once its backoffs run out
    (and it takes any iterable); a bounded list lets an outage outlast a watch: on a
    5xx from an API server whose etcd is gone, the escalated error ends that resource's
    watcher while the operator runs on, reconciling nothing (the watcher is not
    restarted). Capped at a few seconds because the delay also bounds how long the
    watches stay dead after the API server is back. Reiterable: one sequence per
    request."""

    def __init__(self, first_s: float, every_s: float) -> None:
        self.first_s = first_s
        self.every_s = every_s

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((self.first_s,), itertools.repeat(self.every_s))


ERROR_BACKOFFS = UnboundedBackoffs(first_s=1.0, every_s=2.0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="its-operator", description="Reconciles its.ai/v1alpha1 AnalyticsPipelines."
    )
    scope = ap.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", help="serve this namespace"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="serve the whole cluster"
    )
    ap.add_argument("--standalone", action="store_true", help="no leader election (single replica)")
    ap.add_argument(
        "--lease-name",
        "--peering-name",
        default=os.environ.get("ITS_OPERATOR_LEASE_NAME", "its-operator"),
        help="leader-election Lease name (in each served namespace, or --lease-namespace)",
    )
    ap.add_argument(
        "--lease-namespace",
        default=os.environ.get("ITS_OPERATOR_LEASE_NAMESPACE")
        or os.environ.get("POD_NAMESPACE")
        or "its-system",
        help="where a cluster-wide installation's Lease lives (default: its own namespace)",
    )
    timing = election.Timing()
    for flag, env, default, what in (
        ("--lease-duration", "LEASE_DURATION", timing.lease_duration, "a standby waits"),
        ("--renew-deadline", "RENEW_DEADLINE", timing.renew_deadline, "the leader stops"),
        ("--retry-period", "RETRY_PERIOD", timing.retry_period, "between tries"),
    ):
        ap.add_argument(
            flag,
            type=float,
            default=float(os.environ.get(f"ITS_OPERATOR_{env}", default)),
            help=f"seconds {what} (client-go default {default:g}; env ITS_OPERATOR_{env})",
        )
    # Accepted so older command lines keep working; kopf peering is gone.
    ap.add_argument("--priority", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peering-lifetime", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--liveness-port", type=int, default=8080, help="0 disables /healthz")
    ap.add_argument("--metrics-port", type=int, default=8081, help="0 disables /metrics")
    ap.add_argument("--workers", type=int, default=8, help="concurrent reconciles")
    ap.add_argument("--resync-seconds", type=float, default=300.0, help="periodic full resync")
    ap.add_argument(
        "--coalesce-ms", type=float, default=200.0, help="fold a pipeline's events within this"
    )
    ap.add_argument(
        "--lease-poll-seconds",
        type=float,
        default=camera_leases.POLL_SECONDS,
        help="how often the runtime's membership Leases are listed (status.cameras)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.lease_poll_seconds <= 0:
        ap.error("--lease-poll-seconds must be positive")
    try:
        args.timing = election.Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as exc:
        ap.error(str(exc))
    return args


def _api_client(pool: int) -> k8s_client.ApiClient:
    configuration = k8s_client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool
    return k8s_client.ApiClient(configuration)


def settings_for(args: argparse.Namespace) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.error_backoffs = ERROR_BACKOFFS
    # Leader election is the operator's own Lease; kopf's handlers here never write.
    settings.peering.standalone = True
    settings.peering.mandatory = False
    return settings


async def run(args: argparse.Namespace) -> None:
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}"
    client = kube.Kube(
        _api_client(pool=args.workers * 2 + 4), threads=args.workers * 2, identity=identity
    )
    # The election has its own connections (never queued behind reconciles' requests,
    # which could make a healthy leader miss its renew deadline) and its own user
    # agent, so Lease renewals are told apart from reconcile writes in the audit log.
    elector = kube.Kube(_api_client(pool=4), threads=4)
    elector.api.user_agent = f"{election.USER_AGENT} ({identity})"
    options = registration.Options(
        namespaces=None if args.all_namespaces else list(args.namespaces),
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        coalesce_seconds=args.coalesce_ms / 1000.0,
        lease_name=None if args.standalone else args.lease_name,
        lease_namespace=args.lease_namespace,
        timing=args.timing,
        identity=identity,
        lease_poll_seconds=args.lease_poll_seconds,
    )
    settings = settings_for(args)
    operator = registration.Operator(client, options, election_client=elector)
    operator.configure(settings)
    registry = kopf.OperatorRegistry()
    operator.register(registry)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers.
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    @kopf.on.probe(id="queue", registry=registry)
    def queue_probe(**_: Any) -> dict[str, Any]:
        return {"queued": len(operator.queue), "acting": operator.gate.is_open}

    logger.info(
        "starting: %s, identity %s, %s",
        "all namespaces" if args.all_namespaces else f"namespaces {args.namespaces}",
        identity,
        "standalone" if args.standalone else f"leader election on Lease {args.lease_name!r}",
    )
    await kopf.operator(
        registry=registry,
        settings=settings,
        clusterwide=bool(args.all_namespaces),
        namespaces=[] if args.all_namespaces else list(args.namespaces),
        identity=cast(Any, identity),  # kopf types it as its own NewType
        standalone=True,
        liveness_endpoint=(
            f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    logging.getLogger("its_operator").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:  # one INFO line per handled watch event is noise at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # No log line, and no Event kopf posts from its object logger, quotes a URL's password.
    redaction.install()
    redaction.install(logging.getLogger("kopf.objects"), hooks=False)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

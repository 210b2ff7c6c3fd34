"""The operator process (``its-operator``): settings, peering, probes, metrics, kopf.

Everything process-level is decided here and nowhere else: which namespaces are
served (``--namespace`` repeatable, or ``--all-namespaces``), peering (on by
default, so several replicas can run and only one acts; ``--standalone`` for one
replica), the liveness endpoint (kopf's, answering from the event loop, so a wedged
loop fails it), Prometheus metrics, and watch settings that survive a silently
dropped connection: the server ends each watch after ``server_timeout``, the client
gives up after ``client_timeout``, and kopf reconnects when no event (bookmarks
included) arrives within its inactivity timeout.

kopf's own Kubernetes Events from log lines are turned off: the operator posts its
own, on condition transitions only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, cast

import kopf
import prometheus_client
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from its_operator.handlers import camera_leases, kube, leadership, registration

logger = logging.getLogger("its_operator")
WATCH_SERVER_TIMEOUT_S = 270
WATCH_CLIENT_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 60


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
    ap.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    ap.add_argument("--peering-name", default="its-operator", help="peering object name")
    ap.add_argument(
        "--priority", type=int, default=None, help="peering priority (default: start time, ms)"
    )
    ap.add_argument(
        "--peering-lifetime",
        type=int,
        default=30,
        help="seconds before a silent peer counts as dead (keep-alives come a bit sooner)",
    )
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
    if args.peering_lifetime < 10:
        ap.error("--peering-lifetime must be at least 10 seconds")
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


def settings_for(args: argparse.Namespace, priority: int) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.peering.lifetime = args.peering_lifetime
    settings.peering.stealth = True
    settings.peering.priority = priority
    settings.peering.name = args.peering_name
    settings.peering.standalone = args.standalone
    settings.peering.mandatory = not args.standalone
    settings.peering.clusterwide = bool(args.all_namespaces)
    return settings


async def ensure_peering(client: kube.Kube, args: argparse.Namespace) -> None:
    """Create the peering object(s) if missing: kopf does not, and would wait forever."""
    targets: list[tuple[str, str | None]] = (
        [("ClusterKopfPeering", None)]
        if args.all_namespaces
        else [("KopfPeering", ns) for ns in args.namespaces]
    )
    for kind, ns in targets:
        if await client.get(leadership.PEERING_API_VERSION, kind, ns, args.peering_name):
            continue
        metadata: dict[str, Any] = {"name": args.peering_name}
        if ns:
            metadata["namespace"] = ns
        try:
            await client.create(
                {"apiVersion": leadership.PEERING_API_VERSION, "kind": kind, "metadata": metadata}
            )
        except kube.ApiError as exc:
            raise SystemExit(
                f"cannot create {kind} {args.peering_name!r}: {exc.message}. Install "
                "crds/kopf.dev_peerings.yaml, or run with --standalone."
            ) from None


async def run(args: argparse.Namespace) -> None:
    priority = args.priority if args.priority is not None else leadership.default_priority()
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}/{priority}"
    client = kube.Kube(
        _api_client(pool=args.workers * 2 + 4), threads=args.workers * 2, identity=identity
    )
    if not args.standalone:
        await ensure_peering(client, args)
    options = registration.Options(
        namespaces=None if args.all_namespaces else list(args.namespaces),
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        coalesce_seconds=args.coalesce_ms / 1000.0,
        peering_name=None if args.standalone else args.peering_name,
        identity=identity,
        priority=priority,
        lease_poll_seconds=args.lease_poll_seconds,
    )
    settings = settings_for(args, priority)
    operator = registration.Operator(client, options)
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
        "starting: %s, identity %s, priority %d",
        "all namespaces" if args.all_namespaces else f"namespaces {args.namespaces}",
        identity,
        priority,
    )
    await kopf.operator(
        registry=registry,
        settings=settings,
        clusterwide=bool(args.all_namespaces),
        namespaces=[] if args.all_namespaces else list(args.namespaces),
        identity=cast(Any, identity),  # kopf types it as its own NewType
        standalone=args.standalone,
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
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``its-devenv``: the commands behind ``make dev-cluster``, ``make services`` and friends.

One entry point so the Makefile, the README and the pytest fixtures drive the very
same code paths.
"""

from __future__ import annotations

import argparse
import sys

from its_devenv import cluster, services


def _cluster(action: str) -> int:
    if action == "build":
        cluster.build()
    elif action == "up":
        c, _ = cluster.up()
        print(f"export KUBECONFIG={c.kubeconfig}")
        print(f"export PATH={c.bin_dir}:$PATH  # the Go-built kubectl")
    elif action == "down":
        stopped = cluster.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif action == "reset":
        cluster.reset_data()
        print("cluster stopped and its data removed")
    elif action == "status":
        c = cluster.Cluster(cluster.state_dir())
        running = c.running_components()
        print(f"running: {', '.join(running) or 'none'}; apiserver ready: {c.apiserver_ready()}")
        return 0 if c.healthy() else 1
    return 0


def _services(action: str) -> int:
    if action == "up":
        svc, _ = services.up(quiet=True)
        print(f"export ITS_DATABASE_DSN={svc.postgres_dsn}")
        print(f"export ITS_REDIS_URL={svc.redis_url}")
    elif action == "down":
        services.down()
        print("PostgreSQL and Redis stopped")
    elif action == "status":
        svc = services.Services(services.state_dir())
        pg, rd = svc.postgres_running(), svc.redis_running()
        print(f"postgres: {'up' if pg else 'down'}; redis: {'up' if rd else 'down'}")
        return 0 if pg and rd else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="its-devenv", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cluster", help="the local Kubernetes control plane")
    c.add_argument("action", choices=["build", "up", "down", "reset", "status"])
    s = sub.add_parser("services", help="local PostgreSQL and Redis")
    s.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    if args.what == "cluster":
        return _cluster(args.action)
    return _services(args.action)


if __name__ == "__main__":
    sys.exit(main())

"""Real PostgreSQL and Redis servers from Debian's packages, on loopback.

No fakeredis and no SQLite: the data plane's promises (binary COPY, advisory-lock
migrations, reconnects after an outage) only mean something against the real
servers. Tests stop and start them mid-run to prove that nothing is lost, so the
handle offers ``stop_postgres``/``start_postgres`` and the same for Redis, on fixed
ports so clients reconnect to the same address.

Data lives in ``.services/`` (git-ignored). PostgreSQL refuses to run as root, so
it runs as the ``postgres`` system user that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass

from its_devenv import ports, procs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The data directory of the PostgreSQL that ``stop_postgres`` last stopped, so that
#: ``start_postgres`` brings back the same server (and its databases) even when it was
#: started by another checkout (a dev's ``make services`` reused by tests).
_STOPPED_DATA_DIR: dict[int, pathlib.Path] = {}
PG_PORT = int(os.environ.get("ITS_PG_PORT", "15432"))
REDIS_PORT = int(os.environ.get("ITS_REDIS_PORT", "16379"))
PG_USER = "its"


def _log(msg: str) -> None:
    print(f"[services] {msg}", file=sys.stderr, flush=True)


def state_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ITS_SERVICES_DIR", REPO_ROOT / ".services"))


def pg_bin_dir() -> pathlib.Path:
    base = pathlib.Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in base.glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError("PostgreSQL is not installed: apt-get install postgresql")
    return versions[-1]


#: PostgreSQL's files when the checkout is closed to the `postgres` user.
PG_FALLBACK_ROOT = pathlib.Path("/var/tmp/its-analytics")


def _open_to_others(path: pathlib.Path) -> bool:
    """Every folder above ``path`` lets other users pass (``o+x``)."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in path.resolve().parents)


def _run_as_postgres(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    user = "postgres" if os.geteuid() == 0 else None
    kw.setdefault("cwd", "/")  # the checkout may not be readable by `postgres`
    return subprocess.run(argv, user=user, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Services:
    root: pathlib.Path

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{PG_PORT}/its"

    def postgres_dsn_for(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{PG_PORT}/{database}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{REDIS_PORT}/0"

    @property
    def pg_root(self) -> pathlib.Path:
        """Where PostgreSQL keeps its files: ``.services/pg`` when the `postgres` user
        can reach it, else a per-checkout folder under /var/tmp (a checkout inside a
        private folder, such as one made by ``mktemp -d``, is closed to other users)."""
        inside = self.root / "pg"
        if os.geteuid() != 0 or _open_to_others(self.root):
            return inside
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return PG_FALLBACK_ROOT / f"pg-{digest}"

    @property
    def pg_data(self) -> pathlib.Path:
        return self.pg_root / "data"

    @property
    def run_dir(self) -> pathlib.Path:
        return self.root / "run"

    # -- PostgreSQL -------------------------------------------------------------------
    def postgres_running(self) -> bool:
        return ports.port_open(PG_PORT) and self.psql("SELECT 1", check=False).returncode == 0

    def _init_postgres(self) -> None:
        if (self.pg_data / "PG_VERSION").exists():
            return
        self.pg_data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            if PG_FALLBACK_ROOT in self.pg_root.parents:
                os.chmod(PG_FALLBACK_ROOT, 0o755)
            for p in (self.pg_root, self.pg_data):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        proc = _run_as_postgres(
            [
                str(pg_bin_dir() / "initdb"),
                "-D",
                str(self.pg_data),
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stderr}")

    def start_postgres(self) -> None:
        if self.postgres_running():
            return
        data = _STOPPED_DATA_DIR.pop(PG_PORT, None)
        if data is None or not (data / "PG_VERSION").exists():
            self._init_postgres()
            data = self.pg_data
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={PG_PORT} "
            f"-c unix_socket_directories={data} -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = data.parent / "postgres.log"
        proc = _run_as_postgres(
            [
                str(pg_bin_dir() / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {proc.stderr}\n{tail}")
        procs.wait_for(
            "PostgreSQL",
            lambda: self.psql("SELECT 1", check=False).returncode == 0,
            timeout=30,
            log=log,
        )
        if self.psql("SELECT 1 FROM pg_database WHERE datname='its'").stdout.strip() != "1":
            self.psql("CREATE DATABASE its")

    def stop_postgres(self) -> None:
        """Fast shutdown: clients are disconnected at once, as in a real outage.

        Stops the server that answers on the port, whichever checkout started it (it
        says where its data lives), and remembers it for ``start_postgres``.
        """
        data = self.pg_data
        if self.postgres_running():
            shown = self.psql("SHOW data_directory", check=False).stdout.strip()
            if shown:
                data = pathlib.Path(shown)
        if not (data / "postmaster.pid").exists():
            return
        proc = _run_as_postgres(
            [str(pg_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        )
        if proc.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not stop: {proc.stderr.strip()}")
        _STOPPED_DATA_DIR[PG_PORT] = data

    def psql(
        self, sql: str, *, database: str = "postgres", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                str(pg_bin_dir() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(PG_PORT),
                "-U",
                PG_USER,
                "-d",
                database,
                "-AtX",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            text=True,
            capture_output=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.postgres_dsn_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)

    # -- Redis ------------------------------------------------------------------------
    def redis_running(self) -> bool:
        return ports.port_open(REDIS_PORT)

    def start_redis(self) -> None:
        if self.redis_running():
            return
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        procs.start(
            "redis",
            [
                redis_server,
                "--port",
                str(REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data),
                "--daemonize",
                "no",
            ],
            run_dir=self.run_dir,
        )
        procs.wait_for("Redis", self.redis_running, timeout=20, log=self.run_dir / "redis.log")

    def stop_redis(self) -> None:
        procs.stop("redis", run_dir=self.run_dir)
        # A Redis we did not start (pid file lost) still holds the port: ask it to quit.
        if self.redis_running():
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=2) as s,
            ):
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
            procs.wait_for("Redis stop", lambda: not self.redis_running(), timeout=10)


def up(*, quiet: bool = False) -> tuple[Services, bool]:
    """Start both servers unless running; return the handle and whether we started any."""
    svc = Services(state_dir())
    svc.root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # PostgreSQL runs as `postgres` and must be able to reach its data directory.
        os.chmod(svc.root, 0o755)
    started = False
    if not svc.postgres_running():
        svc.start_postgres()
        started = True
    if not svc.redis_running():
        svc.start_redis()
        started = True
    if not quiet:
        _log(f"PostgreSQL {svc.postgres_dsn}")
        _log(f"Redis      {svc.redis_url}")
    return svc, started


def down() -> None:
    svc = Services(state_dir())
    svc.stop_postgres()
    svc.stop_redis()

"""Real databases for the tests: a throwaway PostgreSQL cluster on 127.0.0.1, and SQLite files.

The cluster is Debian's `postgresql` (tools/install-system-deps.sh installs it): `initdb` in a
temporary folder, `pg_ctl start` on a free loopback port, trust authentication for the one
local user (nothing else can reach 127.0.0.1 of a test machine's cluster), fsync off (a test
cluster need not survive a power cut). PostgreSQL refuses to run as root, and CI runs as root:
then the cluster runs as the `postgres` user the Debian package creates (`runuser`), in a
folder under /tmp that user can reach (pytest's own temporary folders are private to root).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import LOOPBACK, ServerStartError, ServerTimeoutError, free_port, log_tail

POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_USER = "medserve"  # the cluster's superuser (trust auth, loopback only)
SERVICE_ACCOUNT = "postgres"  # the OS user the cluster runs as when we are root
_names = itertools.count()


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries folder."""
    versions = sorted(
        (p for p in POSTGRES_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError(
            f"no PostgreSQL under {POSTGRES_ROOT} (run tools/install-system-deps.sh)"
        )
    return versions[-1]


@dataclass
class PostgresCluster:
    """A running cluster; `database()` makes an empty database and returns its URL."""

    port: int
    data_dir: Path
    log_path: Path
    startup_s: float

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{POSTGRES_USER}@{LOOPBACK}:{self.port}/{database}"

    def database(self, prefix: str = "t") -> str:
        """A new empty database (its URL)."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def dsn(self, database: str) -> str:
        return f"host={LOOPBACK} port={self.port} user={POSTGRES_USER} dbname={database}"


def _as_cluster_user(cmd: list[str]) -> list[str]:
    """`cmd` as the cluster's OS user: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SERVICE_ACCOUNT, "--", *cmd]


def _chown_for_cluster(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVICE_ACCOUNT)
        os.chown(path, account.pw_uid, account.pw_gid)


def _wait_accepting(bin_dir: Path, port: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        probe = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", LOOPBACK, "-p", str(port), "-U", POSTGRES_USER],
            capture_output=True,
        )
        if probe.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise ServerTimeoutError(
                f"PostgreSQL not ready after {timeout_s:g}s\n{log_tail(log_path)}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def postgres_cluster(timeout_s: float = 60) -> Iterator[PostgresCluster]:
    """Run a fresh cluster on a free loopback port until the block ends, then remove it."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="medserve-pg-", dir="/tmp"))
    data_dir, log_path = root / "data", root / "postgres.log"
    _chown_for_cluster(root)
    started = time.monotonic()
    init = subprocess.run(
        _as_cluster_user([
            str(bin_dir / "initdb"), "-D", str(data_dir), "-U", POSTGRES_USER,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        ]),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServerStartError(f"initdb failed: {init.stdout[-2000:]}{init.stderr[-2000:]}")
    port = free_port()
    # Unix sockets in the cluster's own folder (not /var/run/postgresql, which may not exist).
    options = f"-h {LOOPBACK} -p {port} -k {root} -c fsync=off -c max_connections=200"
    pg_ctl = str(bin_dir / "pg_ctl")
    start_cmd = [pg_ctl, "-D", str(data_dir), "-l", str(log_path), "-o", options, "start"]
    start = subprocess.run(
        _as_cluster_user(start_cmd),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        if start.returncode != 0:
            raise ServerStartError(
                f"pg_ctl start failed: {start.stderr[-2000:]}\n{log_tail(log_path)}"
            )
        _wait_accepting(bin_dir, port, log_path, timeout_s)
        yield PostgresCluster(port, data_dir, log_path, time.monotonic() - started)
    finally:
        subprocess.run(
            _as_cluster_user([pg_ctl, "-D", str(data_dir), "-m", "immediate", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)

"""A throwaway PostgreSQL cluster for the tests (a pytest plugin: see ``tests/conftest.py``).

``pg_cluster`` (one per session): ``initdb`` and ``pg_ctl start`` in a fresh temporary
directory, listening only on a unix socket in that directory (no TCP port at all), stopped
with ``pg_ctl stop -m immediate`` and deleted at the end, whatever happened. ``pg_url`` (one
per test): a fresh database in it, dropped afterwards.

The server binaries come from ``/usr/lib/postgresql/<version>/bin`` (Debian's layout, newest
version first) or ``PATH``. As root, they run as the ``postgres`` user (PostgreSQL refuses
root), who owns the directory. Without the binaries, or without psycopg, the tests that ask
for these fixtures are skipped, saying why; CI (``.ci/run``) installs Debian's postgresql.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Seconds the cluster may take to start: generous, for a loaded 2-core machine.
START_TIMEOUT = 120
SUPERUSER = "postgres"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")

# Nothing here must survive a crash: trade durability for speed. autovacuum off so that no
# background worker ever holds a lock a test waits on.
SERVER_SETTINGS = """
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
autovacuum = off
shared_buffers = 16MB
max_connections = 60
"""


def find_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: the newest Debian version, else PATH."""

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in bindir.parent.name.split(".") if p.isdigit())

    for bindir in sorted(DEBIAN_BINARIES.glob("*/bin"), key=version, reverse=True):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None and (Path(pg_ctl).parent / "initdb").is_file():
        return Path(pg_ctl).parent
    return None


@dataclass
class PgCluster:
    """A running throwaway cluster: ``url(dbname)``, ``create_database()``, ``connect()``."""

    bindir: Path
    root: Path  # the temporary directory: data/, server.log and the socket
    owner: pwd.struct_passwd | None  # whom the server runs as, when we are root
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """A ledger URL for a database of this cluster (over the unix socket)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.root}"

    def connect(self, dbname: str = "postgres") -> Any:
        """An autocommit psycopg connection as the superuser."""
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self, *, icu_locale: str | None = None) -> str:
        """A new, empty database; its name. ``icu_locale`` (PostgreSQL 15 with ICU) gives
        it that collation instead of the cluster's C."""
        name = f"test_{next(self._names)}"
        with self.connect() as conn:
            # Copying template1's files is 4x faster than PostgreSQL 15's default (WAL_LOG)
            # for a database this small, with fsync off.
            options = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            if icu_locale is not None:
                options += f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
            conn.execute(f"CREATE DATABASE {name}{options}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection a test left open to it."""
        with self.connect() as conn:
            force = " WITH (FORCE)" if conn.info.server_version >= 130000 else ""
            conn.execute(f"DROP DATABASE IF EXISTS {name}{force}")

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the cluster's owner; raise with its output if it fails."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        owner = self.owner
        done = subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}"
                f"{done.stderr}\n{self._log_tail()}"
            )
        return done

    def start(self) -> None:
        """initdb, configure, start, and wait until a connection succeeds."""
        self.run(
            "initdb",
            "-D", str(self.data),
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_SETTINGS.format(socket_dir=self.root))
        # -w: pg_ctl itself polls the server until it accepts connections, up to -t seconds.
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log),
                 "-w", "-t", str(START_TIMEOUT), "start")  # fmt: skip
        self._wait_until_connectable(time.monotonic() + START_TIMEOUT)

    def _wait_until_connectable(self, deadline: float) -> None:
        import psycopg

        delay = 0.01
        while True:
            try:
                self.connect().close()
                return
            except psycopg.OperationalError as err:
                if time.monotonic() + delay > deadline:
                    raise RuntimeError(f"PostgreSQL never accepted a connection: {err}") from err
            time.sleep(delay)  # waiting for the server to come up, not for time to pass
            delay = min(delay * 2, 0.5)

    def stop(self) -> None:
        """Stop at once (nothing needs saving) and delete everything."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return "server log:\n" + "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway PostgreSQL cluster, for the whole session (skips without one)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    bindir = find_binaries()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in "
            f"{DEBIAN_BINARIES}/*/bin or PATH: install Debian's postgresql package "
            "to run the PostgreSQL ledger tests"
        )
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SUPERUSER)
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    # Under /tmp, short: a unix socket path must stay under ~100 bytes, and the server's
    # user must be able to reach it (pytest's own temporary directories are private to us).
    root = Path(tempfile.mkdtemp(prefix="runner-pg-", dir="/tmp"))
    cluster = PgCluster(bindir=bindir, root=root, owner=owner)
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh, empty database (no ledger in it yet), dropped after the test."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)

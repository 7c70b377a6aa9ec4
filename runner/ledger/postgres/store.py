"""One connection to a PostgreSQL ledger: opening it, its transactions, its schema upgrades.

Concurrency model: every ledger object owns one connection (autocommit between calls, so no
transaction is ever left open); threads and processes each open their own. A read runs in
one ``REPEATABLE READ, READ ONLY`` transaction (one snapshot, like a WAL reader of SQLite). A
write runs in a ``READ COMMITTED`` transaction that locks the job rows it changes with
``SELECT … FOR UPDATE``: writers of different jobs never wait for each other, and writers of
one job take turns, each checking its change against what the previous one committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.string import TextLoader

from runner.errors import LedgerError
from runner.ledger.base import Clock, utcnow
from runner.ledger.postgres.migrations import (
    INDEXES_ONLY,
    MIGRATIONS,
    Connection,
    Migration,
    migrate,
    pending_migrations,
)
from runner.ledger.rows import timestamp
from runner.ledger.urls import masked_url, passwords_in, scrub

CONNECT_TIMEOUT = 10  # seconds to reach the server, unless the URL says connect_timeout=
APPLICATION_NAME = "runner"  # what pg_stat_activity shows, unless the URL says otherwise
SKEW_CHECK = 300.0  # seconds between measurements of the clock's offset from the server's


class _IsoTimestampLoader(TimestamptzLoader):
    """``timestamptz`` read back as the ledger's strings: UTC, ISO 8601, microseconds (what
    SQLite stores, so ``JobRow`` and friends are the same whatever the database)."""

    def load(self, data: Buffer) -> Any:
        value: datetime = super().load(data)
        return value.astimezone(UTC).isoformat(timespec="microseconds")


class Store:
    """The connection, the clock, and the read and write transactions of one ledger object."""

    def __init__(
        self,
        conn: Connection,
        *,
        url: str,
        readonly: bool,
        clock: Clock,
        migrations: Sequence[Migration],
    ) -> None:
        self.conn = conn
        self.url = masked_url(url)
        self._secrets = passwords_in(url)  # to scrub from the driver's messages
        self.readonly = readonly
        self.clock = clock
        self._migrations = migrations
        self._schema_ready = readonly  # a read-only store was checked up to date when opened
        self._skew: tuple[float, float] | None = None  # (server - clock seconds, when measured)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Clock = utcnow,
        migrations: Sequence[Migration] = MIGRATIONS,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> Store:
        """Connect for reading and writing. The schema is not touched: see :meth:`ensure_schema`."""
        conn = _connect(url, connect_timeout)
        return cls(conn, url=url, readonly=False, clock=clock, migrations=migrations)

    @classmethod
    def open_readonly(cls, url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> Store | None:
        """Connect to an existing, up-to-date ledger without writing to it; ``None`` if the
        database has no ledger yet. Creates nothing; the server refuses this connection
        every write (``default_transaction_read_only``)."""
        conn = _connect(url, connect_timeout)
        store = cls(conn, url=url, readonly=True, clock=utcnow, migrations=MIGRATIONS)
        try:
            with store._errors("read"):
                conn.execute("SET default_transaction_read_only = on")
                with conn.transaction():
                    pending = pending_migrations(conn, MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        if len(pending) == len(MIGRATIONS):  # never set up: nothing recorded yet
            conn.close()
            return None
        missing = [name for name in pending if name not in INDEXES_ONLY]  # readers need these
        if missing:
            conn.close()
            raise LedgerError(
                f"the ledger {store.url} was written by an older runner and lacks "
                f"{', '.join(missing)}; the next `runner run` upgrades it"
            )
        return store

    def ensure_schema(self) -> None:
        """Apply the migrations the database lacks, once per connection (before its first
        read or write, or when the executor lock is taken, whichever comes first)."""
        if self._schema_ready:
            return
        with self._errors("upgrade"):
            with self.conn.transaction():
                pending = pending_migrations(self.conn, self._migrations)
            if pending:
                with self.conn.transaction():
                    migrate(self.conn, self._migrations)
        self._schema_ready = True

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def now(self) -> str:
        """The clock's time as stored: UTC, ISO 8601, microseconds."""
        return timestamp(self.clock)

    def server_clock(self) -> datetime:
        """Now on the database server's clock: this store's clock moved by its offset from
        the server's (measured when first needed and every ``SKEW_CHECK`` seconds after).
        Leases are written and compared in this time, so hosts whose clocks disagree still
        agree on when a lease runs out (the per-account rate uses the server's clock too)."""
        if self._skew is None or time.monotonic() - self._skew[1] > SKEW_CHECK:
            before = self.clock()
            with self._errors("read"):
                row = self.conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp())::float8 AS t"
                ).fetchone()
            after = self.clock()
            assert row is not None
            here = before + (after - before) / 2
            self._skew = (float(row["t"]) - here.timestamp(), time.monotonic())
        return self.clock() + timedelta(seconds=self._skew[0])

    def server_now(self) -> str:
        """:meth:`server_clock` as stored."""
        return timestamp(self.server_clock)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: everything inside commits together or not at all."""
        if self.readonly:
            raise LedgerError(f"the ledger {self.url} was opened read-only")
        self.ensure_schema()
        with self._errors("write"), self.conn.transaction():
            yield self.conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Several reads from one snapshot; inside a write transaction, that transaction."""
        self.ensure_schema()
        if self.conn.info.transaction_status is not TransactionStatus.IDLE:
            yield self.conn
            return
        with self._errors("read"), self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield self.conn

    @contextmanager
    def _errors(self, verb: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as err:
            message = scrub(str(err).strip(), self._secrets)
            raise LedgerError(f"cannot {verb} the ledger {self.url}: {message}") from err


def _connect(url: str, connect_timeout: float) -> Connection:
    """An autocommit connection returning dict rows, JSON as text, times as ISO strings.

    Errors name the URL with its password masked, and never chain the driver's exception
    (its message, scrubbed, is in ours).
    """
    shown = masked_url(url)
    try:
        given = conninfo_to_dict(url)
        extra = {
            name: value
            for name, value in (
                ("connect_timeout", str(max(1, round(connect_timeout)))),
                ("application_name", APPLICATION_NAME),
            )
            if name not in given
        }
        conn = psycopg.connect(make_conninfo(url, **extra), autocommit=True, row_factory=dict_row)
    except psycopg.Error as err:
        message = scrub(str(err).strip(), passwords_in(url))
        raise LedgerError(f"cannot open the ledger {shown}: {message}") from None
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("timestamptz", _IsoTimestampLoader)
    return conn

"""One connection to a SQLite ledger file: opening it, its transactions, its schema upgrades.

Concurrency model: every ledger object owns one connection; threads and processes each open
their own. The file is in WAL mode so readers never block the writer, and every write
transaction starts with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead
of one of them failing with "database is locked" when it upgrades a read lock mid-transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from runner.errors import LedgerError
from runner.ledger.base import Clock, utcnow
from runner.ledger.rows import timestamp
from runner.ledger.sqlite.migrations import (
    INDEXES_ONLY,
    MIGRATIONS,
    Migration,
    migrate,
    pending_migrations,
)
from runner.ledger.status import JobStatus

LEDGER_FILE = "ledger.db"
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another writer's transaction to finish

#: The type a query declares for its ``status`` column (:func:`selected`): sqlite3 then hands
#: it over as a ``JobStatus``, converted in C as the row is fetched (a dict lookup), instead
#: of one Python call per row read (100,000 of them in a plan).
STATUS_TYPE = "job_status"


class _Statuses(dict[bytes, JobStatus]):
    """Each status's stored word, as sqlite3 gives it to a converter, to its ``JobStatus``."""

    def __missing__(self, word: bytes) -> JobStatus:
        return JobStatus(word.decode())  # ValueError, as for an unknown word anywhere


sqlite3.register_converter(
    STATUS_TYPE, _Statuses({status.value.encode(): status for status in JobStatus}).__getitem__
)


def selected(columns: Sequence[str]) -> str:
    """What a ``SELECT`` of these ``jobs`` columns lists: ``status`` as a ``JobStatus``."""
    return ", ".join(f'status AS "status [{STATUS_TYPE}]"' if c == "status" else c for c in columns)


class Store:
    """The connection, the clock, and the read and write transactions of one ledger object."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        readonly: bool,
        clock: Clock,
        migrations: Sequence[Migration],
    ) -> None:
        self.path = path
        self.conn = conn
        self.db = Database(conn, execute_plugins=False)
        self.readonly = readonly
        self.clock = clock
        self._migrations = migrations
        self._schema_ready = readonly  # a read-only store was checked up to date when opened

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Clock = utcnow,
        busy_timeout: float = BUSY_TIMEOUT,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Store:
        """Open for reading and writing, creating the directory and the file if needed.

        The schema is not touched here: see :meth:`ensure_schema`.
        """
        if path.is_dir():
            raise LedgerError(f"cannot open the ledger {path}: it is a directory, not a file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout,
                isolation_level=None,
                detect_types=sqlite3.PARSE_COLNAMES,  # STATUS_TYPE
            )
        except (OSError, sqlite3.Error) as err:
            raise LedgerError(f"cannot open the ledger {path}: {err}") from err
        store = cls(path, conn, readonly=False, clock=clock, migrations=migrations)
        try:
            store._enable_wal(busy_timeout)
            # In WAL mode, NORMAL still makes every commit survive a crash of this process
            # (kill -9 included); only a power cut may lose the last ones. Jobs replay those
            # safely (their idempotency keys derive from the job); a soul training or upload
            # whose commit was lost would be sent again. Without WAL, keep FULL.
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as err:
            conn.close()
            raise LedgerError(f"cannot open the ledger {path}: {err}") from err
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> Store | None:
        """Open an existing, up-to-date ledger without writing to it; ``None`` if there is none.

        Never creates a directory or a file. Works while a run writes, and in a directory
        this process may not write to.
        """
        if not path.is_file():
            return None
        conn = _connect_readonly(path, busy_timeout)
        conn.isolation_level = None
        store = cls(path, conn, readonly=True, clock=utcnow, migrations=MIGRATIONS)
        try:
            pending = pending_migrations(store.db)
        except sqlite3.Error as err:
            conn.close()
            raise LedgerError(f"cannot read the ledger {path}: {err}") from err
        if len(pending) == len(MIGRATIONS):  # created but never set up: nothing recorded yet
            conn.close()
            return None
        missing = [name for name in pending if name not in INDEXES_ONLY]  # readers need these
        if missing:
            conn.close()
            raise LedgerError(
                f"the ledger {path} was written by an older runner and lacks "
                f"{', '.join(missing)}; the next `runner run` upgrades it"
            )
        return store

    def _enable_wal(self, busy_timeout: float) -> None:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database
        # is locked" at once, without its busy handler, when processes race to do it (waiting
        # could deadlock them). So wait here instead, as long as the handler would.
        deadline = time.monotonic() + busy_timeout
        delay = 0.002
        while True:
            try:
                self.db.enable_wal()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def ensure_schema(self) -> None:
        """Apply the migrations the file lacks, once per connection (before its first read
        or write, or when the executor lock is taken, whichever comes first)."""
        if self._schema_ready:
            return
        try:
            if pending_migrations(self.db, self._migrations):
                with self._transaction():
                    migrate(self.db, self._migrations)
        except sqlite3.Error as err:
            raise LedgerError(f"cannot upgrade the ledger {self.path}: {err}") from err
        self._schema_ready = True

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def now(self) -> str:
        """The clock's time as stored: UTC, ISO 8601, microseconds."""
        return timestamp(self.clock)

    @contextmanager
    def write(self) -> Iterator[Database]:
        """One write transaction: everything inside commits together or not at all."""
        if self.readonly:
            raise LedgerError(f"the ledger {self.path} was opened read-only")
        self.ensure_schema()
        with self._transaction():
            yield self.db

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise LedgerError(f"cannot write the ledger {self.path}: {err}") from err
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException as err:
            # An error may already have rolled the transaction back (e.g. RAISE(ROLLBACK)).
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                raise LedgerError(f"cannot write the ledger {self.path}: {err}") from err
            raise

    @contextmanager
    def read(self) -> Iterator[Database]:
        """Several reads from one snapshot (WAL readers never wait for the writer); inside a
        write transaction, that transaction."""
        self.ensure_schema()
        try:
            if self.conn.in_transaction:
                yield self.db
                return
            self.conn.execute("BEGIN")
            try:
                yield self.db
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise LedgerError(f"cannot read the ledger {self.path}: {err}") from err


def _connect_readonly(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that cannot write, trying the ways that leave the least behind."""
    uri = path.resolve().as_uri()
    # mode=rw (which never creates the file) so that the last connection to close can clean
    # up the WAL side files; query_only makes SQLite itself refuse any write. That fails when
    # SQLite may not create the -shm file a WAL reader needs (a read-only directory or mount).
    # Then, if a -wal file exists, commits may be in it: mode=ro reads through the side files
    # already there. If not, every commit is in the main file, and immutable=1 reads it
    # creating nothing (a writer starting meanwhile writes to a new -wal, not the main file).
    wal = path.with_name(path.name + "-wal").exists()
    modes = ["mode=rw", "mode=ro" if wal else "mode=ro&immutable=1"]
    error: sqlite3.Error | None = None
    for mode in modes:
        try:
            conn = sqlite3.connect(
                f"{uri}?{mode}",
                uri=True,
                timeout=busy_timeout,
                detect_types=sqlite3.PARSE_COLNAMES,  # STATUS_TYPE
            )
        except sqlite3.Error as err:
            error = err
            continue
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file
            return conn
        except sqlite3.Error as err:
            conn.close()
            error = err
    raise LedgerError(f"cannot open the ledger {path}: {error}")

"""The ledger: one SQLite file that remembers every job, every status change, and what is on disk.

Concurrency model: every ``Ledger`` owns one connection; threads and processes each open their
own. The file is in WAL mode so readers never block the writer, and every write transaction
starts with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of one of them
failing with "database is locked" when it upgrades a read lock mid-transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlite_utils import Database

from runner.errors import LedgerError, TransitionError
from runner.jobs import Job
from runner.ledger.migrations import MIGRATIONS, Migration, migrate, pending_migrations
from runner.ledger.models import (
    TRANSITION_COLUMNS,
    TRANSITIONS,
    EventRow,
    JobRow,
    JobStatus,
    PlanDiff,
    SoulRow,
)
from runner.ledger.plan import Plan, compute_plan, new_row, refreshed_columns

LEDGER_FILE = "ledger.db"
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another writer's transaction to finish

StatusFilter = JobStatus | str | Iterable[JobStatus | str]


def utcnow() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _in_json(column: str) -> str:
    # One JSON parameter instead of one "?" per value: no limit on how many keys a filter holds.
    return f"{column} IN (SELECT value FROM json_each(?))"


def _retry_number(row: JobRow) -> int:
    """The ``n`` of an idempotency key ``<key>-<n>``."""
    prefix = f"{row.key}-"
    suffix = row.idempotency_key.removeprefix(prefix)
    if row.idempotency_key.startswith(prefix) and suffix.isdigit():
        return int(suffix)
    return 1


class Ledger:
    """The SQLite ledger in ``<state_dir>/ledger.db``, opened for reading and writing.

    Opening creates the state directory and the database if needed and applies any pending
    migrations. Use :meth:`open_readonly` for commands that must not write.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_timeout: float = BUSY_TIMEOUT,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(state_dir) / LEDGER_FILE
        self.readonly = False
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise LedgerError(f"cannot open the ledger {self.path}: {err}") from err
        self._conn = conn
        self._db = Database(conn, execute_plugins=False)
        try:
            self._enable_wal(busy_timeout)
            # In WAL mode, NORMAL still makes every commit survive a crash of this process
            # (kill -9 included); only a power cut may lose the last ones. Jobs replay those
            # safely (their idempotency keys derive from the job); a soul training or upload
            # whose commit was lost would be sent again. Without WAL, keep FULL.
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                conn.execute("PRAGMA synchronous=NORMAL")
            if pending_migrations(self._db, migrations):
                with self._write():
                    migrate(self._db, migrations)
        except sqlite3.Error as err:
            conn.close()
            raise LedgerError(f"cannot open the ledger {self.path}: {err}") from err
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_readonly(
        cls, state_dir: str | Path, *, busy_timeout: float = BUSY_TIMEOUT
    ) -> Ledger | None:
        """Open an existing ledger without writing to it; ``None`` if there is none yet.

        Never creates the state directory or the database. Works while a run writes.
        """
        path = Path(state_dir) / LEDGER_FILE
        if not path.is_file():
            return None
        ledger = cls.__new__(cls)
        ledger.path = path
        ledger.readonly = True
        ledger._clock = utcnow
        uri = path.resolve().as_uri()
        try:
            # mode=rw (which never creates the file) so that the last connection to close can
            # clean up the WAL side files; query_only makes SQLite itself refuse any write.
            conn = sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=busy_timeout)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            try:  # a ledger we may only read (permissions, read-only mount)
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=busy_timeout)
            except sqlite3.Error as err:
                raise LedgerError(f"cannot open the ledger {path}: {err}") from err
        conn.isolation_level = None
        ledger._conn = conn
        ledger._db = Database(conn, execute_plugins=False)
        try:
            pending = pending_migrations(ledger._db)
        except sqlite3.Error as err:
            conn.close()
            raise LedgerError(f"cannot read the ledger {path}: {err}") from err
        if len(pending) == len(MIGRATIONS):  # created but never set up: nothing recorded yet
            conn.close()
            return None
        if pending:
            conn.close()
            raise LedgerError(
                f"the ledger {path} was written by an older runner and lacks "
                f"{', '.join(pending)}; the next `runner run` upgrades it"
            )
        return ledger

    # --- plumbing ---------------------------------------------------------------------

    def _enable_wal(self, busy_timeout: float) -> None:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database
        # is locked" at once, without its busy handler, when processes race to do it (waiting
        # could deadlock them). So wait here instead, as long as the handler would.
        deadline = time.monotonic() + busy_timeout
        delay = 0.002
        while True:
            try:
                self._db.enable_wal()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def close(self) -> None:
        """Close the connection. The ledger cannot be used afterwards."""
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "read-write"
        return f"<Ledger {self.path} {mode}>"

    def _now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="microseconds")

    @contextmanager
    def _write(self) -> Iterator[Database]:
        """One write transaction: everything inside commits together or not at all."""
        if self.readonly:
            raise LedgerError(f"the ledger {self.path} was opened read-only")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise LedgerError(f"cannot write the ledger {self.path}: {err}") from err
        try:
            yield self._db
            self._conn.execute("COMMIT")
        except BaseException as err:
            # An error may already have rolled the transaction back (e.g. RAISE(ROLLBACK)).
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                raise LedgerError(f"cannot write the ledger {self.path}: {err}") from err
            raise

    @contextmanager
    def _read(self) -> Iterator[Database]:
        """Several reads from one snapshot (WAL readers never wait for the writer)."""
        try:
            if self._conn.in_transaction:
                yield self._db
                return
            self._conn.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise LedgerError(f"cannot read the ledger {self.path}: {err}") from err

    def _select_jobs(self, where: str | None = None, params: Sequence[Any] = ()) -> list[JobRow]:
        with self._read() as db:
            rows = db.table("jobs").rows_where(
                where, list(params), order_by="manifest, job_index, key"
            )
            return [JobRow.from_row(row) for row in rows]

    def _require(self, key: str) -> JobRow:
        rows = self._select_jobs("key = ?", [key])
        if not rows:
            raise LedgerError(f"no job {key!r} in the ledger {self.path}")
        return rows[0]

    # --- jobs -------------------------------------------------------------------------

    def get(self, key: str) -> JobRow | None:
        """The job with this exact key, or ``None``."""
        rows = self._select_jobs("key = ?", [key])
        return rows[0] if rows else None

    def match_key(self, prefix: str) -> str:
        """The one key that is ``prefix`` or starts with it; ``LedgerError`` if none or several."""
        if self.get(prefix) is not None:
            return prefix
        with self._read() as db:
            keys = [
                str(row["key"])
                for row in db.query(
                    "SELECT key FROM jobs WHERE substr(key, 1, ?) = ? ORDER BY key LIMIT 6",
                    [len(prefix), prefix],
                )
            ]
        if not prefix or not keys:
            raise LedgerError(f"no job {prefix!r} in the ledger")
        if len(keys) > 1:
            shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
            raise LedgerError(f"{prefix!r} matches several jobs ({shown}); give more of the key")
        return keys[0]

    def jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> list[JobRow]:
        """Jobs matching every given filter, ordered by manifest, then manifest order."""
        wheres: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            wheres.append(_in_json("status"))
            params.append(_json([JobStatus(s).value for s in statuses]))
        if campaign is not None:
            campaigns = [campaign] if isinstance(campaign, str) else list(campaign)
            wheres.append(_in_json("campaign"))
            params.append(_json(campaigns))
        if manifest is not None:
            wheres.append("manifest = ?")
            params.append(manifest)
        if keys is not None:
            wheres.append(_in_json("key"))
            params.append(_json(list(keys)))
        return self._select_jobs(" AND ".join(wheres) or None, params)

    def events(self, key: str) -> list[EventRow]:
        """A job's status changes, oldest first."""
        with self._read() as db:
            rows = db.table("events").rows_where("job_key = ?", [key], order_by="id")
            return [EventRow.from_row(row) for row in rows]

    def counts(self, manifest: str | None = None) -> dict[str, dict[str, int]]:
        """``{campaign: {status: count}}``, campaigns by name, statuses in life-cycle order."""
        sql = "SELECT campaign, status, count(*) AS n FROM jobs"
        params: list[Any] = []
        if manifest is not None:
            sql += " WHERE manifest = ?"
            params.append(manifest)
        sql += " GROUP BY campaign, status"
        order = {status.value: i for i, status in enumerate(JobStatus)}
        with self._read() as db:
            rows = sorted(
                db.query(sql, params), key=lambda r: (r["campaign"], order.get(r["status"], 99))
            )
        result: dict[str, dict[str, int]] = {}
        for row in rows:
            result.setdefault(row["campaign"], {})[row["status"]] = row["n"]
        return result

    def transition(
        self, key: str, to: JobStatus | str, *, detail: str | None = None, **columns: Any
    ) -> JobRow:
        """Move a job to status ``to``, updating ``columns`` and appending the event, atomically.

        ``columns`` may set ``generation_id``, ``idempotency_key``, ``attempts``, ``error``,
        ``video_url``, ``bytes`` and ``sha256``. Raises ``TransitionError`` for a change the
        state machine refuses (see ``TRANSITIONS``); an orphaned job may only go back to the
        status it had before it was orphaned.
        """
        target = JobStatus(to)
        unknown = set(columns) - TRANSITION_COLUMNS
        if unknown:
            raise TypeError(f"transition() cannot set {', '.join(sorted(unknown))}")
        with self._write():
            return self._apply(self._require(key), target, detail, columns)

    def note(self, key: str, detail: str) -> None:
        """Append an event that records something without changing the job's status
        (``from_status`` and ``to_status`` are both the current one)."""
        with self._write() as db:
            row = self._require(key)
            db.table("events").insert(
                {
                    "job_key": key,
                    "at": self._now(),
                    "from_status": row.status.value,
                    "to_status": row.status.value,
                    "detail": detail,
                }
            )

    def bump_attempts(self, key: str) -> int:
        """Count one more attempt for a job (no status change); return the new count."""
        with self._write():
            self._require(key)
            row = self._conn.execute(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE key = ? "
                "RETURNING attempts",
                [self._now(), key],
            ).fetchone()
        return int(row[0])

    def retry_failed(
        self,
        manifest: str,
        keys: Collection[str] | None = None,
        campaigns: Collection[str] | None = None,
    ) -> int:
        """Put a manifest's failed jobs (all, or those with these keys / in these campaigns)
        back to ``pending`` with the next idempotency key and no attempts; return how many."""
        with self._write():
            rows = self.jobs(
                status=JobStatus.FAILED, manifest=manifest, keys=keys, campaign=campaigns
            )
            for row in rows:
                new_key = f"{row.key}-{_retry_number(row) + 1}"
                self._apply(
                    row,
                    JobStatus.PENDING,
                    f"retry with idempotency key {new_key}",
                    {
                        "idempotency_key": new_key,
                        "attempts": 0,
                        "error": None,
                        "generation_id": None,
                        "video_url": None,
                    },
                )
        return len(rows)

    def _status_before_orphaning(self, key: str) -> JobStatus:
        row = self._conn.execute(
            "SELECT from_status FROM events WHERE job_key = ? AND to_status = ? "
            "ORDER BY id DESC LIMIT 1",
            [key, JobStatus.ORPHANED.value],
        ).fetchone()
        if row is None or row[0] in (None, JobStatus.ORPHANED.value):
            return JobStatus.PENDING
        return JobStatus(row[0])

    def _apply(
        self, row: JobRow, to: JobStatus, detail: str | None, columns: Mapping[str, Any]
    ) -> JobRow:
        """The one place a status changes; the caller holds the write transaction."""
        allowed = TRANSITIONS[row.status]
        if row.status is JobStatus.ORPHANED:
            allowed = frozenset({self._status_before_orphaning(row.key)})
        if to not in allowed:
            raise TransitionError(f"job {row.key}: {row.status} → {to} is not allowed")
        if row.status is to is JobStatus.SUBMITTING:
            resend_key = columns.get("idempotency_key", row.idempotency_key)
            if resend_key != row.idempotency_key:
                raise TransitionError(
                    f"job {row.key}: a job in submitting is re-sent with its idempotency key "
                    f"{row.idempotency_key}, never a new one"
                )
            detail = detail or f"resent with the same idempotency key {row.idempotency_key}"
        now = self._now()
        updates = {**columns, "status": to.value, "updated_at": now}
        # Plain SQL (column names come from TRANSITION_COLUMNS only): this runs once per job
        # when a plan orphans thousands, and Table.update re-reads the schema on every call.
        self._conn.execute(
            f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in updates)} WHERE key = ?",
            [*updates.values(), row.key],
        )
        self._conn.execute(
            "INSERT INTO events (job_key, at, from_status, to_status, detail) "
            "VALUES (?, ?, ?, ?, ?)",
            [row.key, now, row.status.value, to.value, detail],
        )
        cursor = self._conn.execute("SELECT * FROM jobs WHERE key = ?", [row.key])
        names = [d[0] for d in cursor.description]
        return JobRow.from_row(dict(zip(names, cursor.fetchone(), strict=True)))

    # --- plans ------------------------------------------------------------------------

    def diff(self, manifest_path: str, jobs: Sequence[Job]) -> PlanDiff:
        """What :meth:`record_plan` would do with these jobs, without writing anything."""
        with self._read():
            return self._plan(str(manifest_path), jobs).diff

    def record_plan(self, manifest_path: str, jobs: Sequence[Job]) -> PlanDiff:
        """Record a manifest's jobs in one transaction and return the resulting diff.

        New jobs are inserted as ``pending`` (idempotency key ``<key>-1``); jobs the ledger
        knows keep their status and get their path, credits, order and tags refreshed (and
        move to this manifest if another one recorded them); orphaned jobs the manifest
        produces again go back to the status they had; every job recorded for this manifest
        path that it no longer produces becomes ``orphaned``. Nothing is deleted.
        """
        manifest = str(manifest_path)
        with self._write() as db:
            plan = self._plan(manifest, jobs)
            now = self._now()
            new_rows = [
                new_row(job, manifest, now)
                for key, job in plan.produced.items()
                if key not in plan.existing
            ]
            db.table("jobs").insert_all(new_rows)
            db.table("events").insert_all(
                {
                    "job_key": row["key"],
                    "at": now,
                    "from_status": None,
                    "to_status": JobStatus.PENDING.value,
                    "detail": f"planned from {manifest}",
                }
                for row in new_rows
            )
            for key, row in plan.existing.items():
                changes = refreshed_columns(row, plan.produced[key], manifest)
                if changes:
                    db.table("jobs").update(key, {**changes, "updated_at": now})
            for key in plan.diff.restored_keys:
                back = JobStatus(plan.diff.statuses[key])
                self._apply(plan.existing[key], back, "produced again by the manifest", {})
            for row in plan.to_orphan:
                self._apply(row, JobStatus.ORPHANED, f"no longer produced by {manifest}", {})
        return plan.diff

    def _plan(self, manifest: str, jobs: Sequence[Job]) -> Plan:
        produced: dict[str, Job] = {}
        for job in jobs:
            produced.setdefault(job.key, job)
        existing = {row.key: row for row in self.jobs(keys=list(produced))}
        gone = [row for row in self.jobs(manifest=manifest) if row.key not in produced]
        restore = {
            key: self._status_before_orphaning(key)
            for key, row in existing.items()
            if row.status is JobStatus.ORPHANED
        }
        return compute_plan(produced, existing, gone, restore)

    # --- souls and uploads ------------------------------------------------------------

    def get_soul(self, name: str, manifest: str) -> SoulRow | None:
        """The soul model recorded for ``souls.<name>`` of this manifest, or ``None``."""
        with self._read() as db:
            rows = list(db.table("souls").rows_where("manifest = ? AND name = ?", [manifest, name]))
        return SoulRow.from_row(rows[0]) if rows else None

    def souls(self, manifest: str | None = None) -> list[SoulRow]:
        """Every soul record (of one manifest, if given), by manifest and name."""
        where, params = ("manifest = ?", [manifest]) if manifest is not None else (None, [])
        with self._read() as db:
            rows = db.table("souls").rows_where(where, params, order_by="manifest, name")
            return [SoulRow.from_row(row) for row in rows]

    def set_soul(
        self,
        name: str,
        manifest: str,
        *,
        status: str,
        model_id: str | None = None,
        error: str | None = None,
        images_hash: str | None = None,
    ) -> SoulRow:
        """Record a soul model's state, replacing every field but ``created_at``."""
        with self._write() as db:
            old = self.get_soul(name, manifest)
            now = self._now()
            db.table("souls").upsert(
                {
                    "name": name,
                    "manifest": manifest,
                    "model_id": model_id,
                    "status": status,
                    "error": error,
                    "images_hash": images_hash,
                    "created_at": old.created_at if old else now,
                    "updated_at": now,
                },
                pk=("manifest", "name"),
            )
            soul = self.get_soul(name, manifest)
        assert soul is not None
        return soul

    def get_upload(self, sha256: str) -> str | None:
        """The public URL of a local file already uploaded, by the sha256 of its content."""
        with self._read() as db:
            rows = list(db.table("uploads").rows_where("sha256 = ?", [sha256]))
        return str(rows[0]["public_url"]) if rows else None

    def record_upload(self, sha256: str, url: str) -> None:
        """Remember where a local file's content was uploaded (replacing an older URL)."""
        with self._write() as db:
            db.table("uploads").upsert(
                {"sha256": sha256, "public_url": url, "created_at": self._now()}, pk="sha256"
            )

"""The PostgreSQL ledger: jobs, their events, soul models and uploads in one database
(SPEC §4, §8).

``Store`` (store.py) owns the connection and its transactions; this module is what the
interface asks of jobs, in SQL. What the rows hold is decided in ``runner.ledger.rows`` and
``runner.ledger.plan``, shared with the SQLite ledger, so both behave alike.

Locking. A status change, a note or an attempt locks its job's row (``FOR UPDATE``) for its
transaction, so changes to one job take turns and each is checked against the last; that is
also why a job's events are numbered in the order they happened. ``record_plan`` and
``retry_failed`` change many rows: they take turns on an advisory lock (:data:`PLAN_LOCK`)
before locking theirs, so two of them never deadlock or insert the same new job twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg import sql
from psycopg.rows import tuple_row

from runner.errors import LedgerError
from runner.ledger.base import Clock, StatusFilter, utcnow
from runner.ledger.models import (
    BRIEF_COLUMNS,
    JOB_COLUMNS,
    PLANNED_COLUMNS,
    RECORDED_COLUMNS,
    REPORT_COLUMNS,
    STATE_COLUMNS,
    EventRow,
    GenerationTime,
    JobBrief,
    JobRow,
    JobState,
    PlanDiff,
    PlannedRow,
    ReportRow,
    Transition,
    brief_values,
    planned_values,
)
from runner.ledger.plan import Plan, R, diff_with_charges, gather_plan, plan_writes, recorded
from runner.ledger.postgres.claims import JobClaims
from runner.ledger.postgres.filters import JOB_ORDER, job_filter
from runner.ledger.postgres.migrations import MIGRATIONS, Migration
from runner.ledger.postgres.store import CONNECT_TIMEOUT, Store
from runner.ledger.rows import (
    LEDGER_ID,
    MATCH_LIMIT,
    counted_statuses,
    grouped_counts,
    matched_key,
    note_event,
    retry_change,
    status_change,
)
from runner.ledger.status import JobStatus, restored_status

if TYPE_CHECKING:
    from runner.jobs import Job  # a type only: the ledger needs no manifest code

#: The advisory lock that writers of many rows take in turn: "runner", then 2.
PLAN_LOCK = 0x72756E6E65720002


def _insert(table: str, columns: Iterable[str]) -> sql.Composed:
    names = list(columns)
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )


def _update_job(columns: Iterable[str], returning: bool = False) -> sql.Composed:
    return sql.SQL("UPDATE jobs SET {} WHERE key = %s{}").format(
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns),
        sql.SQL(f" RETURNING {', '.join(JOB_COLUMNS)}" if returning else ""),
    )


_SELECT_JOBS = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
_SELECT_BRIEFS = f"SELECT {', '.join(BRIEF_COLUMNS)} FROM jobs"
_SELECT_REPORT = f"SELECT {', '.join(REPORT_COLUMNS)} FROM jobs"
T = TypeVar("T")
STREAM_BATCH = 2000  # rows fetched at a time by iter_jobs


class PostgresLedger(JobClaims):
    """The ledger in a PostgreSQL database (``postgresql://user@host/db``); see ``Ledger``.

    Use :meth:`open` (read-write) or :meth:`open_readonly`, or ``runner.ledger.open_ledger``.
    Any number of processes on any hosts may use one database at once (SPEC §8), so the
    executor lock holds nobody back: see :meth:`executor_lock`.
    """

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Clock = utcnow,
        migrations: Sequence[Migration] = MIGRATIONS,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> PostgresLedger:
        """Connect for reading and writing; the database must exist (it is never created).

        Pending ``migrations`` are applied when the executor lock is taken or on first use.
        """
        return cls(
            Store.open(url, clock=clock, migrations=migrations, connect_timeout=connect_timeout)
        )

    @classmethod
    def open_readonly(
        cls, url: str, *, connect_timeout: float = CONNECT_TIMEOUT
    ) -> PostgresLedger | None:
        """Connect without writing anything; ``None`` if the database has no ledger yet.

        ``LedgerError`` if it lacks migrations (an older runner set it up).
        """
        store = Store.open_readonly(url, connect_timeout=connect_timeout)
        return cls(store) if store is not None else None

    @property
    def url(self) -> str:
        """The URL as given, its password (if any) replaced by ``***``."""
        return self._store.url

    @property
    def id(self) -> str:
        """The ledger's own id (``meta``), read once."""
        if self._id is None:
            with self._store.read() as conn:
                row = conn.execute("SELECT value FROM meta WHERE name = %s", [LEDGER_ID]).fetchone()
            assert row is not None  # made by the m007 migration
            self._id = str(row["value"])
        return self._id

    @contextmanager
    def _executing(self) -> Iterator[None]:
        if self.readonly:
            raise LedgerError(f"the ledger {self.url} was opened read-only")
        self._store.ensure_schema()
        yield

    def executor_lock(self) -> AbstractContextManager[None]:
        """Bring the schema up to date, and nothing more: it never waits and never refuses.

        PostgreSQL lifts the one-process rule (SPEC §8): every process may execute at once,
        and what keeps two of them off one job is its claim (``claim``, with a lease the
        holder renews; see ``runner.ledger.claims``).
        """
        return self._executing()

    def _select_jobs(
        self, where: str | None = None, params: Sequence[Any] = (), *, lock: bool = False
    ) -> list[JobRow]:
        query = _SELECT_JOBS + (f" WHERE {where} " if where else " ") + JOB_ORDER
        with self._store.read() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            rows = cursor.execute(query + (" FOR UPDATE" if lock else ""), params).fetchall()
        return [JobRow.from_values(row) for row in rows]

    def _require(self, key: str, *, lock: bool = False) -> JobRow:
        rows = self._select_jobs("key = %s", [key], lock=lock)
        if not rows:
            raise LedgerError(f"no job {key!r} in the ledger {self.url}")
        return rows[0]

    # --- jobs -------------------------------------------------------------------------

    def get(self, key: str) -> JobRow | None:
        """The job with this exact key, or ``None``."""
        rows = self._select_jobs("key = %s", [key])
        return rows[0] if rows else None

    def match_key(self, prefix: str) -> str:
        """The one key that is ``prefix`` or starts with it; ``LedgerError`` if none or several."""
        if self.get(prefix) is not None:
            return prefix
        with self._store.read() as conn:
            rows = conn.execute(
                "SELECT key FROM jobs WHERE left(key, %s) = %s ORDER BY key LIMIT %s",
                [len(prefix), prefix, MATCH_LIMIT],
            ).fetchall()
        return matched_key(prefix, [str(row["key"]) for row in rows])

    def jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> list[JobRow]:
        """Jobs matching every given filter, ordered by manifest, then manifest order."""
        return self._select_jobs(*job_filter(status, campaign, manifest, keys))

    def iter_jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> Iterator[JobRow]:
        """:meth:`jobs`, a batch of rows at a time (a server-side cursor) from one snapshot."""
        where = job_filter(status, campaign, manifest, keys)
        return self._stream(_SELECT_JOBS, *where, make=JobRow.from_values)

    def briefs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> Iterator[JobBrief]:
        """:meth:`iter_jobs`, only the columns of ``JobBrief``."""
        where = job_filter(status, campaign, manifest, keys)
        return self._stream(_SELECT_BRIEFS, *where, make=JobBrief.from_values)

    def _stream(
        self, select: str, where: str | None, params: list[Any], *, make: Callable[[Any], T]
    ) -> Iterator[T]:
        query = select + (f" WHERE {where} " if where else " ") + JOB_ORDER
        with (
            self._store.read() as conn,
            conn.cursor("runner_jobs", row_factory=tuple_row) as cursor,
        ):
            cursor.itersize = STREAM_BATCH
            cursor.execute(query, params)
            for row in cursor:
                yield make(row)

    def events(self, key: str) -> list[EventRow]:
        """A job's status changes, oldest first."""
        with self._store.read() as conn:
            rows = conn.execute("SELECT * FROM events WHERE job_key = %s ORDER BY id", [key])
            return [EventRow.from_row(row) for row in rows]

    def report_rows(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
    ) -> Iterator[ReportRow]:
        """:meth:`iter_jobs`, only the columns of ``ReportRow``."""
        where = job_filter(status, campaign, manifest, None)
        return self._stream(_SELECT_REPORT, *where, make=ReportRow.from_values)

    def generation_times(self, shape: Mapping[str, Any], *, limit: int) -> list[GenerationTime]:
        """How long recent generations of this request shape took; see ``Ledger``."""
        # A field the request lacks reads as JSON null, as in SQLite.
        wheres = "".join(
            " AND coalesce(j.request::jsonb -> %s, 'null'::jsonb) = %s::jsonb" for _ in shape
        )
        params: list[Any] = []
        for name, value in shape.items():
            params += [name, json.dumps(value)]
        query = f"""
            SELECT extract(epoch FROM c.at - q.at)::float8 AS seconds, c.detail
            FROM events AS c
            JOIN jobs AS j ON j.key = c.job_key
            JOIN events AS q ON q.id = (
                SELECT max(id) FROM events WHERE job_key = c.job_key AND id < c.id
                AND from_status = 'submitting' AND to_status IN ('queued', 'running'))
            WHERE c.to_status = 'completed' AND c.from_status IN ('queued', 'running'){wheres}
            ORDER BY c.id DESC LIMIT %s"""
        with self._store.read() as conn:
            rows = conn.execute(query.encode(), [*params, limit]).fetchall()
        return [GenerationTime(seconds=float(r["seconds"]), detail=r["detail"]) for r in rows]

    def counts(self, manifest: str | None = None) -> dict[str, dict[str, int]]:
        """``{campaign: {status: count}}``, campaigns by name, statuses in life-cycle order."""
        where, params = ("WHERE manifest = %s", [manifest]) if manifest is not None else ("", [])
        query = f"SELECT campaign, status, count(*) AS n FROM jobs {where} GROUP BY 1, 2"
        with self._store.read() as conn:
            groups = [(r["campaign"], r["status"], r["n"]) for r in conn.execute(query, params)]
        return grouped_counts(groups)

    def status_counts(
        self, manifest: str, campaign: str | Iterable[str] | None = None
    ) -> dict[str, int]:
        """``{status: count}`` in manifest order; see ``Ledger.status_counts``."""
        where, params = job_filter(None, campaign, manifest, None)
        with self._store.read() as conn:
            return counted_statuses(lambda sql: conn.execute(sql, params).fetchall(), str(where))

    def transition(
        self, key: str, to: JobStatus | str, *, detail: str | None = None, **columns: Any
    ) -> JobRow:
        """Move a job to status ``to``, updating ``columns`` and appending the event, atomically.

        See ``Ledger.transition``; the rules are ``runner.ledger.status.check_transition``.
        """
        target = JobStatus(to)
        with self._store.write():
            return self._apply(self._require(key, lock=True), target, detail, columns)

    def transition_many(self, changes: Iterable[Transition]) -> list[JobRow]:
        """Several ``transition`` calls in one transaction; see ``Ledger.transition_many``."""
        with self._store.write():
            return [
                self._apply(
                    self._require(c.key, lock=True), JobStatus(c.to), c.detail, dict(c.columns)
                )
                for c in changes
            ]

    def note(self, key: str, detail: str) -> None:
        """Append an event that records something without changing the job's status
        (``from_status`` and ``to_status`` are both the current one)."""
        with self._store.write() as conn:
            event = note_event(self._require(key, lock=True), detail, self._store.now())
            conn.execute(_insert("events", event), list(event.values()))

    def bump_attempts(self, key: str) -> int:
        """Count one more attempt for a job (no status change); return the new count."""
        with self._store.write() as conn:
            row = conn.execute(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = %s WHERE key = %s"
                " RETURNING attempts",
                [self._store.now(), key],
            ).fetchone()
        if row is None:
            raise LedgerError(f"no job {key!r} in the ledger {self.url}")
        return int(row["attempts"])

    def retry_failed(
        self,
        manifest: str,
        keys: Collection[str] | None = None,
        campaigns: Collection[str] | None = None,
    ) -> int:
        """Put a manifest's failed jobs (all, or those with these keys / in these campaigns)
        back to ``pending`` with the next idempotency key and no attempts; return how many."""
        with self._store.write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [PLAN_LOCK])
            where, params = job_filter(JobStatus.FAILED, campaigns, manifest, keys)
            rows = self._select_jobs(where or "TRUE", params, lock=True)
            for row in rows:
                self._apply(row, JobStatus.PENDING, *retry_change(row, self.id))
        return len(rows)

    def _status_before_orphaning(self, key: str) -> JobStatus:
        row = self._store.conn.execute(
            "SELECT from_status FROM events WHERE job_key = %s AND to_status = %s"
            " ORDER BY id DESC LIMIT 1",
            [key, JobStatus.ORPHANED.value],
        ).fetchone()
        return restored_status(row["from_status"] if row is not None else None)

    def _apply(
        self, row: JobRow, to: JobStatus, detail: str | None, columns: dict[str, Any]
    ) -> JobRow:
        """The one place a status changes; the caller holds the write transaction and the
        row's lock."""
        change = status_change(
            row,
            to,
            detail=detail,
            columns=columns,
            restore=self._status_before_orphaning,
            now=self._store.now(),
        )
        conn = self._store.conn
        with conn.cursor(row_factory=tuple_row) as cursor:
            updated = cursor.execute(
                _update_job(change.updates, returning=True), [*change.updates.values(), row.key]
            ).fetchone()
        conn.execute(_insert("events", change.event), list(change.event.values()))
        assert updated is not None  # the row is locked: it cannot have gone
        return JobRow.from_values(updated)

    # --- plans ------------------------------------------------------------------------

    def diff(
        self,
        manifest_path: str,
        jobs: Sequence[Job],
        *,
        charged: Callable[[JobState], bool] | None = None,
    ) -> PlanDiff:
        """What :meth:`record_plan` would do with these jobs, without writing anything (and,
        given ``charged``, the manifest's charged credits); see ``Ledger.diff``."""
        manifest = str(manifest_path)
        with self._store.read():
            plan = self._plan(manifest, jobs, STATE_COLUMNS, JobState.from_values)
        return diff_with_charges(plan, manifest, charged)

    def record_plan(self, manifest_path: str, jobs: Sequence[Job]) -> PlanDiff:
        """Record a manifest's jobs in one transaction and return the resulting diff.

        See ``Ledger.record_plan``; the order of the writes is ``plan.plan_writes``.
        """
        manifest = str(manifest_path)
        with self._store.write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [PLAN_LOCK])
            plan = self._plan(manifest, jobs, PLANNED_COLUMNS, PlannedRow.from_values, lock=True)
            return self._write_plan(conn, manifest, plan)

    def record_plan_checked(
        self, manifest_path: str, jobs: Sequence[Job], ready: Callable[[list[JobBrief]], bool]
    ) -> PlanDiff | None:
        """:meth:`record_plan` once ``ready`` has seen the manifest's briefs, read (and
        locked) in its transaction with the plan's rows; see ``Ledger.record_plan_checked``."""
        manifest = str(manifest_path)
        briefs: list[JobBrief] = []
        with self._store.write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [PLAN_LOCK])
            plan = self._plan(
                manifest, jobs, RECORDED_COLUMNS, PlannedRow.from_values, lock=True, briefs=briefs
            )
            if not ready(briefs):
                return None
            return self._write_plan(conn, manifest, plan)

    def _write_plan(self, conn: Any, manifest: str, plan: Plan[PlannedRow]) -> PlanDiff:
        """Carry out ``plan`` (``plan.plan_writes``), in the write transaction of ``conn``."""
        writes = plan_writes(plan, manifest, self._store.now(), self.id)
        with conn.cursor() as cursor:
            for table, rows in (("jobs", writes.new_jobs), ("events", writes.new_events)):
                if rows:
                    cursor.executemany(_insert(table, rows[0]), [list(r.values()) for r in rows])
            for key, changes in writes.refreshed:
                cursor.execute(_update_job(changes), [*changes.values(), key])
        # the rows were read in part (and locked): a status change takes them whole
        moved = [row.key for row, _, _ in writes.moves]
        whole = {r.key: r for r in self._select_jobs("key = ANY(%s)", [moved])} if moved else {}
        for row, to, detail in writes.moves:
            self._apply(whole[row.key], to, detail, {})
        return recorded(plan, writes)

    def _plan(
        self,
        manifest: str,
        jobs: Sequence[Job],
        columns: Sequence[str],
        make: Callable[[Any], R],
        *,
        lock: bool = False,
        briefs: list[JobBrief] | None = None,
    ) -> Plan[R]:
        """``gather_plan`` over the jobs with one of the plan's keys or recorded for this
        manifest (locked if ``lock``), read as these columns and made by ``make``: a diff
        reads their state, recording their ``PlannedRow``, not whole rows. Given ``briefs``
        (``columns`` then are ``RECORDED_COLUMNS``, ``make`` takes the planned ones), the
        manifest's jobs' briefs are added to it, from the same values."""
        select = f"SELECT {', '.join(columns)} FROM jobs WHERE key = ANY(%s) OR manifest = %s "
        query = select + JOB_ORDER + (" FOR UPDATE" if lock else "")

        def read_rows(keys: list[str], of: str) -> list[R]:
            with self._store.read() as conn, conn.cursor(row_factory=tuple_row) as cursor:
                rows = cursor.execute(query, [keys, of]).fetchall()
            if briefs is None:
                return [make(row) for row in rows]
            briefs.extend(JobBrief.from_values(brief_values(r)) for r in rows if r[1] == of)
            return [make(planned_values(row)) for row in rows]

        return gather_plan(
            manifest, jobs, read_rows=read_rows, restore=self._status_before_orphaning
        )

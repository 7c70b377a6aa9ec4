"""The SQLite ledger: jobs, their events, soul models and uploads in one file (SPEC §4).

``Store`` (store.py) owns the connection and its transactions; this module is what the
interface asks of jobs: queries, status changes, plan recording. Souls and uploads are in
souls.py, the base class.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from runner.ledger.sqlite.claims import JobClaims
from runner.ledger.sqlite.filters import JOB_ORDER, KEYS_IN_SQL, in_json, job_filter, json_text
from runner.ledger.sqlite.lock import ExecutorLock
from runner.ledger.sqlite.migrations import MIGRATIONS, Migration
from runner.ledger.sqlite.store import BUSY_TIMEOUT, Store, selected
from runner.ledger.status import JobStatus, restored_status

if TYPE_CHECKING:
    from runner.jobs import Job  # a type only: the ledger needs no manifest code

_JOB_VALUES = ", ".join(JOB_COLUMNS)
_SELECT_JOBS = f"SELECT {selected(JOB_COLUMNS)} FROM jobs"
_SELECT_BRIEFS = f"SELECT {selected(BRIEF_COLUMNS)} FROM jobs"
_SELECT_REPORT = f"SELECT {selected(REPORT_COLUMNS)} FROM jobs"
T = TypeVar("T")
N = TypeVar("N", bound=tuple[Any, ...])


def _made(cls: type[N]) -> Callable[[Any], N]:
    """``cls``'s constructor from the values a query selected: a ``NamedTuple`` made in C,
    its ``status`` converted as it was fetched (``store.STATUS_TYPE``)."""
    return partial(tuple.__new__, cls)


_brief, _planned_row, _state = _made(JobBrief), _made(PlannedRow), _made(JobState)
_report_row = _made(ReportRow)
_key = attrgetter("key")


class SqliteLedger(JobClaims):
    """The ledger in one SQLite file (``<state>/ledger.db`` by default); see ``Ledger``.

    Use :meth:`open` (read-write) or :meth:`open_readonly`, or ``runner.ledger.open_ledger``.
    The executor lock is an ``flock`` on ``runner.lock`` in the file's directory.
    """

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        clock: Clock = utcnow,
        busy_timeout: float = BUSY_TIMEOUT,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> SqliteLedger:
        """Open for reading and writing, creating the directory and the file if needed;
        pending ``migrations`` are applied when the executor lock is taken or on first use."""
        return cls(
            Store.open(Path(path), clock=clock, busy_timeout=busy_timeout, migrations=migrations)
        )

    @classmethod
    def open_readonly(
        cls, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT
    ) -> SqliteLedger | None:
        """Open an existing ledger without writing to it; ``None`` if there is none yet.

        Never creates a directory or a file. Works while a run writes, and on a ledger in a
        read-only directory. ``LedgerError`` if the file lacks migrations (an older runner).
        """
        store = Store.open_readonly(Path(path), busy_timeout=busy_timeout)
        return cls(store) if store is not None else None

    @property
    def path(self) -> Path:
        """The database file."""
        return self._store.path

    @property
    def url(self) -> str:
        """The database file's path, as given."""
        return str(self._store.path)

    @property
    def id(self) -> str:
        """The ledger's own id (``meta``), read once."""
        if self._id is None:
            with self._store.read() as db:
                rows = list(db.query("SELECT value FROM meta WHERE name = ?", [LEDGER_ID]))
            self._id = str(rows[0]["value"])
        return self._id

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.readonly:
            raise LedgerError(f"the ledger {self.url} was opened read-only")
        with ExecutorLock(self.path.parent, clock=self._store.clock):
            self._store.ensure_schema()
            self.release_all()
            yield

    def executor_lock(self) -> AbstractContextManager[None]:
        """The flock on ``runner.lock`` beside the file; see ``Ledger.executor_lock``."""
        return self._locked()

    def _select_jobs(self, where: str | None = None, params: Sequence[Any] = ()) -> list[JobRow]:
        with self._store.read():
            return list(self._job_rows(where, params))

    def _job_rows(
        self, where: str | None, params: Sequence[Any], keep: Callable[[Any], bool] | None = None
    ) -> Iterator[JobRow]:
        """The rows as the cursor yields them, those ``keep(values)`` accepts if given; the
        caller holds a read (or write) transaction."""
        return self._rows(_SELECT_JOBS, JobRow.from_values, where, params, keep)

    def _rows(
        self,
        select: str,
        make: Callable[[Any], T],
        where: str | None,
        params: Sequence[Any],
        keep: Callable[[Any], bool] | None = None,
    ) -> Iterator[T]:
        """:meth:`_job_rows` of another ``select`` (its first column the key), each made by
        ``make`` from its values."""
        query = select + (f" WHERE {where}" if where else "") + " " + JOB_ORDER
        try:
            rows: Iterable[Any] = self._store.conn.execute(query, list(params))
            yield from map(make, rows if keep is None else filter(keep, rows))
        except sqlite3.Error as err:
            raise LedgerError(f"cannot read the ledger {self.url}: {err}") from err

    def _require(self, key: str) -> JobRow:
        rows = self._select_jobs("key = ?", [key])
        if not rows:
            raise LedgerError(f"no job {key!r} in the ledger {self.url}")
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
        with self._store.read() as db:
            keys = [
                str(row["key"])
                for row in db.query(
                    "SELECT key FROM jobs WHERE substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
                    [len(prefix), prefix, MATCH_LIMIT],
                )
            ]
        return matched_key(prefix, keys)

    def jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> list[JobRow]:
        """Jobs matching every given filter, ordered by manifest, then manifest order."""
        with self._store.read():
            return list(self._job_rows(*job_filter(status, campaign, manifest, keys)))

    def iter_jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> Iterator[JobRow]:
        """:meth:`jobs`, one row at a time from one snapshot (memory stays flat)."""
        with self._store.read():
            yield from self._job_rows(*job_filter(status, campaign, manifest, keys))

    def briefs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> Iterator[JobBrief]:
        """:meth:`iter_jobs`, only the columns of ``JobBrief``."""
        where, params, keep = job_filter(status, campaign, manifest, keys)
        with self._store.read():
            yield from self._rows(_SELECT_BRIEFS, _brief, where, params, keep)

    def events(self, key: str) -> list[EventRow]:
        """A job's status changes, oldest first."""
        with self._store.read() as db:
            rows = db.table("events").rows_where("job_key = ?", [key], order_by="id")
            return [EventRow.from_row(row) for row in rows]

    def report_rows(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
    ) -> Iterator[ReportRow]:
        """:meth:`iter_jobs`, only the columns of ``ReportRow``."""
        where, params, _ = job_filter(status, campaign, manifest, None)
        with self._store.read():
            yield from self._rows(_SELECT_REPORT, _report_row, where, params)

    def generation_times(self, shape: Mapping[str, Any], *, limit: int) -> list[GenerationTime]:
        """How long recent generations of this request shape took; see ``Ledger``."""
        # Newest completions first: the scan stops after ``limit`` matches.
        wheres = "".join(" AND json_extract(j.request, ?) IS ?" for _ in shape)
        params: list[Any] = []
        for name, value in shape.items():
            params += [f"$.{name}", value]
        sql = f"""
            SELECT (julianday(c.at) - julianday(q.at)) * 86400.0 AS seconds, c.detail
            FROM events AS c
            JOIN jobs AS j ON j.key = c.job_key
            JOIN events AS q ON q.id = (
                SELECT max(id) FROM events WHERE job_key = c.job_key AND id < c.id
                AND from_status = 'submitting' AND to_status IN ('queued', 'running'))
            WHERE c.to_status = 'completed' AND c.from_status IN ('queued', 'running'){wheres}
            ORDER BY c.id DESC LIMIT ?"""
        with self._store.read():
            rows = self._store.conn.execute(sql, [*params, limit]).fetchall()
        return [GenerationTime(seconds=float(r[0]), detail=r[1]) for r in rows]

    def counts(self, manifest: str | None = None) -> dict[str, dict[str, int]]:
        """``{campaign: {status: count}}``, campaigns by name, statuses in life-cycle order."""
        where, params = ("WHERE manifest = ?", [manifest]) if manifest is not None else ("", [])
        sql = f"SELECT campaign, status, count(*) AS n FROM jobs {where} GROUP BY campaign, status"
        with self._store.read() as db:
            groups = [(r["campaign"], r["status"], r["n"]) for r in db.query(sql, params)]
        return grouped_counts(groups)

    def status_counts(
        self, manifest: str, campaign: str | Iterable[str] | None = None
    ) -> dict[str, int]:
        """``{status: count}`` in manifest order; see ``Ledger.status_counts``."""
        where, params, _ = job_filter(None, campaign, manifest, None)
        with self._store.read() as db:
            return counted_statuses(lambda sql: db.query(sql, params), str(where))

    def transition(
        self, key: str, to: JobStatus | str, *, detail: str | None = None, **columns: Any
    ) -> JobRow:
        """Move a job to status ``to``, updating ``columns`` and appending the event, atomically
        (see ``Ledger.transition``; the rules are ``runner.ledger.status.check_transition``)."""
        target = JobStatus(to)
        with self._store.write():
            return self._apply(self._require(key), target, detail, columns)

    def transition_many(self, changes: Iterable[Transition]) -> list[JobRow]:
        """Several ``transition`` calls in one transaction; see ``Ledger.transition_many``."""
        with self._store.write():
            return [
                self._apply(self._require(c.key), JobStatus(c.to), c.detail, dict(c.columns))
                for c in changes
            ]

    def note(self, key: str, detail: str) -> None:
        """Append an event that records something without changing the job's status
        (``from_status`` and ``to_status`` are both the current one)."""
        with self._store.write() as db:
            db.table("events").insert(note_event(self._require(key), detail, self._store.now()))

    def bump_attempts(self, key: str) -> int:
        """Count one more attempt for a job (no status change); return the new count."""
        with self._store.write():
            self._require(key)
            row = self._store.conn.execute(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE key = ? "
                "RETURNING attempts",
                [self._store.now(), key],
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
        with self._store.write():
            failed = JobStatus.FAILED
            rows = self.jobs(status=failed, manifest=manifest, keys=keys, campaign=campaigns)
            for row in rows:
                self._apply(row, JobStatus.PENDING, *retry_change(row, self.id))
        return len(rows)

    def _status_before_orphaning(self, key: str) -> JobStatus:
        row = self._store.conn.execute(
            "SELECT from_status FROM events WHERE job_key = ? AND to_status = ? "
            "ORDER BY id DESC LIMIT 1",
            [key, JobStatus.ORPHANED.value],
        ).fetchone()
        return restored_status(row[0] if row is not None else None)

    def _apply(
        self, row: JobRow, to: JobStatus, detail: str | None, columns: dict[str, Any]
    ) -> JobRow:
        """The one place a status changes; the caller holds the write transaction."""
        change = status_change(
            row,
            to,
            detail=detail,
            columns=columns,
            restore=self._status_before_orphaning,
            now=self._store.now(),
        )
        # The row as changed comes back from the UPDATE itself (no read of it afterwards).
        values = self._update_job(row.key, change.updates, f" RETURNING {_JOB_VALUES}").fetchone()
        self._store.conn.execute(
            f"INSERT INTO events ({', '.join(change.event)}) VALUES (?, ?, ?, ?, ?)",
            list(change.event.values()),
        )
        return JobRow.from_values(values)

    def _update_job(
        self, key: str, columns: Mapping[str, Any], returning: str = ""
    ) -> sqlite3.Cursor:
        # Plain SQL (column names come from TRANSITION_COLUMNS or plan.py only): this runs once
        # per job when a plan orphans thousands, and Table.update re-reads the schema each call.
        return self._store.conn.execute(
            f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in columns)} WHERE key = ?{returning}",
            [*columns.values(), key],
        )

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
            plan = self._plan(manifest, jobs, STATE_COLUMNS, _state)
        return diff_with_charges(plan, manifest, charged)

    def record_plan(self, manifest_path: str, jobs: Sequence[Job]) -> PlanDiff:
        """Record a manifest's jobs in one transaction and return the resulting diff: new jobs
        are inserted as ``pending`` (idempotency key ``<key>-1``); jobs the ledger knows keep
        their status and get their path, credits, order and tags refreshed (and move to this
        manifest if another one recorded them); orphaned jobs the manifest produces again go
        back to the status they had; every job recorded for this manifest path that it no
        longer produces becomes ``orphaned``. Nothing is deleted."""
        manifest = str(manifest_path)
        with self._store.write():
            plan = self._plan(manifest, jobs, PLANNED_COLUMNS, _planned_row)
            return self._write_plan(manifest, plan)

    def record_plan_checked(
        self, manifest_path: str, jobs: Sequence[Job], ready: Callable[[list[JobBrief]], bool]
    ) -> PlanDiff | None:
        """:meth:`record_plan` once ``ready`` has seen the manifest's briefs, read in its
        transaction with the plan's rows; see ``Ledger.record_plan_checked``."""
        manifest = str(manifest_path)
        briefs: list[JobBrief] = []
        with self._store.write():
            plan = self._plan(manifest, jobs, RECORDED_COLUMNS, _planned_row, briefs)
            if not ready(briefs):
                return None
            return self._write_plan(manifest, plan)

    def _write_plan(self, manifest: str, plan: Plan[PlannedRow]) -> PlanDiff:
        """Carry out ``plan`` (``plan.plan_writes``), in the caller's write transaction."""
        writes = plan_writes(plan, manifest, self._store.now(), self.id)
        conn = self._store.conn
        for table, rows in (("jobs", writes.new_jobs), ("events", writes.new_events)):
            if rows:  # plain SQL: sqlite-utils' insert_all costs more than the inserts
                names = list(rows[0])
                conn.executemany(
                    f"INSERT INTO {table} ({', '.join(names)}) "
                    f"VALUES ({', '.join('?' * len(names))})",
                    [[row[n] for n in names] for row in rows],
                )
        for key, changes in writes.refreshed:
            self._update_job(key, changes)
        # the rows were read in part: a status change takes them whole
        whole = {r.key: r for r in self.jobs(keys=[row.key for row, _, _ in writes.moves])}
        for row, to, detail in writes.moves:
            self._apply(whole[row.key], to, detail, {})
        return recorded(plan, writes)

    def _planned(
        self,
        keys: list[str],
        manifest: str,
        columns: Sequence[str],
        make: Callable[[Any], R],
        briefs: list[JobBrief] | None = None,
    ) -> list[R]:
        """The jobs recorded for this manifest, in ``jobs()`` order (the index's), then those
        of other manifests that have one of these keys (see ``job_filter`` for why many keys
        are looked up in Python), made by ``make`` from these columns (``key`` first). Given
        ``briefs`` (``columns`` then are ``RECORDED_COLUMNS``, ``make`` takes the planned
        ones), the manifest's jobs' briefs are added to it, from the same values."""
        select = f"SELECT {selected(columns)} FROM jobs"
        if briefs is None:
            rows = list(self._rows(select, make, "manifest = ?", [manifest]))
        else:
            values = list(self._rows(select, tuple, "manifest = ?", [manifest]))
            briefs += map(_brief, map(brief_values, values))
            rows = list(map(make, map(planned_values, values)))
            planned = make
            make = lambda v: planned(planned_values(v))  # noqa: E731
        others = list(set(keys).difference(map(_key, rows)))  # (their order: the query's)
        if len(others) <= KEYS_IN_SQL:
            if others:
                rows += self._rows(select, make, in_json("key"), [json_text(others)])
        else:
            wanted = set(others)
            rows += self._rows(select, make, None, [], lambda v: v[0] in wanted)
        return rows

    def _plan(
        self,
        manifest: str,
        jobs: Sequence[Job],
        columns: Sequence[str],
        make: Callable[[Any], R],
        briefs: list[JobBrief] | None = None,
    ) -> Plan[R]:
        """``gather_plan`` over the rows of these columns, made by ``make`` (and, given
        ``briefs``, the manifest's briefs: see ``_planned``)."""
        return gather_plan(
            manifest,
            jobs,
            read_rows=lambda keys, of: self._planned(keys, of, columns, make, briefs),
            restore=self._status_before_orphaning,
        )

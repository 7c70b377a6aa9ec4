"""The ledger contract: every implementation, through the public interface only.

Each test runs once per entry of ``BACKENDS``: SQLite, and PostgreSQL in a throwaway cluster
(``tests/pgcluster.py``; skipped, saying why, where PostgreSQL is not installed). What only
concerns SQLite's file (WAL, migrations, read-only directories) is in
``tests/test_ledger_sqlite.py``; PostgreSQL's own (its schema, locks, URLs) in
``tests/test_ledger_postgres.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.errors import LedgerError, LedgerLockedError, TransitionError
from runner.jobs import Job
from runner.ledger import (
    TRANSITION_COLUMNS,
    TRANSITIONS,
    JobBrief,
    JobRow,
    JobStatus,
    Ledger,
    ReportRow,
    Transition,
    default_ledger_url,
    open_ledger,
)
from runner.ledger.status import check_transition, restored_status, retry_idempotency_key

S = JobStatus
MANIFEST = "/work/m.yaml"

# The contract the executor relies on, written out independently of runner.ledger.TRANSITIONS.
ALLOWED: dict[str, set[str]] = {
    # → queued / completed: a retried job whose earlier generation is found under way / done
    "pending": {"submitting", "queued", "completed", "failed", "orphaned"},
    "submitting": {"submitting", "queued", "running", "completed", "failed", "pending", "orphaned"},
    "queued": {"queued", "running", "completed", "failed", "orphaned"},
    "running": {"running", "completed", "failed", "orphaned"},
    "completed": {"completed", "downloaded", "failed", "orphaned"},
    "downloaded": {"downloaded", "orphaned", "completed"},  # → itself: the video moved
    "failed": {"pending", "orphaned"},
}

#: Every column of a job, as ``JobRow.to_dict`` gives it.
JOB_COLUMNS = {
    "key", "campaign", "manifest", "job_index", "request", "vars", "path", "status",
    "generation_id", "idempotency_key", "attempts", "error", "video_url", "bytes", "sha256",
    "credits", "soul", "tags", "variant", "created_at", "updated_at", "location", "expires_at",
    "prior_generation_id", "priced_by",
}  # fmt: skip

# How to walk a pending job into each status through allowed transitions.
PATHS: dict[str, list[str]] = {
    "pending": [],
    "submitting": ["submitting"],
    "queued": ["submitting", "queued"],
    "running": ["submitting", "queued", "running"],
    "completed": ["submitting", "queued", "completed"],
    "downloaded": ["submitting", "queued", "completed", "downloaded"],
    "failed": ["submitting", "failed"],
    "orphaned": ["orphaned"],
}


def make_job(
    campaign: str = "c",
    index: int = 0,
    *,
    prompt: str = "a prompt",
    manifest: str = MANIFEST,
    credits: float = 8.0,
    tags: tuple[str, ...] = (),
    **row: Any,
) -> Job:
    """A Job as runner.jobs would build it, keyed by campaign, row and request."""
    request = {"type": "text-to-video", "prompt": prompt.format(**row), "duration": 8}
    canonical = json.dumps([campaign, row, request], sort_keys=True)
    key = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return Job(
        key=key,
        campaign=campaign,
        manifest=manifest,
        index=index,
        vars=dict(row),
        request=request,
        path=f"{campaign}/{key}.mp4",
        credits=credits,
        tags=tags,
    )


def matrix_jobs(campaign: str, prompt: str, start: int = 0, **matrix: list[Any]) -> list[Job]:
    """The cartesian product of ``matrix`` as jobs of one campaign, in declaration order."""
    names = list(matrix)
    return [
        make_job(campaign, start + i, prompt=prompt, **dict(zip(names, values, strict=True)))
        for i, values in enumerate(itertools.product(*matrix.values()))
    ]


class FakeClock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


# --- the implementations under test -------------------------------------------------------

#: The failures a test can inject, each making a ledger write fail with this message.
INJECTED = "injected failure"


@dataclass(frozen=True)
class Backend:
    """One ledger implementation: how to name a fresh ledger, and how an outside client
    makes its writes fail (to check that a failed write leaves nothing behind)."""

    name: str
    # a ledger that does not exist yet: under tmp_path, or from the test's fixtures
    fresh_url: Callable[[pytest.FixtureRequest, Path], str]
    # ``failing(url, what)``: while held, writes fail with INJECTED; ``what`` is "event"
    # (any event insert) or "orphan" (any job becoming orphaned). Leaving the block must
    # not wait for the ledger: it fails if the ledger still holds a write transaction.
    failing: Callable[[str, str], AbstractContextManager[None]]
    # whether one process at a time executes (SQLite); PostgreSQL lets many (SPEC §8)
    one_executor: bool = True


_SQLITE_TRIGGERS = {
    "event": "BEFORE INSERT ON events",
    "orphan": "BEFORE UPDATE OF status ON jobs WHEN NEW.status = 'orphaned'",
}


@contextmanager
def sqlite_failing(url: str, what: str) -> Iterator[None]:
    """A trigger added and dropped by an outside sqlite3 client, as any tool could."""
    conn = sqlite3.connect(url, timeout=0, isolation_level=None)
    try:
        conn.execute(
            f"CREATE TRIGGER injected {_SQLITE_TRIGGERS[what]} "
            f"BEGIN SELECT RAISE(ABORT, '{INJECTED}'); END"
        )
        yield
        conn.execute("DROP TRIGGER injected")  # timeout 0: refused while a write is open
    finally:
        conn.close()


_POSTGRES_TRIGGERS = {  # what: (table, trigger)
    "event": ("events", "BEFORE INSERT ON events FOR EACH ROW"),
    "orphan": (
        "jobs",
        "BEFORE UPDATE OF status ON jobs FOR EACH ROW WHEN (NEW.status = 'orphaned')",
    ),
}


@contextmanager
def postgres_failing(url: str, what: str) -> Iterator[None]:
    """A trigger added and dropped by an outside psycopg client, as any tool could."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql"
            f" AS $$ BEGIN RAISE EXCEPTION '{INJECTED}'; END $$"
        )
        table, trigger = _POSTGRES_TRIGGERS[what]
        conn.execute(f"CREATE TRIGGER injected {trigger} EXECUTE FUNCTION injected()")
        yield
        # DROP TRIGGER waits for every transaction that touched the table: refuse instead
        conn.execute("SET lock_timeout = '1ms'")
        conn.execute(f"DROP TRIGGER injected ON {table}")
        conn.execute("DROP FUNCTION injected()")


BACKENDS = [
    Backend("sqlite", lambda _, tmp: default_ledger_url(tmp / "state"), sqlite_failing),
    Backend(
        "postgresql",
        lambda request, _: str(request.getfixturevalue("pg_url")),
        postgres_failing,
        one_executor=False,
    ),
]


@pytest.fixture(params=BACKENDS, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each implementation in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def url(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a fresh ledger of this implementation lives (nothing there yet)."""
    return backend.fresh_url(request, tmp_path)


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    """A fresh ledger, opened read-write."""
    with open_ledger(url) as led:
        yield led


def walk(ledger: Ledger, key: str, path: list[str]) -> None:
    for status in path:
        ledger.transition(key, status)


# --- opening, read-only, the executor lock -------------------------------------------------


def test_readonly_without_a_ledger_is_none(url: str) -> None:
    """No ledger yet: a read-only open returns None, and a read-only open creates nothing
    that a later one would take for a ledger."""
    assert open_ledger(url, readonly=True) is None
    assert open_ledger(url, readonly=True) is None


def test_a_ledger_opened_but_never_used_is_none_to_readers(url: str) -> None:
    """Opening read-write sets nothing up until first use: readers still see no ledger."""
    with open_ledger(url):
        assert open_ledger(url, readonly=True) is None


def test_readonly_reads_and_refuses_every_write(url: str) -> None:
    """A read-only ledger answers every read and refuses every write with LedgerError."""
    job = make_job()
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, [job])
        led.set_soul("ava", MANIFEST, status="ready", model_id="m1")
        led.record_upload("a" * 64, "https://cdn.example/1.jpg")
    led_ro = open_ledger(url, readonly=True)
    assert led_ro is not None
    with led_ro:
        assert led_ro.readonly
        assert [r.key for r in led_ro.jobs()] == [job.key]
        assert led_ro.get(job.key) is not None and led_ro.match_key(job.key[:12]) == job.key
        assert led_ro.counts() == {"c": {"pending": 1}}
        assert [e.to_status for e in led_ro.events(job.key)] == [S.PENDING]
        assert led_ro.diff(MANIFEST, [job]).statuses == {job.key: "pending"}
        assert [s.model_id for s in led_ro.souls()] == ["m1"]
        assert led_ro.get_soul("ava", MANIFEST) is not None
        assert led_ro.get_upload("a" * 64) == "https://cdn.example/1.jpg"
        writes: list[Callable[[], object]] = [
            lambda: led_ro.transition(job.key, S.SUBMITTING),
            lambda: led_ro.note(job.key, "x"),
            lambda: led_ro.bump_attempts(job.key),
            lambda: led_ro.retry_failed(MANIFEST),
            lambda: led_ro.record_plan(MANIFEST, []),
            lambda: led_ro.set_soul("ava", MANIFEST, status="failed"),
            lambda: led_ro.record_upload("b" * 64, "https://cdn.example/2.jpg"),
            lambda: led_ro.executor_lock().__enter__(),
        ]
        for write in writes:
            with pytest.raises(LedgerError, match="read-only"):
                write()
    with open_ledger(url) as led:
        row = led.get(job.key)
        assert row is not None and row.status is S.PENDING
        assert [e.to_status for e in led.events(job.key)] == [S.PENDING]
        assert led.get_upload("b" * 64) is None


def test_readonly_reads_while_the_executor_writes(url: str) -> None:
    """With the executor lock held by a writer, a read-only ledger sees every commit."""
    job = make_job()
    with open_ledger(url) as writer, writer.executor_lock():
        writer.record_plan(MANIFEST, [job])
        reader = open_ledger(url, readonly=True)
        assert reader is not None
        with reader:
            assert reader.counts() == {"c": {"pending": 1}}
            writer.transition(job.key, S.SUBMITTING)
            assert reader.counts() == {"c": {"submitting": 1}}


def test_one_executor_per_ledger(backend: Backend, url: str) -> None:
    """A second executor lock, from this process or another ledger object, is refused with
    the holder's pid; once released it can be taken again, and the ledger is usable."""
    if not backend.one_executor:
        pytest.skip(f"{backend.name} lets several processes execute at once (SPEC §8)")
    with open_ledger(url) as first, open_ledger(url) as second:
        with first.executor_lock():
            for led in (first, second):
                with pytest.raises(LedgerLockedError, match=f"held by pid {os.getpid()} since "):
                    led.executor_lock().__enter__()
        with second.executor_lock():
            second.record_plan(MANIFEST, [make_job()])
            assert len(first.jobs()) == 1
        with first.executor_lock():
            pass


def test_several_executors_where_allowed(backend: Backend, url: str) -> None:
    """Where many processes may execute (PostgreSQL), the executor lock never waits and
    never refuses: two ledgers hold it at once and both write; it sets the schema up."""
    if backend.one_executor:
        pytest.skip(f"{backend.name} has one executor at a time")
    jobs = [make_job(n=1), make_job(n=2)]
    with open_ledger(url) as first, open_ledger(url) as second:
        with first.executor_lock(), second.executor_lock(), first.executor_lock():
            reader = open_ledger(url, readonly=True)
            assert reader is not None  # the schema is there: the lock set it up
            reader.close()
            first.record_plan(MANIFEST, jobs)
            second.transition(jobs[0].key, "submitting")
            first.transition(jobs[1].key, "failed")
        assert {r.status for r in second.jobs()} == {S.SUBMITTING, S.FAILED}


def test_url_names_the_ledger(url: str) -> None:
    """``url`` opens the same ledger again, read-write and read-only."""
    job = make_job()
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, [job])
        assert not led.readonly
        again = led.url
    with open_ledger(again) as led:
        assert led.get(job.key) is not None
    reader = open_ledger(again, readonly=True)
    assert reader is not None
    with reader:
        assert reader.url == again


def test_open_ledger_url_forms(tmp_path: Path) -> None:
    """A path to the SQLite file and sqlite:///abs/path name the same ledger."""
    assert default_ledger_url(tmp_path / "state") == str(tmp_path / "state" / "ledger.db")
    job = make_job()
    with open_ledger(default_ledger_url(tmp_path / "state")) as led:
        led.record_plan(MANIFEST, [job])
    with open_ledger(f"sqlite://{tmp_path}/state/ledger.db") as led:
        assert led.get(job.key) is not None
    reader = open_ledger(f"sqlite://{tmp_path}/state/ledger.db", readonly=True)
    assert reader is not None
    reader.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://runner:s3cret@db.example/ledger", r"mysql://runner:\*\*\*@db.example/ledger"),
        ("sqlite://relative/ledger.db", "sqlite://relative/ledger.db"),
        ("", "give a path"),
    ],
)
def test_open_ledger_refuses_other_urls(tmp_path: Path, url: str, message: str) -> None:
    """A URL that is neither SQLite nor PostgreSQL is a LedgerError naming it, never with its
    password; nothing is created."""
    for readonly in (False, True):
        with pytest.raises(LedgerError, match=message) as caught:
            open_ledger(url, readonly=readonly)
        assert "s3cret" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_not_a_ledger_url(tmp_path: Path) -> None:
    """Giving the state directory instead of its ledger file says so."""
    with pytest.raises(LedgerError, match="is a directory"):
        open_ledger(str(tmp_path))


# --- transitions --------------------------------------------------------------------------


def test_transition_table_is_the_contract() -> None:
    """``TRANSITIONS`` allows exactly the changes the executor relies on."""
    assert {s.value: {t.value for t in ts} for s, ts in TRANSITIONS.items() if ts} == ALLOWED
    assert TRANSITIONS[S.ORPHANED] == frozenset()  # only back where it came from


def test_check_transition_is_the_one_rule() -> None:
    """The pure rule every implementation calls: the table, orphans going back where they
    were, resends keeping their key, and only the transition columns."""
    for start, targets in ALLOWED.items():
        for to in S:
            if to.value in targets:
                check_transition("k", S(start), to, {}, idempotency_key="k-1")
            else:
                with pytest.raises(TransitionError, match=f"job k: {start} → {to.value}"):
                    check_transition("k", S(start), to, {}, idempotency_key="k-1")
    for before in S:
        for to in S:
            if to is before:
                check_transition(
                    "k", S.ORPHANED, to, {}, idempotency_key="k-1", before_orphaning=before
                )
            else:
                with pytest.raises(TransitionError):
                    check_transition(
                        "k", S.ORPHANED, to, {}, idempotency_key="k-1", before_orphaning=before
                    )
    assert restored_status(None) is S.PENDING
    assert restored_status("orphaned") is S.PENDING
    assert restored_status("queued") is S.QUEUED
    resend = check_transition("k", S.SUBMITTING, S.SUBMITTING, {}, idempotency_key="k-1")
    assert resend == "resent with the same idempotency key k-1"
    assert check_transition("k", S.PENDING, S.SUBMITTING, {}, idempotency_key="k-1") is None
    with pytest.raises(TransitionError, match="never a new one"):
        check_transition(
            "k", S.SUBMITTING, S.SUBMITTING, {"idempotency_key": "k-2"}, idempotency_key="k-1"
        )
    with pytest.raises(TypeError, match="campaign"):
        check_transition("k", S.PENDING, S.SUBMITTING, {"campaign": "x"}, idempotency_key="k-1")
    assert retry_idempotency_key("k", "L-k-1", "L") == "L-k-2"
    assert retry_idempotency_key("k", "L-k-9", "L") == "L-k-10"
    assert retry_idempotency_key("k", "k-3", "L") == "L-k-4"  # a key from before ledger ids
    assert retry_idempotency_key("k", "other", "L") == "L-k-2"


@pytest.mark.parametrize(
    ("start", "to"), [(s, t) for s in PATHS for t in PATHS], ids=lambda v: str(v)
)
def test_every_transition_allowed_or_refused(ledger: Ledger, start: str, to: str) -> None:
    """Each (from, to) pair is accepted iff the contract allows it; a refusal changes nothing."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    walk(ledger, job.key, PATHS[start])
    before = ledger.events(job.key)
    allowed = ALLOWED.get(start, {"pending"})  # an orphaned pending job may only go back
    if to in allowed:
        row = ledger.transition(job.key, to)
        assert row.status == to
        last = ledger.events(job.key)[-1]
        assert (last.from_status, last.to_status) == (start, to)
    else:
        with pytest.raises(TransitionError, match=f"{start} → {to}"):
            ledger.transition(job.key, to)
        assert ledger.events(job.key) == before
        row_after = ledger.get(job.key)
        assert row_after is not None and row_after.status == start


def test_orphaned_job_only_returns_to_its_previous_status(ledger: Ledger) -> None:
    """A downloaded job that was orphaned may go back to downloaded and nowhere else."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    walk(ledger, job.key, PATHS["downloaded"] + ["orphaned"])
    for to in ("pending", "completed", "submitting"):
        with pytest.raises(TransitionError):
            ledger.transition(job.key, to)
    assert ledger.transition(job.key, "downloaded").status is S.DOWNLOADED


def test_transition_sets_columns_and_writes_the_event(url: str) -> None:
    """Columns given to transition land in the row; the event carries the same timestamp."""
    clock = FakeClock()
    with open_ledger(url, clock=clock) as led:
        job = make_job()
        led.record_plan(MANIFEST, [job])
        led.transition(job.key, "submitting", detail="sending")
        row = led.transition(
            job.key, S.QUEUED, detail="accepted", generation_id="gen-1", attempts=1
        )
        assert (row.status, row.generation_id, row.attempts) == (S.QUEUED, "gen-1", 1)
        assert row.idempotency_key == f"{led.id}-{job.key}-1"
        events = led.events(job.key)
        assert [(e.from_status, e.to_status, e.detail) for e in events] == [
            (None, S.PENDING, f"planned from {MANIFEST}"),
            (S.PENDING, S.SUBMITTING, "sending"),
            (S.SUBMITTING, S.QUEUED, "accepted"),
        ]
        assert events[-1].at == row.updated_at
        assert datetime.fromisoformat(row.updated_at).utcoffset() == timedelta(0)
        assert row.created_at < row.updated_at
        row = led.transition(job.key, "completed", video_url="https://v/1.mp4", error=None)
        row = led.transition(job.key, "downloaded", bytes=1234, sha256="cd" * 32)
        assert (row.video_url, row.bytes, row.sha256) == ("https://v/1.mp4", 1234, "cd" * 32)


def test_location_is_written_with_downloaded(ledger: Ledger, tmp_path: Path) -> None:
    """``location`` (a path or an s3:// URI) is set in the same change as downloaded, and
    cleared the same way when the file must be fetched again."""
    assert "location" in TRANSITION_COLUMNS
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    assert ledger.get(job.key).location is None  # type: ignore[union-attr]
    walk(ledger, job.key, PATHS["completed"])
    where = str(tmp_path / "videos" / "c" / "x.mp4")
    row = ledger.transition(job.key, "downloaded", bytes=1, sha256="ab" * 32, location=where)
    assert (row.status, row.location) == (S.DOWNLOADED, where)
    assert ledger.get(job.key) == row
    assert ledger.jobs(status="downloaded")[0].location == where
    row = ledger.transition(job.key, "completed", location=None, detail="file missing")
    assert row.location is None
    ledger.transition(job.key, "downloaded", location="s3://bucket/c/x.mp4")
    assert ledger.get(job.key).to_dict()["location"] == "s3://bucket/c/x.mp4"  # type: ignore[union-attr]


def test_resend_keeps_the_idempotency_key_and_says_so(ledger: Ledger) -> None:
    """submitting → submitting is a resend with the same key; a new key is refused."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    ledger.transition(job.key, "submitting")
    ledger.transition(job.key, "submitting", idempotency_key=f"{ledger.id}-{job.key}-1")
    assert "same idempotency key" in (ledger.events(job.key)[-1].detail or "")
    with pytest.raises(TransitionError, match="never a new one"):
        ledger.transition(job.key, "submitting", idempotency_key=f"{ledger.id}-{job.key}-2")
    row = ledger.get(job.key)
    assert row is not None and row.idempotency_key == f"{ledger.id}-{job.key}-1"


def test_one_job_changed_by_many_at_once_takes_turns(url: str) -> None:
    """Eight ledgers change one job at once: they take turns, each change checked against
    the one committed before it. Of eight ``failed``, one wins and seven are refused
    (failed → failed); of eight ``submitting``, one submits and seven are resends. Every
    event starts where the one before it ended."""
    n = 8
    failing, sending = make_job(n=1), make_job(n=2)
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, [failing, sending])
    start = threading.Barrier(n)
    outcomes: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with open_ledger(url) as led:
                start.wait()
                for job, to in ((failing, "failed"), (sending, "submitting")):
                    try:
                        led.transition(job.key, to)
                        outcomes.append((job.key, "changed"))
                    except TransitionError:
                        outcomes.append((job.key, "refused"))
        except BaseException as err:  # collected and asserted on below
            errors.append(err)

    workers = [threading.Thread(target=work) for _ in range(n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sorted(outcomes) == sorted(
        [(failing.key, "changed")] + [(failing.key, "refused")] * (n - 1)
        + [(sending.key, "changed")] * n
    )  # fmt: skip
    with open_ledger(url) as led:
        assert [e.to_status for e in led.events(failing.key)] == [S.PENDING, S.FAILED]
        history = led.events(sending.key)
        assert [e.to_status for e in history] == [S.PENDING] + [S.SUBMITTING] * n
        assert all(e.from_status == before.to_status for before, e in itertools.pairwise(history))
        assert [e.detail for e in history[2:]] == [
            f"resent with the same idempotency key {led.id}-{sending.key}-1"
        ] * (n - 1)


def test_transition_refuses_unknown_columns_and_keys(ledger: Ledger) -> None:
    """Only the documented columns may be set, and only on a job the ledger has."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    with pytest.raises(TypeError, match="campaign"):
        ledger.transition(job.key, "submitting", campaign="other")
    with pytest.raises(LedgerError, match="no job"):
        ledger.transition("0" * 16, "submitting")
    with pytest.raises(ValueError):
        ledger.transition(job.key, "exploded")


def test_failed_event_insert_leaves_neither_row_nor_event(
    backend: Backend, url: str, ledger: Ledger
) -> None:
    """If the event cannot be written, the status change is rolled back with it, and no
    transaction is left open."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    with backend.failing(url, "event"):
        with pytest.raises(LedgerError, match=INJECTED):
            key = f"{ledger.id}-{job.key}-1"
            ledger.transition(job.key, "submitting", idempotency_key=key, attempts=3)
        row = ledger.get(job.key)
        assert row is not None
        assert (row.status, row.attempts) == (S.PENDING, 0)
        assert [e.to_status for e in ledger.events(job.key)] == [S.PENDING]
    # leaving the block did not wait for a write lock; a new write transaction can begin
    assert ledger.transition(job.key, "submitting").status is S.SUBMITTING


def test_failed_plan_recording_writes_nothing(backend: Backend, url: str, ledger: Ledger) -> None:
    """record_plan is one transaction: a failure while orphaning undoes the inserts too."""
    old, new = make_job(index=0, n=1), make_job(index=0, n=2)
    ledger.record_plan(MANIFEST, [old])
    with backend.failing(url, "orphan"):
        with pytest.raises(LedgerError, match=INJECTED):
            ledger.record_plan(MANIFEST, [new])
        assert [r.key for r in ledger.jobs()] == [old.key]
        assert ledger.get(new.key) is None
        assert ledger.events(new.key) == []
    assert ledger.record_plan(MANIFEST, [new]).orphaned_keys == (old.key,)


# --- other job records --------------------------------------------------------------------


def test_jobs_filters_and_order(ledger: Ledger) -> None:
    """jobs() filters by status, campaign, manifest and keys, ordered by manifest then index."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    b = matrix_jobs("b", "{x}", start=3, x=[1, 2])
    other = make_job("z", 0, manifest="/other.yaml", x=9)
    ledger.record_plan(MANIFEST, list(reversed(a + b)))
    ledger.record_plan("/other.yaml", [other])
    ledger.transition(a[1].key, "failed", error="nope")

    # "/other.yaml" sorts before "/work/m.yaml"
    assert [r.key for r in ledger.jobs()] == [other.key] + [j.key for j in a + b]
    assert [r.key for r in ledger.jobs(manifest=MANIFEST)] == [j.key for j in a + b]
    assert [r.key for r in ledger.jobs(campaign="b")] == [j.key for j in b]
    assert [r.key for r in ledger.jobs(campaign=["b", "z"])] == [other.key] + [j.key for j in b]
    assert [r.key for r in ledger.jobs(status="failed")] == [a[1].key]
    assert [r.key for r in ledger.jobs(status=[S.FAILED, S.PENDING], campaign="a")] == [
        j.key for j in a
    ]
    assert [r.key for r in ledger.jobs(keys={b[1].key, a[0].key})] == [a[0].key, b[1].key]
    assert ledger.jobs(keys=[]) == []
    row = ledger.jobs(status="failed")[0]
    assert (row.error, row.vars, row.request["prompt"]) == ("nope", {"x": 2}, "2")


def test_briefs_are_the_rows_of_jobs_in_a_few_columns(ledger: Ledger) -> None:
    """briefs() takes the filters of jobs() and gives the same jobs in the same order, each
    with its key, manifest, campaign, status, path, location, bytes, credits, generation id
    and error as jobs() has them; many keys are filtered as well as few."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    b = matrix_jobs("b", "{x}", start=3, x=[1, 2])
    ledger.record_plan(MANIFEST, list(reversed(a + b)))
    ledger.record_plan("/other.yaml", [make_job("z", 0, manifest="/other.yaml", x=9)])
    walk(ledger, a[0].key, PATHS["completed"])
    ledger.transition(a[0].key, "downloaded", bytes=1, location="/v/a.mp4")
    ledger.transition(b[1].key, "failed", error="nope")
    many = [j.key for j in a + b] + [f"absent{i}" for i in range(1500)]
    filters: list[dict[str, Any]] = [
        {},
        {"manifest": MANIFEST},
        {"status": ["downloaded", "failed"]},
        {"campaign": "b", "status": "failed"},
        {"keys": [b[0].key, a[2].key]},
        {"keys": many},
        {"keys": []},
    ]
    for where in filters:
        rows = ledger.jobs(**where)
        briefs = list(ledger.briefs(**where))
        assert [tuple(getattr(r, c) for c in JobBrief._fields) for r in rows] == briefs, where
        assert all(isinstance(x.status, S) for x in briefs)
    assert [x.key for x in ledger.briefs(keys=many)] == [j.key for j in a + b]
    done = next(ledger.briefs(status="downloaded"))
    assert (done.key, done.bytes, done.location) == (a[0].key, 1, "/v/a.mp4")


def test_report_rows_are_the_rows_of_jobs_in_the_reports_columns(ledger: Ledger) -> None:
    """report_rows() takes the manifest, status and campaign filters of jobs() and gives the
    same jobs in the same order, each with the columns the report reads as jobs() has them,
    its JSON columns (request, vars, tags) as the text that decodes to jobs()' values."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    b = matrix_jobs("b", "{x}", start=3, x=[1, 2])
    b[0] = dataclasses.replace(b[0], tags=("weekly", "é"), soul="ava", variant=2)
    ledger.record_plan(MANIFEST, list(reversed(a + b)))
    ledger.record_plan("/other.yaml", [make_job("z", 0, manifest="/other.yaml", x=9)])
    walk(ledger, a[0].key, PATHS["completed"])
    ledger.transition(a[0].key, "downloaded", bytes=1, location="/v/a.mp4", sha256="ab")
    ledger.transition(b[1].key, "failed", error="nope")
    filters: list[dict[str, Any]] = [
        {},
        {"manifest": MANIFEST},
        {"status": ["downloaded", "failed"]},
        {"campaign": ["b", "z"], "status": "failed"},
        {"manifest": "/other.yaml", "campaign": "z"},
    ]
    json_columns = {"request", "vars", "tags"}
    for where in filters:
        rows = ledger.jobs(**where)
        shown = list(ledger.report_rows(**where))
        assert [r.key for r in rows] == [s.key for s in shown], where
        for row, report in zip(rows, shown, strict=True):
            assert isinstance(report.status, S)
            for column in ReportRow._fields:
                value = getattr(report, column)
                if column in json_columns:
                    value = json.loads(value)
                    value = tuple(value) if column == "tags" else value
                assert value == getattr(row, column), (where, column)
    done = next(ledger.report_rows(status="downloaded"))
    assert (done.key, done.bytes, done.location, done.sha256) == (a[0].key, 1, "/v/a.mp4", "ab")


def test_counts_per_campaign_and_status(ledger: Ledger) -> None:
    """counts() groups by campaign and status, optionally for one manifest."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    ledger.record_plan(MANIFEST, a)
    ledger.record_plan("/other.yaml", [make_job("z", manifest="/other.yaml")])
    walk(ledger, a[0].key, PATHS["downloaded"])
    ledger.transition(a[1].key, "failed")
    assert ledger.counts() == {
        "a": {"pending": 1, "downloaded": 1, "failed": 1},
        "z": {"pending": 1},
    }
    assert list(ledger.counts()["a"]) == ["pending", "downloaded", "failed"]
    assert ledger.counts(MANIFEST) == {"a": {"pending": 1, "downloaded": 1, "failed": 1}}
    assert ledger.counts("/nowhere.yaml") == {}


def test_status_counts_in_manifest_order(ledger: Ledger) -> None:
    """status_counts() is one grouped query giving what tallying briefs() gives: a manifest's
    statuses (of some campaigns, if asked) in the order its jobs first have them."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3, 4])
    b = matrix_jobs("b", "{x}", start=4, x=[1, 2])
    ledger.record_plan(MANIFEST, a + b)
    ledger.record_plan("/other.yaml", [make_job("z", manifest="/other.yaml")])
    walk(ledger, a[1].key, PATHS["downloaded"])
    walk(ledger, a[3].key, PATHS["downloaded"])
    ledger.transition(a[2].key, "failed")
    ledger.transition(b[0].key, "failed")
    ledger.record_plan(MANIFEST, [a[2], a[3], *b, a[1]])  # a new order; a[0] orphaned

    def tallied(**where: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for brief in ledger.briefs(manifest=MANIFEST, **where):
            counts[brief.status.value] = counts.get(brief.status.value, 0) + 1
        return counts

    counts = ledger.status_counts(MANIFEST)
    assert counts == tallied()
    assert list(counts) == list(tallied())
    assert counts == {"failed": 2, "downloaded": 2, "pending": 1, "orphaned": 1}
    in_b = {"failed": 1, "pending": 1}
    assert ledger.status_counts(MANIFEST, "b") == tallied(campaign="b") == in_b
    assert list(ledger.status_counts(MANIFEST, ["b", "a"])) == list(tallied(campaign=["a", "b"]))
    assert ledger.status_counts("/other.yaml") == {"pending": 1}
    assert ledger.status_counts("/nowhere.yaml") == {}
    assert ledger.status_counts(MANIFEST, []) == {}


def test_record_plan_says_when_it_wrote_nothing(ledger: Ledger) -> None:
    """A recorded plan's diff is ``unchanged`` only when recording wrote nothing: no new job,
    no refreshed column, no status change (what a run then reads again, or not)."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    assert not ledger.diff(MANIFEST, a).unchanged  # a diff records nothing to say so of
    assert not ledger.record_plan(MANIFEST, a).unchanged  # new jobs
    assert ledger.record_plan(MANIFEST, a).unchanged
    moved = [a[0], dataclasses.replace(a[1], path="elsewhere.mp4"), a[2]]
    assert not ledger.record_plan(MANIFEST, moved).unchanged  # a refreshed path
    assert ledger.record_plan(MANIFEST, moved).unchanged
    retagged = [*moved[:2], dataclasses.replace(a[2], tags=("t",))]
    assert not ledger.record_plan(MANIFEST, retagged).unchanged  # a refreshed JSON column
    assert not ledger.record_plan(MANIFEST, retagged[:2]).unchanged  # a[2] orphaned
    assert ledger.record_plan(MANIFEST, retagged[:2]).unchanged  # already orphaned
    assert not ledger.record_plan(MANIFEST, retagged).unchanged  # produced again
    assert ledger.record_plan(MANIFEST, retagged).unchanged
    assert [r.status for r in ledger.jobs()] == [JobStatus.PENDING] * 3


def test_record_plan_checked_shows_the_manifests_briefs_before_writing(ledger: Ledger) -> None:
    """``record_plan_checked`` first shows ``ready`` the manifest's jobs as ``briefs`` reads
    them (the same briefs, in the same order; no other manifest's, even with a key of the
    plan); when ``ready`` says no, nothing is written; when yes, the plan is recorded as
    ``record_plan`` records it, and an unchanged diff means those briefs are the jobs after."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    z = make_job("z", 0, manifest="/other.yaml", x=9)
    ledger.record_plan("/other.yaml", [z])
    seen: list[list[JobBrief]] = []

    def answer(yes: bool) -> Callable[[list[JobBrief]], bool]:
        def ready(briefs: list[JobBrief]) -> bool:
            seen.append(briefs)
            return yes

        return ready

    assert ledger.record_plan_checked(MANIFEST, a, answer(False)) is None
    assert seen == [[]]
    assert [r.key for r in ledger.jobs()] == [z.key]  # nothing written
    ledger.record_plan(MANIFEST, list(reversed(a[:2])))
    walk(ledger, a[0].key, PATHS["completed"])
    ledger.transition(a[0].key, "downloaded", bytes=1, location="/v/a.mp4")
    ledger.transition(a[1].key, "failed", error="nope")
    everything = list(ledger.briefs())
    mine = list(ledger.briefs(manifest=MANIFEST))
    events = [ledger.events(r.key) for r in everything]
    seen.clear()
    assert ledger.record_plan_checked(MANIFEST, [*a, z], answer(False)) is None
    assert seen == [mine]
    assert [b.location for b in mine if b.key == a[0].key] == ["/v/a.mp4"]
    assert list(ledger.briefs()) == everything  # nothing written: no job, path or move
    assert [ledger.events(r.key) for r in everything] == events
    expected = ledger.diff(MANIFEST, a)
    seen.clear()
    diff = ledger.record_plan_checked(MANIFEST, a, answer(True))
    assert seen == [mine]
    assert diff is not None and not diff.unchanged
    assert (
        (diff.statuses, diff.added)
        == (expected.statuses, expected.added)
        == (
            {a[1].key: "failed", a[0].key: "downloaded"},
            (a[2].key,),
        )
    )
    seen.clear()
    again = ledger.record_plan_checked(MANIFEST, a, answer(True))
    assert again is not None and again.unchanged
    assert seen == [list(ledger.briefs(manifest=MANIFEST))]
    assert [b.key for b in seen[0]] == [j.key for j in a]


def test_plans_read_whole_rows_only_of_jobs_whose_status_changes(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diff, and recording a plan that changes no status, read the columns they compare,
    never a whole row (decoding 100,000 requests); recording one that orphans a job reads
    that job whole, to change its status. Both dialects alike."""
    a = matrix_jobs("a", "{x}", x=[1, 2, 3])
    ledger.record_plan(MANIFEST, a)
    made: list[str] = []
    whole = JobRow.from_values

    def counted(values: Any) -> JobRow:
        row = whole(values)
        made.append(row.key)
        return row

    monkeypatch.setattr(JobRow, "from_values", counted)
    assert ledger.diff(MANIFEST, a[:2]).orphaned_keys == (a[2].key,)
    moved = [a[0], dataclasses.replace(a[1], path="elsewhere.mp4"), a[2]]
    assert not ledger.record_plan(MANIFEST, moved).unchanged  # a refreshed path
    assert made == []
    assert ledger.record_plan(MANIFEST, moved[:2]).orphaned_keys == (a[2].key,)
    assert set(made) == {a[2].key}
    monkeypatch.undo()
    assert [r.status for r in ledger.jobs()] == [JobStatus.PENDING] * 2 + [JobStatus.ORPHANED]
    assert ledger.get(a[1].key).path == "elsewhere.mp4"  # type: ignore[union-attr]


def test_a_diff_counts_the_manifests_charged_credits_from_its_own_read(ledger: Ledger) -> None:
    """Given ``charged``, a diff sums the credits of the jobs recorded for the manifest that
    it says were charged — the same float as ``charged_credits(briefs(manifest=...))``,
    whatever the manifest now produces — while the jobs another manifest recorded, even
    ones this manifest produces, are not counted. Without it, nothing is counted."""
    from runner.engine import charged, charged_credits

    credits = [0.1, 0.2, 0.3, 7, 8, 9]
    jobs = [
        dataclasses.replace(job, credits=c)
        for job, c in zip(matrix_jobs("a", "{x}", x=list(range(6))), credits, strict=True)
    ]
    ledger.record_plan(MANIFEST, jobs[:5])
    ledger.record_plan("/other.yaml", [dataclasses.replace(jobs[5], manifest="/other.yaml")])
    for job in jobs[:3]:
        walk(ledger, job.key, ["submitting", "queued"])
    ledger.transition(jobs[1].key, "failed", error="nsfw")  # refunded
    walk(ledger, jobs[5].key, ["submitting", "queued"])  # charged, but another manifest's
    ledger.record_plan(MANIFEST, jobs[1:5])  # jobs[0] is no longer produced: finishing

    diff = ledger.diff(MANIFEST, jobs[2:], charged=charged)
    expected = charged_credits(ledger.briefs(manifest=MANIFEST))
    assert diff.charged_credits == expected == 0.1 + 0.3
    assert diff.finishing_keys == (jobs[0].key,)
    assert ledger.diff(MANIFEST, jobs[2:]).charged_credits == 0.0
    assert dataclasses.replace(diff, charged_credits=0.0) == ledger.diff(MANIFEST, jobs[2:])
    assert ledger.diff("/other.yaml", [], charged=charged).charged_credits == 9


def test_retry_failed_bumps_the_idempotency_key(ledger: Ledger) -> None:
    """Failed jobs go back to pending with key <key>-<n+1>, no attempts, no error."""
    jobs = matrix_jobs("a", "{x}", x=[1, 2, 3]) + matrix_jobs("b", "{x}", start=3, x=[1])
    ledger.record_plan(MANIFEST, jobs)
    for job in jobs:
        ledger.transition(job.key, "submitting")
        ledger.transition(job.key, "queued", generation_id="g", attempts=2)
    for job in jobs[1:]:
        ledger.transition(job.key, "failed", error="nsfw")

    assert ledger.retry_failed(MANIFEST, keys=[jobs[1].key]) == 1
    row = ledger.get(jobs[1].key)
    assert row is not None
    second = f"{ledger.id}-{jobs[1].key}-2"
    assert (row.status, row.idempotency_key, row.attempts) == (S.PENDING, second, 0)
    assert (row.error, row.generation_id) == (None, None)
    assert ledger.events(jobs[1].key)[-1].detail == f"retry with idempotency key {second}"

    assert ledger.retry_failed("/other.yaml") == 0
    assert ledger.retry_failed(MANIFEST, campaigns=["b"]) == 1
    assert ledger.retry_failed(MANIFEST) == 1  # jobs[2]; jobs[0] never failed
    assert ledger.get(jobs[0].key).status is S.QUEUED  # type: ignore[union-attr]

    walk(ledger, jobs[1].key, ["submitting", "failed"])
    assert ledger.retry_failed(MANIFEST) == 1
    third = f"{ledger.id}-{jobs[1].key}-3"
    assert ledger.get(jobs[1].key).idempotency_key == third  # type: ignore[union-attr]


def test_note_and_bump_attempts(ledger: Ledger) -> None:
    """A note is an event without a status change; bump_attempts counts one more try."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    ledger.note(job.key, "throttled; waiting 2.0s")
    last = ledger.events(job.key)[-1]
    assert (last.from_status, last.to_status, last.detail) == (
        S.PENDING,
        S.PENDING,
        "throttled; waiting 2.0s",
    )
    assert ledger.bump_attempts(job.key) == 1
    assert ledger.bump_attempts(job.key) == 2
    assert ledger.get(job.key).attempts == 2  # type: ignore[union-attr]
    with pytest.raises(LedgerError):
        ledger.note("nope", "x")


def test_match_key_accepts_a_unique_prefix(ledger: Ledger) -> None:
    """A key or a unique prefix resolves; an unknown or ambiguous one is a clear error."""
    jobs = matrix_jobs("a", "{x}", x=list(range(40)))
    ledger.record_plan(MANIFEST, jobs)
    key = jobs[0].key
    assert ledger.match_key(key) == key
    unique = next(
        key[:n] for n in range(1, 17) if sum(j.key.startswith(key[:n]) for j in jobs) == 1
    )
    assert ledger.match_key(unique) == key
    shared = next(
        (j.key[:1] for j in jobs if sum(k.key.startswith(j.key[:1]) for k in jobs) > 1), None
    )
    if shared is not None:
        with pytest.raises(LedgerError, match="several jobs"):
            ledger.match_key(shared)
    with pytest.raises(LedgerError, match="no job"):
        ledger.match_key("zz")
    with pytest.raises(LedgerError, match="no job"):
        ledger.match_key("")


def test_souls_and_uploads(url: str) -> None:
    """Soul records are replaced field by field but keep created_at; uploads map sha256 → URL."""
    with open_ledger(url, clock=FakeClock()) as led:
        assert led.get_soul("ava", MANIFEST) is None
        first = led.set_soul("ava", MANIFEST, status="training", model_id="m1", images_hash="h")
        ready = led.set_soul("ava", MANIFEST, status="ready", model_id="m1", images_hash="h")
        assert (ready.status, ready.model_id, ready.error) == ("ready", "m1", None)
        assert ready.created_at == first.created_at < ready.updated_at
        led.set_soul("ava", "/other.yaml", status="failed", error="bad images")
        assert led.get_soul("ava", MANIFEST) == ready
        assert [s.manifest for s in led.souls()] == ["/other.yaml", MANIFEST]
        assert [s.status for s in led.souls(MANIFEST)] == ["ready"]

        assert led.get_upload("a" * 64) is None
        assert led.record_upload("a" * 64, "https://cdn.example/1.jpg") == (
            "https://cdn.example/1.jpg"
        )
        assert led.get_upload("a" * 64) == "https://cdn.example/1.jpg"
        # A second upload of the same content (another process got there too) keeps the
        # first URL, so requests already sent with it are re-sent with the same body.
        assert led.record_upload("a" * 64, "https://cdn.example/2.jpg") == (
            "https://cdn.example/1.jpg"
        )
        assert led.get_upload("a" * 64) == "https://cdn.example/1.jpg"


def test_job_row_to_dict_is_json(ledger: Ledger) -> None:
    """JobRow.to_dict holds every ledger column with plain JSON values."""
    job = make_job(tags=("nightly",), x=1)
    ledger.record_plan(MANIFEST, [job])
    doc = ledger.get(job.key).to_dict()  # type: ignore[union-attr]
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == JOB_COLUMNS
    assert (doc["status"], doc["tags"], doc["vars"]) == ("pending", ["nightly"], {"x": 1})


def test_json_columns_keep_their_key_order(ledger: Ledger) -> None:
    """A matrix row comes back with its keys in the order written (reports list them so)."""
    job = make_job(zeta=1, alpha=2, mid=3)
    ledger.record_plan(MANIFEST, [job])
    row = ledger.get(job.key)
    assert row is not None
    assert list(row.vars) == ["zeta", "alpha", "mid"]
    assert list(row.request) == list(job.request)


class SetClock:
    """A clock the test sets: ``clock.at(seconds)`` then every read is that moment."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def at(self, seconds: float) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)

    def __call__(self) -> datetime:
        return self.now


def shaped_job(index: int, **request: Any) -> Job:
    """A job whose request has these fields (besides type and prompt)."""
    job = make_job(index=index, n=index)
    return dataclasses.replace(job, request={"prompt": f"p{index}", **request})


def test_generation_times_of_one_request_shape(url: str) -> None:
    """generation_times: for each completed generation of exactly this shape, newest first,
    the seconds (to the millisecond) from the event that recorded its generation id (the
    last one, after a retry) to the one that recorded it completed, with that event's
    detail; a refreshed URL, a failure, another shape, a field the request lacks are told
    apart."""
    clock = SetClock()
    shape = {"model": None, "type": "t2v", "duration": 8, "resolution": "1080p"}
    with open_ledger(url, clock=clock) as led:
        jobs = [
            shaped_job(0, type="t2v", duration=8, resolution="1080p"),
            shaped_job(1, type="t2v", duration=8.0, resolution="1080p"),
            shaped_job(2, type="t2v", duration=5, resolution="1080p"),  # another duration
            shaped_job(3, type="t2v", duration=8, resolution="1080p"),  # retried
            shaped_job(4, type="t2v", duration=8),  # no resolution
            shaped_job(5, type="t2v", duration=8, resolution="1080p"),  # failed
        ]
        led.record_plan(MANIFEST, jobs)
        keys = [j.key for j in jobs]

        def walk_at(key: str, *steps: tuple[float, str, str | None]) -> None:
            for seconds, to, detail in steps:
                clock.at(seconds)
                led.transition(key, to, detail=detail)

        walk_at(keys[0], (0, "submitting", None), (1, "queued", None), (20, "running", None),
                (61, "completed", "first"), (62, "completed", "URL refreshed"),
                (63, "downloaded", None))  # fmt: skip
        walk_at(keys[1], (100, "submitting", None), (100.5, "queued", None),
                (130.75, "completed", "second"))  # fmt: skip
        walk_at(keys[2], (150, "submitting", None), (151, "queued", None),
                (160, "completed", "other duration"))  # fmt: skip
        walk_at(keys[3], (200, "submitting", None), (201, "queued", None),
                (210, "failed", None))  # fmt: skip
        assert led.retry_failed(MANIFEST, keys=[keys[3]]) == 1
        walk_at(keys[3], (300, "submitting", None), (305, "queued", None),
                (350, "completed", "third"))  # fmt: skip
        walk_at(keys[4], (400, "submitting", None), (401, "queued", None),
                (402, "completed", "no resolution"))  # fmt: skip
        walk_at(keys[5], (500, "submitting", None), (501, "queued", None),
                (502, "failed", None))  # fmt: skip

        times = led.generation_times(shape, limit=10)
        assert [(t.seconds, t.detail) for t in times] == [
            (pytest.approx(45.0, abs=1e-3), "third"),
            (pytest.approx(30.25, abs=1e-3), "second"),
            (pytest.approx(60.0, abs=1e-3), "first"),
        ]
        assert [t.detail for t in led.generation_times(shape, limit=2)] == ["third", "second"]
        lacking = {**shape, "resolution": None}
        assert [t.detail for t in led.generation_times(lacking, limit=10)] == ["no resolution"]
        other = {**shape, "duration": 5}
        assert [t.seconds for t in led.generation_times(other, limit=10)] == [
            pytest.approx(9.0, abs=1e-3)
        ]
        assert led.generation_times({**shape, "model": "m"}, limit=10) == []


# --- plan diff ----------------------------------------------------------------------------


def campaign_a(prompt: str) -> list[Job]:
    return matrix_jobs("a", prompt, subject=["s1", "s2"], place=["p1", "p2"])


def campaign_b(images: list[int]) -> list[Job]:
    return matrix_jobs("b", "look {image}", start=4, image=images)


def test_first_plan_records_everything_as_new(ledger: Ledger) -> None:
    """Recording into an empty ledger inserts every job as pending with key <key>-1."""
    jobs = campaign_a("{subject} on {place}") + campaign_b([1, 2, 3])
    assert ledger.diff(MANIFEST, jobs).new == 7
    assert ledger.jobs() == []  # diff wrote nothing
    diff = ledger.record_plan(MANIFEST, jobs)
    assert (diff.total, diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (
        7, 7, 0, 0, 0, 0,
    )  # fmt: skip
    assert diff.new_credits == 7 * 8.0
    assert diff.statuses == {}
    assert diff.added == tuple(j.key for j in jobs)
    rows = ledger.jobs()
    assert [r.key for r in rows] == [j.key for j in jobs]
    assert {(r.status, r.attempts) for r in rows} == {(S.PENDING, 0)}
    assert all(r.idempotency_key == f"{ledger.id}-{r.key}-1" for r in rows)
    # recording the same plan again is a no-op: no new events, same diff counts
    events = [ledger.events(j.key) for j in jobs]
    again = ledger.record_plan(MANIFEST, jobs)
    assert (again.new, again.added, again.statuses) == (7, (), {j.key: "pending" for j in jobs})
    assert [ledger.events(j.key) for j in jobs] == events


def test_edited_manifest_diff_is_exact(ledger: Ledger) -> None:
    """Change one prompt, remove a matrix value, add one: exact counts and orphaned rows."""
    v1 = campaign_a("{subject} on {place}") + campaign_b([1, 2, 3])
    ledger.record_plan(MANIFEST, v1)
    a1, b1 = v1[:4], v1[4:]
    walk(ledger, b1[0].key, PATHS["downloaded"])  # b/1 done
    walk(ledger, b1[1].key, PATHS["failed"])  # b/2 failed
    walk(ledger, a1[0].key, PATHS["queued"])  # a/s1-p1 in flight

    v2 = campaign_a("{subject} at {place}") + campaign_b([1, 2, 4])
    a2, b2 = v2[:4], v2[4:]
    assert {j.key for j in a2}.isdisjoint(j.key for j in a1)
    # a/s1-p1 was already sent: it is finishing (in flight), not orphaned (SPEC v2 §4)
    expected_orphans = [j.key for j in a1[1:]] + [b1[2].key]

    preview = ledger.diff(MANIFEST, v2)
    diff = ledger.record_plan(MANIFEST, v2)
    assert preview == diff
    assert (diff.total, diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (
        7, 5, 1, 1, 1, 4,
    )  # fmt: skip
    assert diff.new_credits == 5 * 8.0
    assert diff.added == (*[j.key for j in a2], b2[2].key)
    assert diff.statuses == {b1[0].key: "downloaded", b1[1].key: "failed"}
    assert sorted(diff.orphaned_keys) == sorted(expected_orphans)
    assert diff.finishing_keys == (a1[0].key,)
    assert diff.restored_keys == ()

    status = {r.key: r.status for r in ledger.jobs()}
    assert len(status) == 12  # 7 recorded before + 5 new: nothing deleted
    assert {k for k, s in status.items() if s is S.ORPHANED} == set(expected_orphans)
    assert status[b1[0].key] is S.DOWNLOADED  # downloaded stays downloaded
    assert status[b1[1].key] is S.FAILED
    assert status[a1[0].key] is S.QUEUED  # still in flight: a run finishes it
    last = ledger.events(a1[2].key)[-1]
    assert (last.from_status, last.to_status) == (S.PENDING, S.ORPHANED)
    assert last.detail == f"no longer produced by {MANIFEST}"

    # Recording v2 again orphans nothing twice (already-orphaned rows get no new event).
    events = ledger.events(a1[2].key)
    again = ledger.record_plan(MANIFEST, v2)
    assert (again.new, again.orphaned, again.added) == (5, 4, ())
    assert sorted(again.orphaned_keys) == sorted(expected_orphans)
    assert again.finishing_keys == (a1[0].key,)
    assert ledger.events(a1[2].key) == events

    # Once the finishing job reached its end (here: downloaded), a plan orphans it too.
    walk(ledger, a1[0].key, ["completed", "downloaded"])
    last_time = ledger.record_plan(MANIFEST, v2)
    assert (last_time.in_flight, last_time.orphaned, last_time.finishing_keys) == (0, 5, ())
    assert ledger.get(a1[0].key).status is S.ORPHANED


def test_orphaned_jobs_come_back_with_their_status(ledger: Ledger) -> None:
    """Reverting the edit restores orphaned jobs to the status they had, and orphans the rest."""
    v1 = campaign_a("{subject} on {place}") + campaign_b([1, 2, 3])
    ledger.record_plan(MANIFEST, v1)
    walk(ledger, v1[0].key, PATHS["queued"])
    walk(ledger, v1[1].key, PATHS["downloaded"])
    # a ledger written before SPEC v2 orphaned jobs in flight at once: they come back too
    ledger.transition(v1[0].key, S.ORPHANED, detail="orphaned by an older runner")
    v2 = campaign_a("{subject} at {place}") + campaign_b([1, 2, 4])
    ledger.record_plan(MANIFEST, v2)

    preview = ledger.diff(MANIFEST, v1)
    diff = ledger.record_plan(MANIFEST, v1)
    assert preview == diff
    assert (diff.total, diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (
        7, 5, 1, 1, 0, 5,
    )  # fmt: skip
    assert diff.added == ()
    assert diff.restored_keys == (*[j.key for j in v1[:4]], v1[6].key)
    assert diff.statuses[v1[0].key] == "queued"
    assert diff.statuses[v1[1].key] == "downloaded"
    status = {r.key: r.status for r in ledger.jobs()}
    assert status[v1[0].key] is S.QUEUED
    assert status[v1[1].key] is S.DOWNLOADED
    assert status[v1[2].key] is S.PENDING
    assert status[v1[6].key] is S.PENDING
    assert {k for k, s in status.items() if s is S.ORPHANED} == {j.key for j in v2[:4]} | {
        v2[6].key
    }
    last = ledger.events(v1[0].key)[-1]
    assert (last.from_status, last.to_status) == (S.ORPHANED, S.QUEUED)


def test_removed_campaign_is_orphaned(ledger: Ledger) -> None:
    """Every job recorded for this manifest path that it no longer produces is orphaned."""
    a, b = campaign_a("{subject}"), campaign_b([1, 2])
    ledger.record_plan(MANIFEST, a + b)
    ledger.record_plan("/other.yaml", [make_job("b", 0, manifest="/other.yaml", image=99)])
    diff = ledger.record_plan(MANIFEST, a)
    assert (diff.orphaned, diff.new, sorted(diff.orphaned_keys)) == (
        2,
        4,
        sorted(j.key for j in b),
    )
    assert ledger.counts(MANIFEST) == {"a": {"pending": 4}, "b": {"orphaned": 2}}
    # another manifest's campaign of the same name is left alone
    assert ledger.counts("/other.yaml") == {"b": {"pending": 1}}


def test_known_jobs_are_refreshed_but_keep_their_status(url: str) -> None:
    """Path, credits, order and tags of known jobs follow the manifest; status does not."""
    with open_ledger(url, clock=FakeClock()) as led:
        job = make_job(x=1)
        led.record_plan(MANIFEST, [job])
        walk(led, job.key, PATHS["downloaded"])
        before = led.get(job.key)
        moved = dataclasses.replace(job, index=7, path="new/x.mp4", credits=3.5, tags=("t",))
        led.record_plan("/moved.yaml", [moved])
        row = led.get(job.key)
        assert row is not None and before is not None
        assert (row.status, row.job_index, row.path, row.credits, row.tags, row.manifest) == (
            S.DOWNLOADED, 7, "new/x.mp4", 3.5, ("t",), "/moved.yaml",
        )  # fmt: skip
        assert row.updated_at > before.updated_at
        # the manifest it moved away from no longer counts it as its own
        assert led.diff(MANIFEST, []).orphaned == 0


def test_in_flight_and_pending_counts(ledger: Ledger) -> None:
    """Pending jobs count as new (nothing sent); submitting..completed count as in flight."""
    jobs = matrix_jobs("a", "{x}", x=[1, 2, 3, 4, 5, 6])
    ledger.record_plan(MANIFEST, jobs)
    for job, status in zip(jobs, ["submitting", "queued", "running", "completed"], strict=False):
        walk(ledger, job.key, PATHS[status])
    diff = ledger.diff(MANIFEST, jobs)
    assert (diff.new, diff.in_flight, diff.new_credits) == (2, 4, 16.0)


# --- plan diff from real manifests --------------------------------------------------------

MANIFEST_V1 = """\
version: 1
defaults: {type: text-to-video, duration: 4, resolution: 720p}
budget:
  prices:
    - {match: {}, credits_per_second: 2}
campaigns:
  - name: walk
    prompt: "{subject} in {place}"
    matrix:
      subject: [a dancer, a chef]
      place: [a park, a market]
  - name: spin
    prompt: "spin of the {product}"
    matrix:
      product: [shoe, bag, hat]
"""

# One prompt changed (all four walk jobs), one matrix value removed (hat), one added (scarf).
MANIFEST_V2 = (
    MANIFEST_V1.replace("{subject} in {place}", "{subject} at {place}")
    .replace("[shoe, bag, hat]", "[shoe, bag, scarf]")
)  # fmt: skip


def load_jobs(path: Path, text: str) -> tuple[str, list[Job]]:
    from runner.jobs import expand
    from runner.manifest import load_manifest

    path.write_text(text)
    manifest = load_manifest(path)
    return str(manifest.path), expand(manifest)


def test_yaml_manifest_edit_diff(tmp_path: Path, url: str) -> None:
    """Editing a real manifest gives exact counts; done stays done; reverting restores."""
    with open_ledger(url) as led:
        path, v1 = load_jobs(tmp_path / "m.yaml", MANIFEST_V1)
        assert path == str(tmp_path / "m.yaml")
        first = led.record_plan(path, v1)
        assert (first.total, first.new, first.new_credits) == (7, 7, 56.0)
        by_vars = {(j.campaign, tuple(j.vars.values())): j.key for j in v1}
        shoe, bag, hat = (by_vars[("spin", (p,))] for p in ("shoe", "bag", "hat"))
        walk(led, shoe, PATHS["downloaded"])
        walk(led, bag, PATHS["failed"])
        dancer_park = by_vars[("walk", ("a dancer", "a park"))]
        walk(led, dancer_park, PATHS["running"])

        _, v2 = load_jobs(tmp_path / "m.yaml", MANIFEST_V2)
        v2_keys = {j.key for j in v2}
        assert {shoe, bag} <= v2_keys  # untouched rows keep their keys
        assert len(v2_keys - {j.key for j in v1}) == 5
        diff = led.record_plan(path, v2)
        assert (diff.total, diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (
            7, 5, 1, 1, 1, 4,
        )  # fmt: skip
        assert diff.new_credits == 40.0
        walk_v1 = {j.key for j in v1 if j.campaign == "walk"}
        assert set(diff.orphaned_keys) == walk_v1 - {dancer_park} | {hat}
        assert diff.finishing_keys == (dancer_park,)  # running: finished before it is orphaned
        assert led.get(shoe).status is S.DOWNLOADED  # type: ignore[union-attr]
        assert led.counts(path) == {
            "spin": {"pending": 1, "downloaded": 1, "failed": 1, "orphaned": 1},
            "walk": {"pending": 4, "running": 1, "orphaned": 3},
        }

        _, back = load_jobs(tmp_path / "m.yaml", MANIFEST_V1)
        diff = led.record_plan(path, back)
        assert (diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (4, 1, 1, 1, 5)
        assert led.get(dancer_park).status is S.RUNNING  # type: ignore[union-attr]
        assert led.get(hat).status is S.PENDING  # type: ignore[union-attr]


def test_a_ledger_hands_out_keys_under_its_own_id(url: str) -> None:
    """New jobs get `<ledger-id>-<key>-1`; the id stays what it was when the ledger is opened
    again (two ledgers' ids differ: see test_ledger_sqlite)."""
    job = make_job()
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, [job])
        first = led.id
        assert led.get(job.key).idempotency_key == f"{first}-{job.key}-1"  # type: ignore[union-attr]
    with open_ledger(url) as led:
        assert led.id == first


# --- many jobs at once (issue 11) ---------------------------------------------------------


def test_transition_many_changes_all_in_one_go_or_none(ledger: Ledger) -> None:
    """transition_many is transition for each change, in order, all or nothing: a refused
    change leaves every job of the batch as it was, events included."""
    jobs = matrix_jobs("c", "{x}", x=list(range(40)))
    ledger.record_plan(MANIFEST, jobs)
    for job in jobs:
        walk(ledger, job.key, PATHS["downloaded"])
    gone = jobs[::2]
    rows = ledger.transition_many(
        [Transition(j.key, S.COMPLETED, f"video {j.key} missing", {"location": None}) for j in gone]
    )
    assert [r.key for r in rows] == [j.key for j in gone]
    assert {r.status for r in rows} == {S.COMPLETED}
    assert rows == [ledger.get(j.key) for j in gone]
    assert [r.key for r in ledger.jobs(status="completed")] == [j.key for j in gone]
    last = ledger.events(gone[3].key)[-1]
    assert (last.from_status, last.to_status, last.detail) == (
        S.DOWNLOADED, S.COMPLETED, f"video {gone[3].key} missing",
    )  # fmt: skip
    kept = jobs[1::2]
    before = [(ledger.get(j.key), len(ledger.events(j.key))) for j in kept[:3]]
    with pytest.raises(TransitionError):
        ledger.transition_many(
            [Transition(kept[0].key, S.COMPLETED), Transition(kept[1].key, S.PENDING),
             Transition(kept[2].key, S.COMPLETED)]
        )  # fmt: skip
    assert [(ledger.get(j.key), len(ledger.events(j.key))) for j in kept[:3]] == before
    assert ledger.transition_many([]) == []


def test_iter_jobs_streams_what_jobs_returns(ledger: Ledger) -> None:
    """iter_jobs yields the rows jobs() returns, in its order, for every filter; rows read in
    bulk equal the same rows read one by one, their JSON columns included."""
    a = matrix_jobs("a", "{x} {y}", x=list(range(30)), y=["p", "q"])
    b = [make_job("b", 60 + i, tags=("t", f"n{i}"), x=i, nested={"k": [i, "é"]}) for i in range(5)]
    ledger.record_plan(MANIFEST, a + b)
    walk(ledger, a[3].key, PATHS["failed"])
    keys = {j.key for j in a[10:20]} | {b[2].key}
    filters: list[dict[str, Any]] = [
        {}, {"status": "failed"}, {"campaign": "b"}, {"manifest": MANIFEST}, {"keys": keys},
        {"status": [S.PENDING], "campaign": ["a", "b"], "keys": keys},
    ]  # fmt: skip
    for given in filters:
        listed = ledger.jobs(**given)
        assert list(ledger.iter_jobs(**given)) == listed, given
    rows = ledger.jobs()
    assert len(rows) == 65
    for row in rows[::7] + rows[-5:]:
        assert ledger.get(row.key) == row
        assert row.to_dict() == ledger.get(row.key).to_dict()  # type: ignore[union-attr]
    last = rows[-1]
    assert (last.tags, last.vars, last.request["prompt"]) == (
        ("t", "n4"), {"x": 4, "nested": {"k": [4, "é"]}}, "a prompt",
    )  # fmt: skip


def test_rows_as_json_text_are_json_dumps_of_their_dict(ledger: Ledger) -> None:
    """A row's ``to_json`` (what export writes without decoding its JSON columns) and
    ``json_text`` of each JSON column are ``json.dumps(..., ensure_ascii=False)`` of its
    ``to_dict``, byte for byte: for rows read in bulk or one by one, before and after their
    JSON columns are decoded, whatever the values hold (newlines, quotes, non-ASCII, floats)."""
    tricky = 'line\none "quoted" \\ back\tslash é 日本 \u2028 <&>'
    jobs = [
        make_job("c", 0, prompt=tricky + " {x}", credits=0.1, tags=("é", "a\nb"), x=tricky),
        make_job("c", 1, credits=1e16, x={"n": [1.5, None, True, {"k": "v"}]}, y=-0.0),
        make_job("c", 2, credits=3),
    ]
    ledger.record_plan(MANIFEST, jobs)
    ledger.transition(jobs[0].key, S.SUBMITTING)
    ledger.transition(jobs[0].key, S.FAILED, error=f"bad, {tricky}", generation_id="g 1, 2")
    ledger.transition(jobs[1].key, S.SUBMITTING, detail="x", generation_id='g\n"1"')
    for rows in (ledger.jobs(), list(ledger.iter_jobs()), [ledger.get(j.key) for j in jobs]):
        assert len(rows) == 3
        for row in rows:
            assert row is not None
            # undecoded first, then decoded: the same text
            for _ in range(2):
                doc = row.to_dict()
                assert row.to_json() == json.dumps(doc, ensure_ascii=False)
                for name in ("request", "vars", "tags"):
                    assert row.json_text(name) == json.dumps(doc[name], ensure_ascii=False)
            assert dataclasses.replace(row).to_json() == row.to_json()  # built from its fields
    assert json.loads(ledger.jobs()[0].to_json())["request"]["prompt"] == tricky + " " + tricky


def test_many_keys_filter_like_few(ledger: Ledger) -> None:
    """A keys filter of thousands selects and orders exactly as a short one does, with the
    other filters, in jobs(), iter_jobs() and a plan that reads them."""
    jobs = matrix_jobs("c", "{x}", x=list(range(1500)))
    ledger.record_plan(MANIFEST, jobs)
    walk(ledger, jobs[7].key, PATHS["failed"])
    keys = [j.key for j in reversed(jobs[100:1400])]
    assert [r.key for r in ledger.jobs(keys=keys)] == [j.key for j in jobs[100:1400]]
    assert [r.key for r in ledger.iter_jobs(keys=[*keys, "nope"], status="pending")] == [
        j.key for j in jobs[100:1400]
    ]
    assert [r.key for r in ledger.jobs(keys=[j.key for j in jobs], status="failed")] == [
        jobs[7].key
    ]
    diff = ledger.record_plan(MANIFEST, jobs[:1200])  # reads by 1200 keys or the manifest
    assert (diff.total, diff.new, diff.failed, diff.orphaned) == (1200, 1199, 1, 300)
    assert diff.orphaned_keys == tuple(j.key for j in jobs[1200:])


# --- claims: one process at a time on each job (SPEC §8) ------------------------------------


class HandClock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_claims_take_free_jobs_submitting_first_then_in_order(url: str) -> None:
    """A claim takes at most ``limit`` free, unfinished jobs of the manifest — an interrupted
    submit first, then manifest order — and a second holder gets only the others; terminal
    jobs and other manifests' jobs are never claimed."""
    jobs = [make_job(index=i, n=i) for i in range(6)]
    other = make_job(index=0, n=99, manifest="/work/other.yaml")
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, jobs)
        led.record_plan(other.manifest, [other])
        walk(led, jobs[4].key, PATHS["submitting"])
        walk(led, jobs[0].key, PATHS["downloaded"])
        walk(led, jobs[1].key, PATHS["failed"])
        first = led.claim(MANIFEST, "a", lease=60, limit=2)
        assert [r.key for r in first] == [jobs[4].key, jobs[2].key]
        assert first[0].status is S.SUBMITTING
        second = led.claim(MANIFEST, "b", lease=60)
        assert [r.key for r in second] == [jobs[3].key, jobs[5].key]
        assert led.claim(MANIFEST, "c", lease=60) == []
        claim = led.claim_of(jobs[2].key)
        assert claim is not None and claim.holder == "a"
        assert led.claim_of(jobs[0].key) is None
        # only named keys, and only free ones: a holder's own jobs are renewed, not claimed
        led.release("b", [jobs[3].key])
        again = led.claim(MANIFEST, "a", lease=60, keys=[jobs[2].key, jobs[3].key])
        assert [r.key for r in again] == [jobs[3].key]


def test_an_expired_lease_is_taken_over_with_the_same_idempotency_key(url: str) -> None:
    """A lease holds the job until it runs out; renewing moves its end. Once it has run out,
    another holder takes the job over where it is (a submit in progress keeps its
    idempotency key), the ledger notes who took it from whom, and the old holder can
    neither renew nor release it."""
    clock = HandClock()
    job = make_job()
    with open_ledger(url, clock=clock) as led:
        led.record_plan(MANIFEST, [job])
        [held] = led.claim(MANIFEST, "a", lease=10)
        led.transition(job.key, "submitting")
        clock.now += timedelta(seconds=8)
        assert led.claim(MANIFEST, "b", lease=10) == []
        assert led.renew("a", [job.key], lease=10) == {job.key}  # now until t+18
        clock.now += timedelta(seconds=9)
        assert led.claim(MANIFEST, "b", lease=10) == []
        clock.now += timedelta(seconds=1)  # t+18: run out
        [taken] = led.claim(MANIFEST, "b", lease=10)
        assert taken.status is S.SUBMITTING
        assert taken.idempotency_key == held.idempotency_key == f"{led.id}-{job.key}-1"
        assert led.renew("a", [job.key], lease=10) == set()
        led.release("a", [job.key])
        claim = led.claim_of(job.key)
        assert claim is not None and claim.holder == "b"
        note = led.events(job.key)[-1]
        assert note.from_status == note.to_status == S.SUBMITTING
        assert note.detail is not None and "taken over by b from a" in note.detail
        led.release("b", [job.key])
        assert led.claim_of(job.key) is None
        assert [r.key for r in led.claim(MANIFEST, "c", lease=10)] == [job.key]
        assert [e.detail for e in led.events(job.key)].count(note.detail) == 1  # free: no note


def test_claims_from_many_at_once_never_overlap(url: str) -> None:
    """Eight ledgers claim three jobs at a time from 60, all at once, until none is left:
    every job is claimed by exactly one of them."""
    n = 8
    jobs = [make_job(index=i, n=i) for i in range(60)]
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, jobs)
    start = threading.Barrier(n)
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def work(holder: str) -> None:
        try:
            with open_ledger(url) as led:
                start.wait()
                mine = got.setdefault(holder, [])
                while batch := led.claim(MANIFEST, holder, lease=60, limit=3):
                    mine += [r.key for r in batch]
        except BaseException as err:  # collected and asserted on below
            errors.append(err)

    workers = [threading.Thread(target=work, args=(f"h{i}",)) for i in range(n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    claimed = [key for keys in got.values() for key in keys]
    assert sorted(claimed) == sorted(j.key for j in jobs)
    with open_ledger(url) as led:
        for holder, keys in got.items():
            assert all(led.claim_of(k).holder == holder for k in keys)  # type: ignore[union-attr]

"""The ledger against a real SQLite file: schema migrations, the job state machine, plan diffs."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from runner.errors import LedgerError, TransitionError
from runner.jobs import Job
from runner.ledger import TRANSITIONS, JobStatus, Ledger
from runner.ledger.migrations import MIGRATIONS, applied_migrations, migrate

S = JobStatus
MANIFEST = "/work/m.yaml"

# The contract the executor relies on, written out independently of runner.ledger.TRANSITIONS.
ALLOWED: dict[str, set[str]] = {
    "pending": {"submitting", "failed", "orphaned"},
    "submitting": {"submitting", "queued", "running", "completed", "failed", "pending", "orphaned"},
    "queued": {"queued", "running", "completed", "failed", "orphaned"},
    "running": {"running", "completed", "failed", "orphaned"},
    "completed": {"completed", "downloaded", "failed", "orphaned"},
    "downloaded": {"orphaned", "completed"},
    "failed": {"pending", "orphaned"},
}

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


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    with Ledger(tmp_path / "state") as led:
        yield led


def walk(ledger: Ledger, key: str, path: list[str]) -> None:
    for status in path:
        ledger.transition(key, status)


def columns(db_path: Path, table: str) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


# --- migrations ---------------------------------------------------------------------------

EXPECTED_COLUMNS = {
    "jobs": {
        "key", "campaign", "manifest", "job_index", "request", "vars", "path", "status",
        "generation_id", "idempotency_key", "attempts", "error", "video_url", "bytes", "sha256",
        "credits", "soul", "tags", "variant", "created_at", "updated_at",
    },
    "events": {"id", "job_key", "at", "from_status", "to_status", "detail"},
    "souls": {
        "name", "manifest", "model_id", "status", "error", "images_hash", "created_at",
        "updated_at",
    },
    "uploads": {"sha256", "public_url", "created_at"},
    "_migrations": {"name", "applied_at"},
}  # fmt: skip


def test_fresh_ledger_has_every_table_and_column(tmp_path: Path) -> None:
    """A new ledger.db gets every table and column, in WAL mode, with every migration recorded."""
    Ledger(tmp_path).close()
    db_path = tmp_path / "ledger.db"
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(db_path, table) == expected, table
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [fn.__name__ for fn in MIGRATIONS]


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    """Opening an up-to-date ledger again changes nothing in ``_migrations``."""
    Ledger(tmp_path).close()
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        before = conn.execute("SELECT name, applied_at FROM _migrations").fetchall()
    Ledger(tmp_path).close()
    with Ledger(tmp_path) as led:
        assert migrate(led._db) == []
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        assert conn.execute("SELECT name, applied_at FROM _migrations").fetchall() == before


def test_migrations_in_memory() -> None:
    """The migration list applies to an in-memory database once, then is a no-op."""
    db = Database(memory=True)
    assert migrate(db) == [fn.__name__ for fn in MIGRATIONS]
    assert migrate(db) == []
    assert applied_migrations(db) == {fn.__name__ for fn in MIGRATIONS}
    assert set(db.table_names()) == set(EXPECTED_COLUMNS)


@pytest.mark.parametrize("n", range(1, len(MIGRATIONS)))
def test_older_ledger_upgrades_in_place(tmp_path: Path, n: int) -> None:
    """A ledger built by only the first n migrations gains the rest and keeps its data."""
    db = Database(tmp_path / "ledger.db")
    migrate(db, MIGRATIONS[:n])
    job = make_job()
    db.table("jobs").insert(
        {
            "key": job.key, "campaign": job.campaign, "manifest": MANIFEST, "job_index": 0,
            "request": json.dumps(job.request), "vars": "{}", "path": job.path,
            "status": "downloaded", "idempotency_key": f"{job.key}-1", "attempts": 1,
            "credits": 8.0, "tags": "[]", "created_at": "2025-01-01T00:00:00+00:00",
            "updated_at": "2025-01-01T00:00:00+00:00", "sha256": "ab" * 32,
        }
    )  # fmt: skip
    db.close()

    with Ledger(tmp_path) as led:
        row = led.get(job.key)
        assert row is not None
        assert (row.status, row.sha256, row.request) == (S.DOWNLOADED, "ab" * 32, job.request)
        led.set_soul("ava", MANIFEST, status="ready", model_id="m1")
        led.record_upload("f" * 64, "https://cdn.example/x.jpg")
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(tmp_path / "ledger.db", table) == expected


def test_a_new_migration_adds_a_column_to_existing_rows(tmp_path: Path) -> None:
    """Appending a migration later upgrades a ledger that already holds jobs."""
    with Ledger(tmp_path) as led:
        led.record_plan(MANIFEST, [make_job()])

    def m999_jobs_note(db: Database) -> None:
        db.table("jobs").add_column("note", str)

    with Ledger(tmp_path, migrations=[*MIGRATIONS, m999_jobs_note]) as led:
        assert "m999_jobs_note" in applied_migrations(led._db)
        assert led.get(make_job().key) is not None
    assert "note" in columns(tmp_path / "ledger.db", "jobs")


def test_open_readonly_without_ledger_creates_nothing(tmp_path: Path) -> None:
    """No ledger yet: ``open_readonly`` returns None and creates neither folder nor file."""
    state = tmp_path / "state"
    assert Ledger.open_readonly(state) is None
    assert not state.exists()
    state.mkdir()
    assert Ledger.open_readonly(state) is None
    assert list(state.iterdir()) == []


def test_open_readonly_refuses_writes_and_leaves_no_side_files(tmp_path: Path) -> None:
    """A read-only ledger reads, refuses writes, and leaves only ledger.db behind."""
    job = make_job()
    with Ledger(tmp_path) as led:
        led.record_plan(MANIFEST, [job])
    led_ro = Ledger.open_readonly(tmp_path)
    assert led_ro is not None
    with led_ro:
        assert led_ro.readonly
        assert [r.key for r in led_ro.jobs()] == [job.key]
        with pytest.raises(LedgerError, match="read-only"):
            led_ro.transition(job.key, S.SUBMITTING)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            led_ro._conn.execute("DELETE FROM jobs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.db"]
    with Ledger(tmp_path) as led:
        assert led.get(job.key) is not None


def test_open_readonly_on_an_older_ledger_says_so(tmp_path: Path) -> None:
    """A ledger that lacks migrations cannot be read; the message says what upgrades it."""
    migrate(Database(tmp_path / "ledger.db"), MIGRATIONS[:2])
    with pytest.raises(LedgerError, match="older runner"):
        Ledger.open_readonly(tmp_path)


def test_not_a_database_is_a_ledger_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives a LedgerError naming it, not a traceback."""
    (tmp_path / "ledger.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=r"ledger\.db"):
        Ledger(tmp_path)
    with pytest.raises(LedgerError, match=r"ledger\.db"):
        Ledger.open_readonly(tmp_path)


# --- transitions --------------------------------------------------------------------------


def test_transition_table_is_the_contract() -> None:
    """``TRANSITIONS`` allows exactly the changes the executor relies on."""
    assert {s.value: {t.value for t in ts} for s, ts in TRANSITIONS.items() if ts} == ALLOWED
    assert TRANSITIONS[S.ORPHANED] == frozenset()  # only back where it came from


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


def test_transition_sets_columns_and_writes_the_event(tmp_path: Path) -> None:
    """Columns given to transition land in the row; the event carries the same timestamp."""
    clock = FakeClock()
    with Ledger(tmp_path, clock=clock) as led:
        job = make_job()
        led.record_plan(MANIFEST, [job])
        led.transition(job.key, "submitting", detail="sending")
        row = led.transition(
            job.key, S.QUEUED, detail="accepted", generation_id="gen-1", attempts=1
        )
        assert (row.status, row.generation_id, row.attempts) == (S.QUEUED, "gen-1", 1)
        assert row.idempotency_key == f"{job.key}-1"
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


def test_resend_keeps_the_idempotency_key_and_says_so(ledger: Ledger) -> None:
    """submitting → submitting is a resend with the same key; a new key is refused."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    ledger.transition(job.key, "submitting")
    ledger.transition(job.key, "submitting", idempotency_key=f"{job.key}-1")
    assert "same idempotency key" in (ledger.events(job.key)[-1].detail or "")
    with pytest.raises(TransitionError, match="never a new one"):
        ledger.transition(job.key, "submitting", idempotency_key=f"{job.key}-2")
    row = ledger.get(job.key)
    assert row is not None and row.idempotency_key == f"{job.key}-1"


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


def test_failed_event_insert_leaves_neither_row_nor_event(ledger: Ledger) -> None:
    """If the event cannot be written, the status change is rolled back with it."""
    job = make_job()
    ledger.record_plan(MANIFEST, [job])
    ledger._conn.execute(
        "CREATE TRIGGER no_events BEFORE INSERT ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are read-only today'); END"
    )
    with pytest.raises(LedgerError, match="events are read-only today"):
        ledger.transition(job.key, "submitting", idempotency_key=f"{job.key}-1", attempts=3)
    row = ledger.get(job.key)
    assert row is not None
    assert (row.status, row.attempts) == (S.PENDING, 0)
    assert [e.to_status for e in ledger.events(job.key)] == [S.PENDING]
    assert not ledger._conn.in_transaction


def test_failed_plan_recording_writes_nothing(ledger: Ledger) -> None:
    """record_plan is one transaction: a failure while orphaning undoes the inserts too."""
    old, new = make_job(index=0, n=1), make_job(index=0, n=2)
    ledger.record_plan(MANIFEST, [old])
    ledger._conn.execute(
        "CREATE TRIGGER no_orphans BEFORE UPDATE OF status ON jobs "
        "WHEN NEW.status = 'orphaned' BEGIN SELECT RAISE(ABORT, 'no orphans'); END"
    )
    with pytest.raises(LedgerError, match="no orphans"):
        ledger.record_plan(MANIFEST, [new])
    assert [r.key for r in ledger.jobs()] == [old.key]
    assert ledger.get(new.key) is None
    assert ledger.events(new.key) == []


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
    assert (row.status, row.idempotency_key, row.attempts) == (S.PENDING, f"{jobs[1].key}-2", 0)
    assert (row.error, row.generation_id) == (None, None)
    assert ledger.events(jobs[1].key)[-1].detail == f"retry with idempotency key {row.key}-2"

    assert ledger.retry_failed("/other.yaml") == 0
    assert ledger.retry_failed(MANIFEST, campaigns=["b"]) == 1
    assert ledger.retry_failed(MANIFEST) == 1  # jobs[2]; jobs[0] never failed
    assert ledger.get(jobs[0].key).status is S.QUEUED  # type: ignore[union-attr]

    walk(ledger, jobs[1].key, ["submitting", "failed"])
    assert ledger.retry_failed(MANIFEST) == 1
    assert ledger.get(jobs[1].key).idempotency_key == f"{jobs[1].key}-3"  # type: ignore[union-attr]


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


def test_souls_and_uploads(tmp_path: Path) -> None:
    """Soul records are replaced field by field but keep created_at; uploads map sha256 → URL."""
    with Ledger(tmp_path, clock=FakeClock()) as led:
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
        led.record_upload("a" * 64, "https://cdn.example/1.jpg")
        assert led.get_upload("a" * 64) == "https://cdn.example/1.jpg"
        led.record_upload("a" * 64, "https://cdn.example/2.jpg")
        assert led.get_upload("a" * 64) == "https://cdn.example/2.jpg"


def test_job_row_to_dict_is_json(ledger: Ledger) -> None:
    """JobRow.to_dict holds every ledger column with plain JSON values."""
    job = make_job(tags=("nightly",), x=1)
    ledger.record_plan(MANIFEST, [job])
    doc = ledger.get(job.key).to_dict()  # type: ignore[union-attr]
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == EXPECTED_COLUMNS["jobs"]
    assert (doc["status"], doc["tags"], doc["vars"]) == ("pending", ["nightly"], {"x": 1})


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
    assert all(r.idempotency_key == f"{r.key}-1" for r in rows)
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
    expected_orphans = [j.key for j in a1] + [b1[2].key]

    preview = ledger.diff(MANIFEST, v2)
    diff = ledger.record_plan(MANIFEST, v2)
    assert preview == diff
    assert (diff.total, diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (
        7, 5, 1, 0, 1, 5,
    )  # fmt: skip
    assert diff.new_credits == 5 * 8.0
    assert diff.added == (*[j.key for j in a2], b2[2].key)
    assert diff.statuses == {b1[0].key: "downloaded", b1[1].key: "failed"}
    assert sorted(diff.orphaned_keys) == sorted(expected_orphans)
    assert diff.restored_keys == ()

    status = {r.key: r.status for r in ledger.jobs()}
    assert len(status) == 12  # 7 recorded before + 5 new: nothing deleted
    assert {k for k, s in status.items() if s is S.ORPHANED} == set(expected_orphans)
    assert status[b1[0].key] is S.DOWNLOADED  # downloaded stays downloaded
    assert status[b1[1].key] is S.FAILED
    last = ledger.events(a1[0].key)[-1]
    assert (last.from_status, last.to_status) == (S.QUEUED, S.ORPHANED)
    assert last.detail == f"no longer produced by {MANIFEST}"

    # Recording v2 again orphans nothing twice (already-orphaned rows get no new event).
    events = ledger.events(a1[0].key)
    again = ledger.record_plan(MANIFEST, v2)
    assert (again.new, again.orphaned, again.added) == (5, 5, ())
    assert sorted(again.orphaned_keys) == sorted(expected_orphans)
    assert ledger.events(a1[0].key) == events


def test_orphaned_jobs_come_back_with_their_status(ledger: Ledger) -> None:
    """Reverting the edit restores orphaned jobs to the status they had, and orphans the rest."""
    v1 = campaign_a("{subject} on {place}") + campaign_b([1, 2, 3])
    ledger.record_plan(MANIFEST, v1)
    walk(ledger, v1[0].key, PATHS["queued"])
    walk(ledger, v1[1].key, PATHS["downloaded"])
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


def test_known_jobs_are_refreshed_but_keep_their_status(tmp_path: Path) -> None:
    """Path, credits, order and tags of known jobs follow the manifest; status does not."""
    with Ledger(tmp_path, clock=FakeClock()) as led:
        job = make_job(x=1)
        led.record_plan(MANIFEST, [job])
        walk(led, job.key, PATHS["downloaded"])
        before = led.get(job.key)
        moved = Job(
            **{**job.__dict__, "index": 7, "path": "new/x.mp4", "credits": 3.5, "tags": ("t",)}
        )
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


def test_yaml_manifest_edit_diff(tmp_path: Path) -> None:
    """Editing a real manifest gives exact counts; done stays done; reverting restores."""
    with Ledger(tmp_path / "state") as led:
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
            7, 5, 1, 0, 1, 5,
        )  # fmt: skip
        assert diff.new_credits == 40.0
        walk_v1 = {j.key for j in v1 if j.campaign == "walk"}
        assert set(diff.orphaned_keys) == walk_v1 | {hat}
        assert led.get(shoe).status is S.DOWNLOADED  # type: ignore[union-attr]
        assert led.counts(path) == {
            "spin": {"pending": 1, "downloaded": 1, "failed": 1, "orphaned": 1},
            "walk": {"pending": 4, "orphaned": 4},
        }

        _, back = load_jobs(tmp_path / "m.yaml", MANIFEST_V1)
        diff = led.record_plan(path, back)
        assert (diff.new, diff.done, diff.in_flight, diff.failed, diff.orphaned) == (4, 1, 1, 1, 5)
        assert led.get(dancer_park).status is S.RUNNING  # type: ignore[union-attr]
        assert led.get(hat).status is S.PENDING  # type: ignore[union-attr]

"""What only the SQLite ledger has: its file (WAL, named migrations), read-only opening in a
read-only directory, the flock. Checked from outside with the stdlib ``sqlite3`` module, as any
tool would; the ledger itself only through its public API."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from runner.errors import LedgerError, LedgerLockedError
from runner.ledger import ExecutorLock, SqliteLedger, default_ledger_url, open_ledger
from runner.ledger.sqlite.filters import JOB_ORDER
from runner.ledger.sqlite.migrations import INDEXES_ONLY, MIGRATIONS, applied_migrations, migrate
from tests.test_ledger import JOB_COLUMNS, MANIFEST, make_job

EXPECTED_COLUMNS = {
    "jobs": JOB_COLUMNS | {"claimed_by", "lease_until"},  # the claim (m009): not in JobRow
    "events": {"id", "job_key", "at", "from_status", "to_status", "detail"},
    "souls": {
        "name", "manifest", "model_id", "status", "error", "images_hash", "created_at",
        "updated_at", "idempotency_key",
    },
    "uploads": {"sha256", "public_url", "created_at"},
    "_migrations": {"name", "applied_at"},
    "meta": {"name", "value"},
    # what processes sharing a PostgreSQL ledger share per account (m010)
    "account_slots": {"job_key", "account", "taken_at"},
    "account_rates": {"account", "next_call", "paused_until"},
    "budgets": {"scope", "reserved"},
    "account_concurrency": {"account", "manifest", "concurrency"},
    # what `run` and `enqueue` recorded for workers (m011)
    "manifests": {"path", "source", "output", "scope", "recorded_at", "resolved"},
}  # fmt: skip


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory that does not exist yet."""
    return tmp_path / "state"


def url_of(state: Path) -> str:
    return default_ledger_url(state)


def columns(db_path: Path, table: str) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def migrations_recorded(db_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()


# --- the file and its migrations ------------------------------------------------------------


def test_fresh_ledger_has_every_table_and_column(state: Path) -> None:
    """Taking the executor lock sets a new ledger.db up: every table and column, WAL mode,
    every migration recorded."""
    with open_ledger(url_of(state)) as led, led.executor_lock():
        pass
    db_path = state / "ledger.db"
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(db_path, table) == expected, table
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [name for name, _ in migrations_recorded(db_path)] == [fn.__name__ for fn in MIGRATIONS]


def test_first_use_sets_the_schema_up_too(state: Path) -> None:
    """Without the executor lock, the first read or write sets the schema up."""
    with open_ledger(url_of(state)) as led:
        assert led.jobs() == []
    assert columns(state / "ledger.db", "jobs") == EXPECTED_COLUMNS["jobs"]


def test_reopening_applies_nothing_twice(state: Path) -> None:
    """Opening and using an up-to-date ledger again changes nothing in ``_migrations``."""
    db_path = state / "ledger.db"
    with open_ledger(url_of(state)) as led:
        led.jobs()
    before = migrations_recorded(db_path)
    for _ in range(2):
        with open_ledger(url_of(state)) as led, led.executor_lock():
            led.record_plan(MANIFEST, [make_job()])
    assert migrate(Database(db_path)) == []
    assert migrations_recorded(db_path) == before


def test_migrations_in_memory() -> None:
    """The migration list applies to an in-memory database once, then is a no-op."""
    db = Database(memory=True)
    assert migrate(db) == [fn.__name__ for fn in MIGRATIONS]
    assert migrate(db) == []
    assert applied_migrations(db) == {fn.__name__ for fn in MIGRATIONS}
    assert set(db.table_names()) == set(EXPECTED_COLUMNS)


@pytest.mark.parametrize("n", range(1, len(MIGRATIONS)))
def test_older_ledger_upgrades_in_place(state: Path, n: int) -> None:
    """A ledger built by only the first n migrations gains the rest and keeps its data; a job
    from before ``location`` existed has none."""
    state.mkdir()
    db = Database(state / "ledger.db")
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

    with open_ledger(url_of(state)) as led, led.executor_lock():
        row = led.get(job.key)
        assert row is not None
        assert (row.status, row.sha256, row.request) == ("downloaded", "ab" * 32, job.request)
        assert row.location is None
        led.set_soul("ava", MANIFEST, status="ready", model_id="m1")
        led.record_upload("f" * 64, "https://cdn.example/x.jpg")
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(state / "ledger.db", table) == expected


def test_a_new_migration_adds_a_column_to_existing_rows(state: Path) -> None:
    """Appending a migration later upgrades a ledger that already holds jobs."""
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [make_job()])

    def m999_jobs_note(db: Database) -> None:
        db.table("jobs").add_column("note", str)

    with SqliteLedger.open(state / "ledger.db", migrations=[*MIGRATIONS, m999_jobs_note]) as led:
        assert led.get(make_job().key) is not None
    assert "m999_jobs_note" in applied_migrations(Database(state / "ledger.db"))
    assert "note" in columns(state / "ledger.db", "jobs")


def test_a_refused_executor_lock_changes_no_schema(state: Path) -> None:
    """While another run (even an older runner) executes, a second one that opens the
    ledger and is refused the lock has upgraded nothing; the holder's successor does."""
    state.mkdir()
    migrate(Database(state / "ledger.db"), MIGRATIONS[:-1])
    before = migrations_recorded(state / "ledger.db")
    with ExecutorLock(state):
        with open_ledger(url_of(state)) as led, pytest.raises(LedgerLockedError):
            led.executor_lock().__enter__()
        assert migrations_recorded(state / "ledger.db") == before
    with open_ledger(url_of(state)) as led, led.executor_lock():
        assert len(migrations_recorded(state / "ledger.db")) == len(MIGRATIONS)


def test_executor_lock_is_runner_lock_beside_the_file(state: Path) -> None:
    """The lock is ``runner.lock`` beside ledger.db, naming this process while held and
    emptied on release."""
    with open_ledger(url_of(state)) as led:
        with led.executor_lock():
            content = json.loads((state / "runner.lock").read_text())
            assert content["pid"] == os.getpid()
            with pytest.raises(LedgerLockedError, match=f"{state}: .*runner.lock is held by"):
                ExecutorLock(state).acquire()
        assert (state / "runner.lock").read_text() == ""


def test_not_a_database_is_a_ledger_error(state: Path) -> None:
    """A file that is not SQLite gives a LedgerError naming it, not a traceback."""
    state.mkdir()
    (state / "ledger.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=r"ledger\.db"):
        open_ledger(url_of(state))
    with pytest.raises(LedgerError, match=r"ledger\.db"):
        open_ledger(url_of(state), readonly=True)


# --- read-only ------------------------------------------------------------------------------


def test_open_readonly_without_ledger_creates_nothing(state: Path) -> None:
    """No ledger yet: a read-only open returns None and creates neither folder nor file."""
    assert open_ledger(url_of(state), readonly=True) is None
    assert not state.exists()
    state.mkdir()
    assert open_ledger(url_of(state), readonly=True) is None
    assert list(state.iterdir()) == []


def capture_connections(monkeypatch: pytest.MonkeyPatch) -> list[sqlite3.Connection]:
    """Every sqlite3 connection made from now on (to reach the one a ledger opened)."""
    made: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real(*args, **kwargs)
        made.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return made


def test_open_readonly_refuses_writes_and_leaves_no_side_files(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only ledger reads; SQLite itself refuses its connection any write; only
    ledger.db is left behind (no WAL side files, no lock)."""
    job = make_job()
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [job])
    made = capture_connections(monkeypatch)
    led_ro = open_ledger(url_of(state), readonly=True)
    assert led_ro is not None and len(made) == 1
    with led_ro:
        assert [r.key for r in led_ro.jobs()] == [job.key]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            made[0].execute("DELETE FROM jobs")
    assert sorted(p.name for p in state.iterdir()) == ["ledger.db"]
    with open_ledger(url_of(state)) as led:
        assert led.get(job.key) is not None


def test_open_readonly_on_an_older_ledger_says_so(state: Path) -> None:
    """A ledger that lacks migrations cannot be read; the message says what upgrades it."""
    state.mkdir()
    migrate(Database(state / "ledger.db"), MIGRATIONS[:2])
    with pytest.raises(LedgerError, match="older runner"):
        open_ledger(url_of(state), readonly=True)
    assert [name for name, _ in migrations_recorded(state / "ledger.db")] == [
        fn.__name__ for fn in MIGRATIONS[:2]
    ]


def test_a_ledger_lacking_only_indexes_is_read_the_same_then_upgraded(state: Path) -> None:
    """A ledger written before the jobs' order index (m016) is still read, read-only, in the
    same order (the index only spares a sort); the next write-mode open adds it."""
    state.mkdir()
    db_path = state / "ledger.db"
    older = [fn for fn in MIGRATIONS if fn.__name__ not in INDEXES_ONLY]
    migrate(Database(db_path), older)
    jobs = [make_job(prompt=f"p{i}", index=i % 3) for i in range(7)]  # shared job_index: key
    with SqliteLedger.open(db_path, migrations=older) as led:  # as the older runner
        led.record_plan(MANIFEST, jobs)
    with open_ledger(url_of(state), readonly=True) as led:
        order = [r.key for r in led.jobs()]
    assert order == [j.key for j in sorted(jobs, key=lambda j: (j.index, j.key))]
    assert "m016_jobs_order_index" not in dict(migrations_recorded(db_path))
    with open_ledger(url_of(state)) as led:
        assert [r.key for r in led.jobs()] == order
    assert "m016_jobs_order_index" in dict(migrations_recorded(db_path))
    with sqlite3.connect(db_path) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT key FROM jobs {JOB_ORDER}").fetchall()
    assert "idx_jobs_manifest_order" in str(plan) and "TEMP B-TREE" not in str(plan)


def snapshot(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of ``directory``: mode, mtime (ns) and content hash."""
    return {
        p.name: (p.stat().st_mode, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(directory.iterdir())
    }


@pytest.fixture
def readonly_state(state: Path) -> Iterator[Path]:
    """A ledger with a job, its file 0o444 in a 0o555 directory (restored afterwards)."""
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [make_job()])
    (state / "ledger.db").chmod(0o444)
    state.chmod(0o555)
    try:
        yield state
    finally:
        state.chmod(0o755)
        (state / "ledger.db").chmod(0o644)


def refuse(monkeypatch: pytest.MonkeyPatch, *modes: str) -> list[str]:
    """Make sqlite3 refuse to open URIs in these modes, as in a read-only directory where
    SQLite cannot create the side files; return the URIs it was asked for."""
    asked: list[str] = []
    real = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        asked.append(str(database))
        query = str(database).partition("?")[2]
        if query in modes:
            raise sqlite3.OperationalError("unable to open database file")
        conn: sqlite3.Connection = real(database, *args, **kwargs)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return asked


def reads_everything(state: Path) -> None:
    led = open_ledger(url_of(state), readonly=True)
    assert led is not None
    with led:
        assert led.readonly
        assert [r.key for r in led.jobs()] == [make_job().key]
        assert led.counts() == {"c": {"pending": 1}}
        assert len(led.events(make_job().key)) == 1
        assert led.diff(MANIFEST, [make_job()]).new == 1
        with pytest.raises(LedgerError, match="read-only"):
            led.note(make_job().key, "x")


@pytest.mark.parametrize("refused", [(), ("mode=rw",)], ids=["mode=rw", "immutable"])
def test_readonly_directory_is_read_and_left_untouched(
    readonly_state: Path, monkeypatch: pytest.MonkeyPatch, refused: tuple[str, ...]
) -> None:
    """A ledger in a read-only directory reads, writing nothing: same files, modes, mtimes
    and contents afterwards. Run as root the permissions do not bite, so the fallback a real
    read-only directory takes (no -wal file: immutable=1) is also forced."""
    before = snapshot(readonly_state)
    asked = refuse(monkeypatch, *refused)
    reads_everything(readonly_state)
    assert snapshot(readonly_state) == before
    assert stat.S_IMODE(readonly_state.stat().st_mode) == 0o555
    expected = "mode=ro&immutable=1" if refused else "mode=rw"
    assert [uri.partition("?")[2] for uri in asked][-1] == expected


def test_with_a_wal_file_the_fallback_reads_through_it(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a -wal file (a run writing), commits may be only in it: when mode=rw is refused,
    the reader uses mode=ro, never immutable=1 (which would miss them), and sees them."""
    job = make_job()
    with open_ledger(url_of(state)) as writer:
        writer.record_plan(MANIFEST, [job])
        writer.transition(job.key, "submitting")
        assert (state / "ledger.db-wal").exists()
        asked = refuse(monkeypatch, "mode=rw")
        reader = open_ledger(url_of(state), readonly=True)
        assert reader is not None
        with reader:
            assert reader.counts() == {"c": {"submitting": 1}}
    assert [uri.partition("?")[2] for uri in asked] == ["mode=rw", "mode=ro"]


def test_no_way_to_read_is_a_ledger_error(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When SQLite refuses every way to read, the error names the ledger."""
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [make_job()])
    refuse(monkeypatch, "mode=rw", "mode=ro&immutable=1")
    with pytest.raises(LedgerError, match=r"cannot open the ledger .*ledger\.db"):
        open_ledger(url_of(state), readonly=True)


READ_ON_MOUNT = """
import sys
from runner.ledger import open_ledger
led = open_ledger(sys.argv[1], readonly=True)
assert led is not None
print(led.counts())
"""


def test_a_real_read_only_mount(state: Path, tmp_path: Path) -> None:
    """Where the test may make one (a private mount namespace), a ledger on a read-only bind
    mount reads: there SQLite cannot create side files even as root."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount")
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [make_job()])
    mount = tmp_path / "ro"
    mount.mkdir()
    script = (
        f"mount --bind {state} {mount} && mount -o remount,ro,bind {mount} || exit 77; "
        f"touch {mount}/probe 2>/dev/null && exit 77; "
        f'exec "$0" -c "$1" {mount}/ledger.db'
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, sys.executable, READ_ON_MOUNT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode == 77:
        pytest.skip("cannot make a read-only mount here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'c': {'pending': 1}}"
    assert sorted(p.name for p in state.iterdir()) == ["ledger.db"]


def test_ledger_ids_keep_committed_keys_and_key_new_jobs(tmp_path: Path) -> None:
    """A ledger from before ledger ids gets one when upgraded; a job it had left `submitting`
    keeps the key it may be paid for under; jobs planned afterwards get `<id>-<key>-1`."""

    from runner.ledger.plan import new_row

    path = tmp_path / "ledger.db"
    old_job, new_job = make_job(), make_job(campaign="later")
    with SqliteLedger.open(path, migrations=MIGRATIONS[:6]) as old, old.executor_lock():
        pass  # the schema as it was before ledger ids
    row = {**new_row(old_job, MANIFEST, "2026-01-01T00:00:00+00:00", "unused")}
    row.pop("priced_by")  # a column of a later migration
    row.update(status="submitting", idempotency_key=f"{old_job.key}-1")
    with sqlite3.connect(path) as db:  # a job an older runner left mid-submit
        db.execute(
            f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    with SqliteLedger.open(path) as led:
        led.record_plan(MANIFEST, [old_job, new_job])
        assert len(led.id) == 12
        assert led.get(old_job.key).idempotency_key == f"{old_job.key}-1"  # type: ignore[union-attr]
        assert led.get(new_job.key).idempotency_key == f"{led.id}-{new_job.key}-1"  # type: ignore[union-attr]


def test_two_ledgers_have_different_ids_and_keys(tmp_path: Path) -> None:
    """Two state dirs planning the same job hand out different idempotency keys, so they
    never receive each other's generations on one account."""
    job = make_job()
    keys = []
    for name in ("a", "b"):
        with SqliteLedger.open(tmp_path / name / "ledger.db") as led:
            led.record_plan(MANIFEST, [job])
            keys.append(led.get(job.key).idempotency_key)  # type: ignore[union-attr]
    assert keys[0] != keys[1]


def test_claims_left_by_a_dead_executor_are_void_under_the_lock(state: Path) -> None:
    """One executor at a time holds a SQLite ledger, so the claims found when the lock is
    taken are a dead process's: they are voided, not waited out."""
    job = make_job()
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [job])
        assert [r.key for r in led.claim(MANIFEST, "dead/1/x", lease=3600)] == [job.key]
        assert led.claim(MANIFEST, "me", lease=60) == []
        with led.executor_lock():
            assert led.claim_of(job.key) is None
            assert [r.key for r in led.claim(MANIFEST, "me", lease=60)] == [job.key]


def test_a_plan_rewrites_tags_only_when_their_values_change_and_never_what_the_key_holds(
    state: Path,
) -> None:
    """A known job's tags are compared by the values they hold: the same tags stored another
    way (escaped text) stay as stored, changed tags are rewritten. Its request and vars are
    what its key is the hash of (with its campaign, variant and soul), so the job the ledger
    holds under that key has them: a plan neither compares nor rewrites them, however their
    text is written (other key order, escaped text)."""
    job = make_job(prompt="café {x}", x=1, tags=("té",))
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [job])
    other_way = json.dumps(dict(reversed(list(job.request.items()))))  # "caf\u00e9", reordered
    db = state / "ledger.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE jobs SET request = ?, tags = ? WHERE key = ?",
            [other_way, json.dumps(["té"]), job.key],
        )

    def stored() -> tuple[str, str, str, str]:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT request, vars, tags, updated_at FROM jobs WHERE key = ?", [job.key]
            ).fetchone()
        return row  # type: ignore[no-any-return]

    before = stored()
    assert before[2] == '["t\\u00e9"]'
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [job])
    assert stored() == before  # nothing to refresh: not even updated_at
    retagged = dataclasses.replace(job, tags=("t",))
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, [retagged])
        row = led.get(job.key)
    request, matrix, tags, updated_at = stored()
    assert (request, matrix, tags) == (other_way, before[1], '["t"]')
    assert row is not None and (row.request, row.tags) == (job.request, ("t",))
    # a Job whose request is not what its key says (expand never makes one) changes nothing
    changed = dataclasses.replace(retagged, request={**job.request, "duration": 5})
    with open_ledger(url_of(state)) as led:
        assert led.record_plan(MANIFEST, [changed]).unchanged
    assert stored() == (request, matrix, tags, updated_at)


def test_the_plans_json_is_json_dumps_text() -> None:
    """The ledger's JSON columns are written (and compared) as ``json.dumps(value,
    ensure_ascii=False)`` writes them, whatever the values; a value JSON cannot hold is a
    TypeError as there."""
    from runner.ledger.plan import _json

    values: list[Any] = [
        {"prompt": 'café \u2603 "quoted" \\ \n\t', "duration": 5, "ratio": 1.5, "seed": 2**40},
        {"nested": {"list": [1, 2.0, None, True, False], "empty": {}}, "": []},
        ("a", "b"),
        [float("inf"), float("-inf"), 1e-7, -0.0],
        "text",
        3,
        None,
        {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    ]
    for value in values:
        assert _json(value) == json.dumps(value, ensure_ascii=False)
    assert _json([float("nan")]) == json.dumps([float("nan")], ensure_ascii=False)
    with pytest.raises(TypeError):
        _json({"when": object()})


def test_statuses_are_read_as_job_statuses_and_an_unknown_word_is_refused(state: Path) -> None:
    """The reads of many rows get each status converted by sqlite3 as it fetches the row
    (``store.STATUS_TYPE``): the same ``JobStatus`` members as a single-row read, and a word
    that is no status is a ``ValueError`` naming it, as anywhere else."""
    from runner.engine import charged
    from runner.ledger import JobStatus

    jobs = [make_job("c", 0, x=1), make_job("c", 1, x=2)]
    with open_ledger(url_of(state)) as led:
        led.record_plan(MANIFEST, jobs)
        led.transition(jobs[1].key, "submitting")
        read = [
            [r.status for r in led.briefs()],
            [r.status for r in led.jobs()],
            [r.status for r in led.iter_jobs(keys=[j.key for j in jobs])],
            [JobStatus(s) for s in led.diff(MANIFEST, jobs, charged=charged).statuses.values()],
        ]
        expected = [led.get(j.key).status for j in jobs]  # type: ignore[union-attr]
    assert expected == [JobStatus.PENDING, JobStatus.SUBMITTING]
    for statuses in read:
        assert all(a is b for a, b in zip(statuses, expected, strict=True)), statuses
    with sqlite3.connect(state / "ledger.db") as conn:
        conn.execute("UPDATE jobs SET status = 'mislaid' WHERE key = ?", [jobs[0].key])
    with open_ledger(url_of(state)) as led:
        with pytest.raises(ValueError, match="'mislaid' is not a valid JobStatus"):
            list(led.briefs())
        with pytest.raises(ValueError, match="'mislaid' is not a valid JobStatus"):
            led.diff(MANIFEST, jobs)

"""What only the PostgreSQL ledger has: its schema and named migrations, row locks between
writers, several processes starting at once, URLs that never show a password.

Each test gets a fresh database of a throwaway cluster (``tests/pgcluster.py``); skipped,
saying why, where PostgreSQL is not installed. Checked from outside with psycopg, as any tool
would; the ledger itself only through its public API.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

import psycopg
from psycopg.rows import dict_row

from runner.errors import LedgerError, TransitionError
from runner.ledger import JobStatus, open_ledger
from runner.ledger.postgres import MIGRATION_LOCK, PostgresLedger
from runner.ledger.postgres.migrations import INDEXES_ONLY, MIGRATIONS, migrate
from runner.ledger.urls import masked_url
from tests.pgcluster import PgCluster
from tests.test_ledger import MANIFEST, PATHS, make_job, walk
from tests.test_ledger_sqlite import EXPECTED_COLUMNS

S = JobStatus
SECRET = "s3cret-pw"
WAIT = 60.0  # seconds a condition may take to come true on a loaded machine

# Another process walking its jobs to downloaded while this one watches.
WALKER = """
import sys
from runner.ledger import open_ledger
with open_ledger(sys.argv[1]) as led:
    for key in sys.argv[2:]:
        for status in ("submitting", "queued", "running", "completed", "downloaded"):
            led.transition(key, status, detail="other process")
print("done", flush=True)
"""


def outside(url: str) -> psycopg.Connection[dict[str, Any]]:
    """A connection of our own to the ledger's database, as any tool would open."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (never a fixed sleep); fail after ``WAIT``."""
    deadline = time.monotonic() + WAIT
    delay = 0.002
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


#: The lock types a session waits on for a row another one locked: the first waiter waits
#: for the holder's transaction, the others for the row (tuple) behind it.
ROW_LOCK = ("transactionid", "tuple")


def waiting_on_locks(conn: psycopg.Connection[dict[str, Any]], *locktypes: str) -> int:
    """How many sessions wait for a lock of these types (in any database: a transaction
    id lock has none, and the cluster is this test's alone)."""
    row = conn.execute(
        "SELECT count(*) AS n FROM pg_locks WHERE NOT granted AND locktype = ANY(%s)",
        [list(locktypes)],
    ).fetchone()
    assert row is not None
    return int(row["n"])


def migrations_recorded(url: str) -> list[str]:
    with outside(url) as conn:
        return [r["name"] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]


def tables(url: str) -> set[str]:
    with outside(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {r["table_name"] for r in rows}


def run_threads(n: int, work: Callable[[int], None]) -> tuple[list[threading.Thread], list[Any]]:
    """Start ``n`` threads running ``work(i)``; errors are collected into the list returned."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as err:  # collected and asserted on by the caller
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads, errors


# --- the schema and its migrations ----------------------------------------------------------


def test_fresh_ledger_has_every_table_and_column(pg_url: str) -> None:
    """Taking the executor lock sets a fresh database up: the same tables and columns as
    SQLite, JSON as ``json``, times as ``timestamptz``, every migration recorded once."""
    with open_ledger(pg_url) as led, led.executor_lock():
        pass
    with outside(pg_url) as conn:
        for table, expected in EXPECTED_COLUMNS.items():
            rows = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s",
                [table],
            ).fetchall()
            assert {r["column_name"] for r in rows} == expected, table
            types = {r["column_name"]: r["data_type"] for r in rows}
            if table == "jobs":
                assert {types[c] for c in ("request", "vars", "tags")} == {"json"}
                assert {types[c] for c in ("created_at", "updated_at")} == {
                    "timestamp with time zone"
                }
    assert migrations_recorded(pg_url) == sorted(fn.__name__ for fn in MIGRATIONS)


def test_first_use_sets_the_schema_up_and_opening_does_not(pg_url: str) -> None:
    """Opening read-write creates nothing; the first read does; reopening applies nothing."""
    with open_ledger(pg_url) as led:
        assert tables(pg_url) == set()
        assert led.jobs() == []
    before = migrations_recorded(pg_url)
    with open_ledger(pg_url) as led, led.executor_lock():
        led.record_plan(MANIFEST, [make_job()])
    assert migrations_recorded(pg_url) == before
    with outside(pg_url) as conn, conn.transaction():
        assert migrate(conn) == []


@pytest.mark.parametrize("n", range(1, len(MIGRATIONS)))
def test_older_ledger_upgrades_in_place(pg_url: str, n: int) -> None:
    """A database set up by only the first n migrations gains the rest and keeps its data."""
    job = make_job()
    with outside(pg_url) as conn, conn.transaction():
        migrate(conn, MIGRATIONS[:n])
        conn.execute(
            "INSERT INTO jobs (key, campaign, manifest, job_index, request, vars, path, status,"
            " idempotency_key, attempts, credits, sha256, created_at, updated_at) VALUES"
            " (%s, 'c', %s, 0, '{\"prompt\": \"p\"}', '{}', 'c/x.mp4', 'downloaded', %s, 1, 8,"
            " %s, '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00')",
            [job.key, MANIFEST, f"{job.key}-1", "ab" * 32],
        )
    if {fn.__name__ for fn in MIGRATIONS[n:]} <= INDEXES_ONLY:  # it lacks indexes only
        with open_ledger(pg_url, readonly=True) as led:
            assert [r.key for r in led.jobs()] == [job.key]
    else:
        with pytest.raises(LedgerError, match="older runner"):
            open_ledger(pg_url, readonly=True)
    with open_ledger(pg_url) as led, led.executor_lock():
        row = led.get(job.key)
        assert row is not None
        assert (row.status, row.sha256, row.request, row.location) == (
            S.DOWNLOADED, "ab" * 32, {"prompt": "p"}, None,
        )  # fmt: skip
        assert row.created_at == "2025-01-01T00:00:00.000000+00:00"
    assert len(migrations_recorded(pg_url)) == len(MIGRATIONS)


def test_a_new_migration_adds_a_column_to_existing_rows(pg_url: str) -> None:
    """Appending a migration later upgrades a database that already holds jobs."""
    with open_ledger(pg_url) as led:
        led.record_plan(MANIFEST, [make_job()])

    def m999_jobs_note(conn: psycopg.Connection[dict[str, Any]]) -> None:
        conn.execute("ALTER TABLE jobs ADD COLUMN note text")

    with PostgresLedger.open(pg_url, migrations=[*MIGRATIONS, m999_jobs_note]) as led:
        assert led.get(make_job().key) is not None
    assert "m999_jobs_note" in migrations_recorded(pg_url)


def test_migrations_applied_once_when_many_open_at_once(pg_url: str) -> None:
    """Eight ledgers using a fresh database at once all queue on the migration lock (held
    here until every one waits), then the first applies the migrations and the rest find
    nothing to do: no error, each migration recorded once."""
    n = 8
    with outside(pg_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])

        def use(i: int) -> None:
            with open_ledger(pg_url) as led:
                led.record_plan(f"/m{i}.yaml", [make_job(manifest=f"/m{i}.yaml", n=i)])

        threads, errors = run_threads(n, use)
        wait_until(lambda: waiting_on_locks(holder, "advisory") == n, f"{n} ledgers to queue")
        holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
        for thread in threads:
            thread.join()
    assert errors == []
    assert migrations_recorded(pg_url) == sorted(fn.__name__ for fn in MIGRATIONS)
    with open_ledger(pg_url) as led:
        assert len(led.jobs()) == n


# --- read-only opening ----------------------------------------------------------------------


def test_readonly_on_a_database_without_a_ledger_is_none_and_creates_nothing(pg_url: str) -> None:
    """A database holding other tables but no ledger: None, and nothing is added to it."""
    with outside(pg_url) as conn:
        conn.execute("CREATE TABLE unrelated (x int)")
    assert open_ledger(pg_url, readonly=True) is None
    assert tables(pg_url) == {"unrelated"}


# --- writers at once ------------------------------------------------------------------------


def test_writers_of_one_job_wait_for_its_row_lock(pg_url: str) -> None:
    """While another session holds a job's row lock, eight ledgers changing it all wait on
    it (their read is FOR UPDATE); once it is released they go one by one, each checked
    against the last: one ``failed`` wins, seven are refused; eight ``bump_attempts``
    after that count eight."""
    n = 8
    job = make_job()
    with open_ledger(pg_url) as led:
        led.record_plan(MANIFEST, [job])
    outcomes: list[str] = []
    with outside(pg_url) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM jobs WHERE key = %s FOR UPDATE", [job.key])

        def change(_: int) -> None:
            with open_ledger(pg_url) as led:
                try:
                    led.transition(job.key, "failed", error="gone")
                    outcomes.append("changed")
                except TransitionError:
                    outcomes.append("refused")
                led.bump_attempts(job.key)

        threads, errors = run_threads(n, change)
        wait_until(lambda: waiting_on_locks(holder, *ROW_LOCK) == n, "every writer to wait")
        holder.execute("COMMIT")
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(outcomes) == ["changed"] + ["refused"] * (n - 1)
    with open_ledger(pg_url) as led:
        row = led.get(job.key)
        assert row is not None and (row.status, row.attempts) == (S.FAILED, n)
        assert [e.to_status for e in led.events(job.key)] == [S.PENDING, S.FAILED]


def test_another_process_changes_other_jobs_while_one_is_locked(pg_url: str) -> None:
    """A job's row lock holds back only that job: another process walks four other jobs to
    downloaded and exits while it is held, and this process's change to the locked job
    waits, then lands."""
    locked, *others = [make_job(n=i) for i in range(5)]
    with open_ledger(pg_url) as led:
        led.record_plan(MANIFEST, [locked, *others])
    with outside(pg_url) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM jobs WHERE key = %s FOR UPDATE", [locked.key])

        def change_locked(_: int) -> None:
            with open_ledger(pg_url) as led:
                walk(led, locked.key, PATHS["downloaded"])

        threads, errors = run_threads(1, change_locked)
        proc = subprocess.run(
            [sys.executable, "-c", WALKER, pg_url, *(job.key for job in others)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (proc.returncode, proc.stdout.strip()) == (0, "done"), proc.stderr
        wait_until(lambda: waiting_on_locks(holder, *ROW_LOCK) == 1, "the locked change")
        with open_ledger(pg_url) as led:
            assert led.get(locked.key).status is S.PENDING  # type: ignore[union-attr]
        holder.execute("COMMIT")
        threads[0].join()
    assert errors == []
    with open_ledger(pg_url) as led:
        assert {r.status for r in led.jobs()} == {S.DOWNLOADED}
        assert all(e.detail == "other process" for e in led.events(others[0].key)[1:])


def test_plans_recorded_at_once_insert_each_job_once(pg_url: str) -> None:
    """Eight ledgers recording the same new jobs at once take turns: no duplicate key
    error, each job planned once (one event), and the diffs add them exactly once."""
    n = 8
    jobs = [make_job(n=i) for i in range(20)]
    start = threading.Barrier(n)
    added: list[int] = []

    def record(_: int) -> None:
        with open_ledger(pg_url) as led:
            led.jobs()
            start.wait()
            added.append(len(led.record_plan(MANIFEST, jobs).added))

    threads, errors = run_threads(n, record)
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(added) == [0] * (n - 1) + [len(jobs)]
    with open_ledger(pg_url) as led:
        assert len(led.jobs()) == len(jobs)
        assert all(len(led.events(job.key)) == 1 for job in jobs)


def test_lists_sort_by_code_point_whatever_the_collation(pg_cluster: PgCluster) -> None:
    """In a database whose collation is ICU en-US ("a" before "B"), jobs and souls still
    sort as SQLite sorts them: by code point ("B" before "a")."""
    try:
        name = pg_cluster.create_database(icu_locale="en-US")
    except psycopg.Error as err:
        pytest.skip(f"this PostgreSQL cannot create an ICU database: {err}")
    try:
        url = pg_cluster.url(name)
        with open_ledger(url) as led:
            for manifest in ("/a.yaml", "/B.yaml"):
                led.record_plan(manifest, [make_job("x", manifest=manifest, m=manifest)])
                led.set_soul("ava", manifest, status="ready")
            assert [r.manifest for r in led.jobs()] == ["/B.yaml", "/a.yaml"]
            assert [s.manifest for s in led.souls()] == ["/B.yaml", "/a.yaml"]
    finally:
        pg_cluster.drop_database(name)


# --- URLs and passwords ---------------------------------------------------------------------


def with_password(url: str, how: str) -> str:
    """``url`` (no password) with ``SECRET`` as its password, in the user part or the query."""
    if how == "userinfo":
        return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)
    return f"{url}&password={SECRET}"


@pytest.mark.parametrize("how", ["userinfo", "query"])
def test_the_password_never_shows(pg_url: str, how: str) -> None:
    """With a password in the URL (the test cluster trusts us, so it is not checked), the
    ledger works, and neither ``url``, ``repr`` nor any error shows it."""
    url = with_password(pg_url, how)
    with open_ledger(url) as led:
        led.record_plan(MANIFEST, [make_job()])
        assert SECRET not in led.url and "***" in led.url
        assert SECRET not in repr(led)
        with pytest.raises(LedgerError) as caught:
            led.transition("0" * 16, "submitting")
        assert SECRET not in str(caught.value)
    reader = open_ledger(url, readonly=True)
    assert reader is not None
    with reader:
        assert SECRET not in reader.url and SECRET not in repr(reader)
        with pytest.raises(LedgerError, match="read-only") as caught:
            reader.note(make_job().key, "x")
        assert SECRET not in str(caught.value)
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    missing = url.replace(f"/{dbname}?", "/no_such_db?", 1)
    for readonly in (False, True):
        with pytest.raises(LedgerError, match="no_such_db") as caught:
            open_ledger(missing, readonly=readonly)
        assert SECRET not in str(caught.value) and caught.value.__cause__ is None


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_an_unreachable_server_is_a_ledger_error(refusing_port: int, scheme: str) -> None:
    """Both schemes reach the PostgreSQL ledger; a server that is not there is a
    LedgerError naming the masked URL, chaining nothing that could hold the password."""
    url = f"{scheme}://runner:{SECRET}@127.0.0.1:{refusing_port}/ledger"
    for readonly in (False, True):
        with pytest.raises(LedgerError, match="cannot open the ledger") as caught:
            open_ledger(url, readonly=readonly)
        message = str(caught.value)
        assert f"{scheme}://runner:***@127.0.0.1:{refusing_port}/ledger" in message
        assert SECRET not in message and caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40w@h1:5432,h2/db?sslmode=require",
         "postgresql://u:***@h1:5432,h2/db?sslmode=require"),
        ("postgresql:///db?host=/run/pg&password=pw&user=u",
         "postgresql:///db?host=/run/pg&password=***&user=u"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)  # fmt: skip
def test_masked_url(url: str, shown: str) -> None:
    """Passwords are masked in the user part and in the query; the rest is kept."""
    assert masked_url(url) == shown


def test_without_psycopg_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite-only install asked for a PostgreSQL ledger says how to get one."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(LedgerError, match=r"runner\[postgres\]") as caught:
        open_ledger(f"postgresql://u:{SECRET}@db.example/ledger")
    assert SECRET not in str(caught.value)


def test_sqlite_never_imports_psycopg(tmp_path: Path) -> None:
    """Using a SQLite ledger loads nothing of the PostgreSQL one, nor psycopg."""
    script = (
        "import sys; from runner.ledger import open_ledger\n"
        f"with open_ledger({str(tmp_path / 'ledger.db')!r}) as led: led.jobs()\n"
        "print(sorted(m for m in sys.modules if 'psycopg' in m or 'ledger.postgres' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- per-account limits shared by processes (SPEC §8) ----------------------------------------


def test_account_slots_count_generations_at_the_provider(pg_url: str) -> None:
    """An account's slots: at most ``limit`` jobs hold one, a job asking again keeps its own,
    ``force`` counts a generation already sent; a slot whose job left the provider, or is
    back to pending with nobody holding it, is dropped by the next taker."""
    jobs = [make_job(n=i, index=i) for i in range(5)]
    with open_ledger(pg_url) as led:
        led.record_plan(MANIFEST, jobs)
        assert len(led.claim(MANIFEST, "me", lease=600)) == 5  # as the executor does
        limits = led.shared_limits()
        assert limits is not None
        a, b, c, d, e = (j.key for j in jobs)
        assert limits.take_slot("acct", a, 2) and limits.take_slot("acct", b, 2)
        assert not limits.take_slot("acct", c, 2)
        assert limits.take_slot("acct", a, 2)  # its own
        assert limits.take_slot("acct", c, 2, force=True)  # found at the provider
        assert limits.take_slot("other", e, 1)  # another account counts apart
        for key in (a, b, c):
            led.transition(key, "submitting")
        led.transition(a, "failed")  # left the provider: its slot goes
        assert not limits.take_slot("acct", d, 2)  # b and c still count
        led.transition(b, "queued")
        led.transition(b, "completed")
        assert limits.take_slot("acct", d, 2)
        limits.free_slot(d)
        assert limits.take_slot("acct", d, 2)
        assert not limits.take_slot("acct", a, 2)  # c and d
        led.release("me", [d])  # pending, and nobody holds it: its process died
        assert limits.take_slot("acct", a, 2)
        # a manifest with work left on the account that declared fewer slots lowers them
        limits.declare_concurrency("acct", MANIFEST, 1)
        assert not limits.take_slot("acct", d, 5)  # c and a hold 2 > 1
        limits.declare_concurrency("acct", MANIFEST, 5)
        assert limits.take_slot("acct", d, 5)


def test_rate_turns_are_spaced_across_connections(pg_url: str) -> None:
    """Turns taken from two connections at once are spaced ``interval`` apart in the
    server's time: the n-th turn is about n intervals from now."""
    with open_ledger(pg_url) as one, open_ledger(pg_url) as two:
        first, second = one.shared_limits(), two.shared_limits()
        assert first is not None and second is not None
        waits = [(first if i % 2 else second).rate_turn("acct", 0.5) for i in range(6)]
    assert waits[0] < 0.5
    for before, after in itertools.pairwise(waits):
        assert after - before > 0.3  # 0.5 apart, less the time between the two asks


def test_credit_reservations_never_pass_the_cap(pg_url: str) -> None:
    """Eight connections reserving 3 credits at a time under a cap of 20 get exactly six
    reservations between them; a refund makes room for one more."""
    got: list[float] = []

    def work(_: int) -> None:
        with open_ledger(pg_url) as led:
            limits = led.shared_limits()
            assert limits is not None
            while (total := limits.reserve_credits("scope", 3, 20)) is not None:
                got.append(total)

    with open_ledger(pg_url) as led:
        led.jobs()  # sets the schema up before the threads race for it
    threads, errors = run_threads(8, work)
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(got) == [3, 6, 9, 12, 15, 18]
    with open_ledger(pg_url) as led:
        limits = led.shared_limits()
        assert limits is not None
        limits.refund_credits("scope", 3)
        assert limits.reserve_credits("scope", 3, 20) == 18

"""Many writers on one SQLite ledger (threads and processes), reads during writes, the executor
lock."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runner.errors import LedgerLockedError
from runner.jobs import Job
from runner.ledger import ExecutorLock, JobStatus, SqliteLedger, default_ledger_url, open_ledger

MANIFEST = "/work/m.yaml"

# A second process writing to the same ledger: it opens the ledger (or not, before "go"),
# says "ready", waits for a line on stdin, then writes.
WRITER = """
import sys
from runner.ledger import default_ledger_url, open_ledger
from runner.jobs import Job
state, key, n, open_first = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
led = open_ledger(default_ledger_url(state)) if open_first else None
print("ready", flush=True)
sys.stdin.readline()
led = led or open_ledger(default_ledger_url(state))
job = Job(key=key, campaign="p", manifest="/proc/" + key, index=0, vars={}, request={},
          path=key + ".mp4", credits=1.0)
led.record_plan("/proc/" + key, [job])
for i in range(n):
    led.bump_attempts(key)
    led.note(key, f"process note {i}")
led.close()
print("done", flush=True)
"""

HOLDER = """
import sys
from runner.errors import LedgerLockedError
from runner.ledger import default_ledger_url, open_ledger
led = open_ledger(default_ledger_url(sys.argv[1]))
lock = led.executor_lock()  # kept referenced: held until this process ends
try:
    lock.__enter__()
except LedgerLockedError as err:
    print(f"refused: {err}", flush=True)
    sys.exit(2)
print("locked", flush=True)
sys.stdin.readline()
"""


def make_job(name: str, index: int = 0) -> Job:
    key = hashlib.sha256(name.encode()).hexdigest()[:16]
    return Job(
        key=key,
        campaign="c",
        manifest=MANIFEST,
        index=index,
        vars={"name": name},
        request={"prompt": name},
        path=f"c/{key}.mp4",
        credits=1.0,
    )


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_threads_and_a_process_write_at_once(tmp_path: Path) -> None:
    """Eight threads (own Ledger each) and a second process write together: no lock errors."""
    threads_n, rounds = 8, 25
    jobs = [make_job(f"job{i}", i) for i in range(threads_n)]
    shared = make_job("shared", threads_n)
    with open_ledger(default_ledger_url(tmp_path)) as led:
        led.record_plan(MANIFEST, [*jobs, shared])

    proc_key = hashlib.sha256(b"proc").hexdigest()[:16]
    proc = spawn(WRITER, str(tmp_path), proc_key, str(rounds), "1")
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"

    start = threading.Barrier(threads_n + 1)
    errors: list[BaseException] = []

    def work(job: Job) -> None:
        try:
            with open_ledger(default_ledger_url(tmp_path)) as led:
                start.wait()
                for status in ("submitting", "queued", "running", "completed", "downloaded"):
                    led.transition(job.key, status, detail=f"thread {job.index}")
                for _ in range(rounds):
                    led.bump_attempts(shared.key)
                    led.note(shared.key, f"thread {job.index}")
                    led.counts(MANIFEST)
                led.record_plan(MANIFEST, [*jobs, shared])
        except BaseException as err:  # collected and asserted on below
            errors.append(err)

    workers = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for worker in workers:
        worker.start()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    start.wait()
    for worker in workers:
        worker.join()
    out, err = proc.communicate(timeout=120)

    assert errors == []
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    with open_ledger(default_ledger_url(tmp_path)) as led:
        assert {r.status for r in led.jobs(keys=[j.key for j in jobs])} == {JobStatus.DOWNLOADED}
        row = led.get(shared.key)
        assert row is not None and row.attempts == threads_n * rounds
        assert len(led.events(shared.key)) == 1 + threads_n * rounds
        proc_row = led.get(proc_key)
        assert proc_row is not None and proc_row.attempts == rounds
        assert len(led.events(proc_key)) == 1 + rounds


def test_processes_creating_a_fresh_ledger_at_once(tmp_path: Path) -> None:
    """Several processes opening a brand-new ledger together migrate it exactly once."""
    state = tmp_path / "state"
    keys = [hashlib.sha256(f"p{i}".encode()).hexdigest()[:16] for i in range(4)]
    procs = [spawn(WRITER, str(state), key, "10", "0") for key in keys]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in results]
    with open_ledger(default_ledger_url(state)) as led:
        assert [led.get(key).attempts for key in keys] == [10] * 4  # type: ignore[union-attr]
    with sqlite3.connect(state / "ledger.db") as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM _migrations")]
    assert len(names) == len(set(names))


def test_readers_see_committed_data_while_a_write_is_open(tmp_path: Path) -> None:
    """WAL: a read-only ledger reads (the last committed state) while a writer holds its lock."""
    job = make_job("a")
    with open_ledger(default_ledger_url(tmp_path)) as led:
        led.record_plan(MANIFEST, [job])
    writer = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE jobs SET status = 'failed'")
    try:
        reader = SqliteLedger.open_readonly(tmp_path / "ledger.db", busy_timeout=0)
        assert reader is not None
        with reader:
            assert [r.status for r in reader.jobs()] == [JobStatus.PENDING]
            assert reader.counts() == {"c": {"pending": 1}}
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_second_lock_holder_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """A second ExecutorLock is refused with the holder's pid; after release it succeeds."""
    with ExecutorLock(tmp_path) as first:
        content = json.loads((tmp_path / "runner.lock").read_text())
        assert content["pid"] == os.getpid()
        with pytest.raises(LedgerLockedError, match=f"held by pid {os.getpid()} since "):
            ExecutorLock(tmp_path).acquire()
        assert first.held
    assert not first.held
    assert (tmp_path / "runner.lock").read_text() == ""
    with ExecutorLock(tmp_path):
        pass


def test_second_lock_holder_in_another_process_is_refused(tmp_path: Path) -> None:
    """Another process gets LedgerLockedError naming this process while it holds the lock."""
    with open_ledger(default_ledger_url(tmp_path)) as led, led.executor_lock():
        proc = spawn(HOLDER, str(tmp_path))
        out, _ = proc.communicate("", timeout=60)
    assert proc.returncode == 2
    assert f"held by pid {os.getpid()}" in out


def test_sigkilled_holder_releases_the_lock(tmp_path: Path) -> None:
    """A holder killed with SIGKILL leaves no stale lock behind."""
    proc = spawn(HOLDER, str(tmp_path))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    try:
        with (
            open_ledger(default_ledger_url(tmp_path)) as led,
            pytest.raises(LedgerLockedError, match=f"pid {proc.pid} "),
        ):
            led.executor_lock().__enter__()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with (
        open_ledger(default_ledger_url(tmp_path)) as led,
        led.executor_lock(),
        pytest.raises(LedgerLockedError, match=f"pid {os.getpid()} "),
    ):
        ExecutorLock(tmp_path).acquire()

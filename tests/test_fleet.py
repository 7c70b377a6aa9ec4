"""Many processes on one PostgreSQL ledger (SPEC §8), as real processes against the mock on
loopback: each job is worked on by one process at a time, and the mock's own counts show
that no generation was paid for twice and no video was fetched twice."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from runner.ledger import JobStatus, open_ledger
from runner.mock import MockOptions
from runner.mock.server import MockServerThread
from tests.test_cli_run import HANG_GUARD, Factory, runner_env, write_manifest


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m runner ARGS`` as a real process."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def downloads_per_job(url: str) -> dict[str, int]:
    """How many times the ledger recorded each job as downloaded."""
    with open_ledger(url) as led:
        return {
            row.key: sum(e.to_status is JobStatus.DOWNLOADED for e in led.events(row.key))
            for row in led.jobs()
        }


def test_two_runs_of_one_manifest_share_its_jobs(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """Two `runner run` of the same manifest at once on one PostgreSQL ledger: the mock
    creates exactly one generation per job and replays none (no job was sent by both), every
    video is fetched once and every job is downloaded once; both runs exit 0."""
    server = mock_server_factory(MockOptions(latency_min=0.2, latency_max=0.4, seed=12))
    manifest = tmp_path / "m.yaml"
    jobs = write_manifest(manifest, subjects=4, places=5, concurrency=4, rps=40)
    env = runner_env(server, RUNNER_LEDGER=pg_url)
    runs = [
        start("run", str(manifest), "--state", str(tmp_path / f"s{i}"), env=env) for i in (1, 2)
    ]
    for proc in runs:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, out + err
    stats = server.state.stats()
    assert stats["generations_created"] == jobs
    assert stats["idempotent_replays"] == 0
    assert stats["video_downloads"] == jobs
    assert downloads_per_job(pg_url) == dict.fromkeys(downloads_per_job(pg_url), 1)
    assert len(downloads_per_job(pg_url)) == jobs
    with open_ledger(pg_url) as led:
        assert all(led.claim_of(r.key) is None for r in led.jobs())  # all released


def test_a_dead_runs_jobs_are_taken_over_after_its_lease(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """A run killed (SIGKILL) mid-way leaves its jobs claimed; a second run on the same
    PostgreSQL ledger waits out the lease, takes them over where they are — a job left in
    `submitting` is re-sent with its same idempotency key — and finishes everything: the mock
    created one generation per job."""
    server = mock_server_factory(MockOptions(latency_min=0.5, latency_max=1.0, seed=13))
    manifest = tmp_path / "m.yaml"
    jobs = write_manifest(manifest, subjects=3, places=4, concurrency=6, rps=40)
    env = runner_env(server, RUNNER_LEDGER=pg_url, RUNNER_LEASE="2")
    first = start("run", str(manifest), "--state", str(tmp_path / "s1"), env=env)
    try:
        _wait_for_submits(server, 3, first)
    finally:
        first.kill()
        first.communicate()
    with open_ledger(pg_url) as led:
        held = [r.key for r in led.jobs() if led.claim_of(r.key) is not None]
    assert held  # the dead run's claims are still there
    second = start("run", str(manifest), "--state", str(tmp_path / "s2"), env=env)
    out, err = second.communicate(timeout=HANG_GUARD)
    assert second.returncode == 0, out + err
    stats = server.state.stats()
    assert stats["generations_created"] == jobs
    assert stats["idempotency_conflicts"] == 0
    with open_ledger(pg_url) as led:
        assert {r.status for r in led.jobs()} == {JobStatus.DOWNLOADED}
        notes = [e.detail or "" for r in led.jobs() for e in led.events(r.key)]
    assert sum("taken over by" in n for n in notes) >= 1


def _wait_for_submits(server: MockServerThread, n: int, proc: subprocess.Popen[str]) -> None:
    """Until the mock has created ``n`` generations (or the process ended, or a hang)."""
    deadline = time.monotonic() + HANG_GUARD
    while server.state.stats()["generations_created"] < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no submit came"
        time.sleep(0.01)


def busiest_second(times: list[float]) -> int:
    """The most calls in any 1-second window (each window starting at a call)."""
    times = sorted(times)
    most, j = 0, 0
    for i, start in enumerate(times):
        while times[j] < start:
            j += 1
        end = i
        while end + 1 < len(times) and times[end + 1] < start + 1.0:
            end += 1
        most = max(most, end - j + 1)
    return most


def api_call_times(server: MockServerThread) -> list[float]:
    """When the mock received each authenticated API call (video downloads are not)."""
    return [e["time"] for e in server.state.log_entries() if e["auth"]]


def test_account_limits_hold_summed_over_processes(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """Two runs on one account through one PostgreSQL ledger: the account's generations in
    flight never exceed its concurrency (the mock's own maximum), and no 1-second window at
    the mock holds more calls than requests_per_second, although each run alone would be
    allowed that much."""
    server = mock_server_factory(MockOptions(latency_min=0.3, latency_max=0.6, seed=14))
    manifest = tmp_path / "m.yaml"
    jobs = write_manifest(manifest, subjects=4, places=4, concurrency=3, rps=8, poll=0.2)
    env = runner_env(server, RUNNER_LEDGER=pg_url, RUNNER_LEASE="5")
    runs = [
        start("run", str(manifest), "--state", str(tmp_path / f"s{i}"), env=env) for i in (1, 2)
    ]
    for proc in runs:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, out + err
    stats = server.state.stats()
    assert stats["generations_created"] == jobs
    assert stats["max_in_flight"] <= 3
    assert busiest_second(api_call_times(server)) <= 8


FLEET_MANIFEST = """\
version: 1
provider: {{base_url: "{base}"}}
limits: {{concurrency: {concurrency}, requests_per_second: {rps}, max_attempts: 10,
          poll_initial: 0.1, poll_max: 0.3}}
budget:
  {cap}
  prices: [{{match: {{}}, credits_per_second: 2}}]
defaults: {{type: text-to-video, duration: 2}}
campaigns:
  - name: {name}
    prompt: "shot {{n}} of {name}"
    matrix: {{n: [{numbers}]}}
"""
CREDITS_PER_JOB = 4  # 2 seconds at 2 credits a second


def fleet_manifest(
    path: Path,
    server: MockServerThread,
    *,
    jobs: int,
    concurrency: int = 3,
    rps: float = 8,
    max_credits: float | None = None,
) -> Path:
    """A manifest of ``jobs`` jobs on the account of ``server`` (its base URL in the file)."""
    cap = f"max_credits: {max_credits:g}" if max_credits is not None else ""
    path.write_text(
        FLEET_MANIFEST.format(
            base=server.seed_base_url.rstrip("/"),
            concurrency=concurrency,
            rps=rps,
            cap=cap,
            name=path.stem,
            numbers=", ".join(str(i) for i in range(jobs)),
        )
    )
    return path


def fleet_env(pg_url: str, **extra: str) -> dict[str, str]:
    """What a worker needs: the ledger URL and the key (no base URL: each manifest has its
    account's)."""
    env = {k: v for k, v in os.environ.items() if k != "HIGGSFIELD_BASE_URL"}
    return {**env, "HIGGSFIELD_API_KEY": "test-key", "RUNNER_BACKOFF": "0.01,0.2",
            "RUNNER_LEDGER": pg_url, **extra}  # fmt: skip


def test_enqueued_manifests_are_done_by_workers_that_need_only_the_ledger(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """`runner enqueue` two manifests on two accounts, delete the files, then three
    `runner worker --idle-exit` and one `runner run` of another manifest on one of the
    accounts do everything: one generation per job on each account, each account within
    its concurrency, every job downloaded once, every location a file with the right size."""
    servers = [
        mock_server_factory(MockOptions(latency_min=0.2, latency_max=0.4, seed=20 + i))
        for i in range(2)
    ]
    a = fleet_manifest(tmp_path / "a.yaml", servers[0], jobs=10)
    b = fleet_manifest(tmp_path / "b.yaml", servers[1], jobs=10)
    c = fleet_manifest(tmp_path / "c.yaml", servers[0], jobs=6)
    env = fleet_env(pg_url)
    enq = start("enqueue", str(a), str(b), "--state", str(tmp_path / "q"), env=env)
    out, err = enq.communicate(timeout=HANG_GUARD)
    assert enq.returncode == 0, out + err
    a.unlink()
    b.unlink()
    procs = [
        start("worker", "--idle-exit", "--state", str(tmp_path / f"w{i}"), env=env)
        for i in range(3)
    ]
    procs.append(start("run", str(c), "--state", str(tmp_path / "r"), env=env))
    for proc in procs:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, out + err
    created = [s.state.stats()["generations_created"] for s in servers]
    assert created == [16, 10]
    assert all(s.state.stats()["idempotent_replays"] == 0 for s in servers)
    assert all(s.state.stats()["max_in_flight"] <= 3 for s in servers)
    assert downloads_per_job(pg_url) == dict.fromkeys(downloads_per_job(pg_url), 1)
    with open_ledger(pg_url) as led:
        rows = led.jobs()
    assert len(rows) == 26 and {r.status for r in rows} == {JobStatus.DOWNLOADED}
    assert all(Path(r.location or "").stat().st_size == r.bytes for r in rows)


def test_a_budget_holds_across_workers(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """Three workers on one enqueued manifest with `budget.max_credits`: together they
    submit no more than the cap (the mock's count of generations says so), and exactly as
    many jobs as fit."""
    server = mock_server_factory(MockOptions(latency_min=0.1, latency_max=0.2, seed=30))
    cap = 7 * CREDITS_PER_JOB + 2  # room for 7 jobs, not 8
    m = fleet_manifest(tmp_path / "m.yaml", server, jobs=20, concurrency=6, max_credits=cap)
    env = fleet_env(pg_url)
    enq = start("enqueue", str(m), "--state", str(tmp_path / "q"), env=env)
    assert enq.wait(timeout=HANG_GUARD) == 0
    procs = [
        start("worker", "--idle-exit", "--state", str(tmp_path / f"w{i}"), env=env)
        for i in range(3)
    ]
    for proc in procs:
        proc.communicate(timeout=HANG_GUARD)
    created = server.state.stats()["generations_created"]
    assert created * CREDITS_PER_JOB <= cap
    assert created == 7


def fleet_chaos(
    tmp_path: Path,
    factory: Factory,
    pg_url: str,
    *,
    per_account: int,
    run_jobs: int,
    kills: int,
    seed: int,
) -> None:
    """One PostgreSQL ledger, two accounts (a mock server each, with latency and faults),
    `enqueue` of a manifest per account, three `runner worker` and one `runner run`;
    ``kills`` SIGKILLs of random workers, each after the mock has created more generations
    since the last one, at a random moment; each killed worker restarted. Then: one
    generation per job on each account, each job downloaded once, each account within its
    concurrency and its rate in every 1-second window, every location a file of the
    recorded size."""
    rng = random.Random(seed)
    faults = dict(rate_429=0.03, retry_after=0.2, rate_5xx=0.03, drop_after_accept_rate=0.05,
                  truncate_rate=0.05)  # fmt: skip
    servers = [
        factory(MockOptions(latency_min=0.3, latency_max=0.8, seed=seed + i, **faults))
        for i in range(2)
    ]
    concurrency, rps = 4, 6  # c.yaml: concurrency 3 (the default of fleet_manifest)
    a = fleet_manifest(tmp_path / "a.yaml", servers[0], jobs=per_account, concurrency=4, rps=6)
    b = fleet_manifest(tmp_path / "b.yaml", servers[1], jobs=per_account, concurrency=4, rps=6)
    # on b's account, with a smaller concurrency: the account is held to the smallest
    c = fleet_manifest(tmp_path / "c.yaml", servers[1], jobs=run_jobs, rps=6)
    total = 2 * per_account + run_jobs
    env = fleet_env(pg_url, RUNNER_LEASE="3")
    enq = start("enqueue", str(a), str(b), "--state", str(tmp_path / "q"), env=env)
    assert enq.wait(timeout=HANG_GUARD) == 0

    def worker(i: int) -> subprocess.Popen[str]:
        return start("worker", "--idle-exit", "--state", str(tmp_path / f"w{i}"), env=env)

    # The run first: an account is held to its smallest concurrency from the moment the
    # manifest that declares it has a process running it (generations sent before are not
    # called back).
    run = start("run", str(c), "--state", str(tmp_path / "r"), env=env)
    _wait_for_submits(servers[1], 1, run)
    workers = [worker(i) for i in range(3)]

    def created() -> int:
        return sum(s.state.stats()["generations_created"] for s in servers)

    killed = 0
    for _ in range(kills):
        mark = created()
        deadline = time.monotonic() + HANG_GUARD
        while created() <= mark and any(w.poll() is None for w in workers):
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        if all(w.poll() is not None for w in workers):
            break  # the work is done before every kill came
        time.sleep(rng.uniform(0, 0.5))
        i = rng.choice([i for i, w in enumerate(workers) if w.poll() is None] or [0])
        if workers[i].poll() is None:
            workers[i].kill()
            workers[i].communicate()
            killed += 1
            workers[i] = worker(i)
    for proc in [*workers, run]:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, out + err
    assert killed >= 1
    assert [s.state.stats()["generations_created"] for s in servers] == [
        per_account,
        per_account + run_jobs,
    ]
    for server in servers:
        assert server.state.stats()["max_in_flight"] <= concurrency
        assert busiest_second(api_call_times(server)) <= rps
    downloads = downloads_per_job(pg_url)
    assert len(downloads) == total and set(downloads.values()) == {1}
    with open_ledger(pg_url) as led:
        rows = led.jobs()
        c_done = max(
            datetime.fromisoformat(e.at).timestamp()
            for r in rows
            if Path(r.manifest).name == c.name
            for e in led.events(r.key)
            if e.to_status is JobStatus.DOWNLOADED
        )
    # b's account is held to c's concurrency (3) while c has work left, to 4 after.
    state = servers[1].state
    while_c = [n for at, _, n in state.creations if at + state.wall_offset < c_done]
    assert len(while_c) >= run_jobs and max(while_c) <= 3
    assert {r.status for r in rows} == {JobStatus.DOWNLOADED}
    assert all(Path(r.location or "").stat().st_size == r.bytes for r in rows)


def test_fleet_chaos(tmp_path: Path, mock_server_factory: Factory, pg_url: str) -> None:
    """Fleet chaos, small: 2 × 16 + 4 jobs, 5 kills (the default suite stays fast)."""
    fleet_chaos(tmp_path, mock_server_factory, pg_url, per_account=16, run_jobs=4, kills=5, seed=40)


@pytest.mark.slow
def test_fleet_chaos_long(tmp_path: Path, mock_server_factory: Factory, pg_url: str) -> None:
    """Fleet chaos as issue 12 asks: 2 × 88 + 24 = 200 jobs, 20 kills."""
    fleet_chaos(
        tmp_path, mock_server_factory, pg_url, per_account=88, run_jobs=24, kills=20, seed=41
    )


def test_enqueue_and_worker_on_a_sqlite_ledger(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """Without PostgreSQL the same commands work on one host: `enqueue` records the plan and
    executes nothing; `worker --idle-exit` does it all, then exits 0 saying what it did."""
    server = mock_server_factory(MockOptions(latency_min=0.01, latency_max=0.05, seed=50))
    m = fleet_manifest(tmp_path / "m.yaml", server, jobs=5, rps=50)
    env = {k: v for k, v in fleet_env("").items() if k != "RUNNER_LEDGER"}
    state = str(tmp_path / "state")
    enq = start("enqueue", str(m), "--state", state, env=env)
    out, err = enq.communicate(timeout=HANG_GUARD)
    assert enq.returncode == 0, out + err
    assert "enqueued 5 jobs (5 new)" in out
    assert server.state.stats()["generations_created"] == 0
    work = start("worker", "--idle-exit", "--state", state, env=env)
    out, err = work.communicate(timeout=HANG_GUARD)
    assert work.returncode == 0, out + err
    assert "worker: 5 jobs downloaded, 0 failed" in err
    assert server.state.stats()["generations_created"] == 5

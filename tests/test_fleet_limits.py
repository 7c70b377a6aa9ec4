"""A fleet's account limits and money when jobs are held or abandoned mid-submit (SPEC §8),
as real processes on one PostgreSQL ledger against the mock on loopback: a held submit frees
its account slot, a dead process's submit is taken over and re-sent with its key, and budget
reservations are given back when a job is not sent after all."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner import app
from runner.app.execute import account_of
from runner.ledger import JobRow, JobStatus, Ledger, open_ledger
from runner.manifest import load_manifest
from runner.mock import MockOptions
from runner.providers import Provider, make_provider
from runner.settings import provider_settings
from tests.test_cli_run import HANG_GUARD, Factory
from tests.test_fleet import (
    CREDITS_PER_JOB,
    downloads_per_job,
    fleet_env,
    fleet_manifest,
    start,
)

#: A worker's ``--until`` here only ends a wait that never comes (a hang): the fixed code
#: finishes long before it, the broken one stops there with work left.
GUARD = timedelta(seconds=90)


def guarded_worker(tmp_path: Path, name: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``runner worker --idle-exit`` that gives up at ``GUARD`` from now."""
    until = (datetime.now(UTC) + GUARD).isoformat()
    state = str(tmp_path / name)
    return start("worker", "--idle-exit", "--until", until, "--state", state, env=env)


def enqueue(manifest: Path, tmp_path: Path, env: dict[str, str]) -> None:
    proc = start("enqueue", str(manifest), "--state", str(tmp_path / "q"), env=env)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, out + err


def statuses(url: str) -> dict[str, JobStatus]:
    with open_ledger(url) as led:
        return {r.key: r.status for r in led.jobs()}


def test_a_held_submit_frees_its_account_slot(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """`limits.concurrency: 1`, and every new submit's answer is lost with one attempt
    allowed: each job is held as `submitting`. A held job lets its slot in the database go
    (nothing of this process waits on it any more), so the worker sends every job once
    instead of waiting on the first one's slot for the rest of the night; the next worker
    re-sends each with its same key and finishes them: one generation per job."""
    server = mock_server_factory(
        MockOptions(latency_min=0.1, latency_max=0.2, drop_after_accept_rate=1.0, seed=60)
    )
    m = fleet_manifest(tmp_path / "m.yaml", server, jobs=3, concurrency=1, rps=50)
    m.write_text(m.read_text().replace("max_attempts: 10", "max_attempts: 1"))
    env = fleet_env(pg_url)
    enqueue(m, tmp_path, env)
    first = guarded_worker(tmp_path, "w1", env)
    out, err = first.communicate(timeout=HANG_GUARD + GUARD.total_seconds())
    assert server.state.stats()["generations_created"] == 3, out + err
    assert set(statuses(pg_url).values()) == {JobStatus.SUBMITTING}
    with open_ledger(pg_url) as led:
        limits = led.shared_limits()
        assert limits is not None
        assert limits.slots_taken("|".join(account_of(_provider(m, env)))) == 0

    server.state.options = replace(server.state.options, drop_after_accept_rate=0.0)
    second = guarded_worker(tmp_path, "w2", env)
    out, err = second.communicate(timeout=HANG_GUARD + GUARD.total_seconds())
    assert second.returncode == 0, out + err
    stats = server.state.stats()
    assert (stats["generations_created"], stats["idempotent_replays"]) == (3, 3)
    assert set(statuses(pg_url).values()) == {JobStatus.DOWNLOADED}


def _provider(manifest: Path, env: dict[str, str]) -> Provider:
    return make_provider(provider_settings(load_manifest(manifest)), environ=env)


def test_a_dead_workers_submit_is_taken_over_and_resent_with_its_key(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """A worker died mid-submit (simulated as it would have left things: the first job
    claimed with a lease, committed `submitting`, holding the account's one slot, its POST
    at the provider). Another worker, blocked on that slot, takes the job over once the
    lease has run out and re-sends it with the SAME idempotency key: the provider replays
    it, the mock created exactly one generation per job, and every job is downloaded once."""
    server = mock_server_factory(MockOptions(latency_min=0.1, latency_max=0.2, seed=61))
    m = fleet_manifest(tmp_path / "m.yaml", server, jobs=3, concurrency=1, rps=50)
    env = fleet_env(pg_url, RUNNER_LEASE="8")
    enqueue(m, tmp_path, env)
    provider = _provider(m, env)
    with open_ledger(pg_url) as led:
        [job] = led.claim(str(m), "deadhost/1/abcdef", lease=8, limit=1)
        job = led.transition(job.key, JobStatus.SUBMITTING, detail="submitting")
        limits = led.shared_limits()
        assert limits is not None
        assert limits.take_slot("|".join(account_of(provider)), job.key, 1)
    send = functools.partial(provider.submit, job.request, idempotency_key=job.idempotency_key)

    async def submit_and_close() -> None:
        try:
            await send()
        finally:
            await provider.aclose()

    anyio.run(submit_and_close)
    assert server.state.stats()["generations_created"] == 1

    proc = guarded_worker(tmp_path, "w", env)
    out, err = proc.communicate(timeout=HANG_GUARD + GUARD.total_seconds())
    assert proc.returncode == 0, out + err
    stats = server.state.stats()
    assert (stats["generations_created"], stats["idempotent_replays"]) == (3, 1)
    assert stats["idempotency_conflicts"] == 0
    assert stats["max_in_flight"] <= 1
    assert set(statuses(pg_url).values()) == {JobStatus.DOWNLOADED}
    assert set(downloads_per_job(pg_url).values()) == {1}
    with open_ledger(pg_url) as led:
        again = led.get(job.key)
        assert again is not None and again.idempotency_key == job.idempotency_key
        notes = [e.detail or "" for e in led.events(job.key)]
    assert any("taken over by" in n and "deadhost/1/abcdef" in n for n in notes)


SOUL_MANIFEST = """\
version: 1
provider: {{base_url: "{base}"}}
limits: {{concurrency: 3, requests_per_second: 50, max_attempts: 2,
          poll_initial: 0.1, poll_max: 0.3}}
budget:
  max_credits: {cap}
  prices: [{{match: {{}}, credits_per_second: 2}}]
souls:
  ava:
    name: brand_influencer_v1
    images: [https://cdn.example.com/ava/01.jpg, https://cdn.example.com/ava/02.jpg]
defaults: {{type: text-to-video, duration: 2}}
campaigns:
  - name: ava
    soul: ava
    prompt: "Ava, shot {{n}}"
    matrix: {{n: [0, 1, 2, 3, 4, 5]}}
"""


def test_a_job_held_before_its_submit_gives_its_credits_back(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """Every answer to the soul's training is lost for a whole pass: the jobs the worker
    reserved under the shared `max_credits` wait for the soul, are held as `pending` (nothing
    of them was sent) and give their reservation back. So the cap is all there for the next
    worker, which finds the soul and submits exactly as many jobs as fit — not none, as it
    would if the held jobs' credits were still counted."""
    server = mock_server_factory(
        MockOptions(latency_min=0.1, latency_max=0.2, soul_training_seconds=0,
                    drop_soul_answer_rate=1.0, drop_soul_replays=True, seed=62)
    )  # fmt: skip
    cap = 3 * CREDITS_PER_JOB + 2  # room for 3 jobs of 6
    m = tmp_path / "m.yaml"
    m.write_text(SOUL_MANIFEST.format(base=server.seed_base_url.rstrip("/"), cap=cap))
    env = fleet_env(pg_url)
    enqueue(m, tmp_path, env)
    first = guarded_worker(tmp_path, "w1", env)
    out, err = first.communicate(timeout=HANG_GUARD + GUARD.total_seconds())
    assert server.state.stats()["generations_created"] == 0, out + err
    assert set(statuses(pg_url).values()) == {JobStatus.PENDING}
    with open_ledger(pg_url) as led:
        limits = led.shared_limits()
        assert limits is not None
        [rec] = led.recorded_manifests()
        assert limits.reserved_credits(rec.scope) == 0

    server.state.options = replace(server.state.options, drop_soul_answer_rate=0.0)
    second = guarded_worker(tmp_path, "w2", env)
    out, err = second.communicate(timeout=HANG_GUARD + GUARD.total_seconds())
    assert server.state.stats()["generations_created"] == 3, out + err
    assert sorted(statuses(pg_url).values()).count(JobStatus.DOWNLOADED) == 3


def test_a_total_cap_holds_across_workers(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str
) -> None:
    """Three workers on one enqueued manifest with `budget.max_total_credits` and 2 jobs of
    it charged before: together they bring the manifest's charged credits to no more than the
    cap (the mock's count of generations says so) — each worker alone would have sent as
    much as the cap leaves — and exactly as many jobs as fit."""
    server = mock_server_factory(MockOptions(latency_min=0.1, latency_max=0.2, seed=63))
    cap = 7 * CREDITS_PER_JOB + 2  # room for 7 jobs, not 8: 2 charged before, 5 more
    m = fleet_manifest(tmp_path / "m.yaml", server, jobs=20, concurrency=6, max_credits=cap)
    m.write_text(m.read_text().replace("max_credits:", "max_total_credits:"))
    env = fleet_env(pg_url)
    enqueue(m, tmp_path, env)
    with open_ledger(pg_url) as led:
        for row in led.jobs()[:2]:
            led.transition(row.key, JobStatus.SUBMITTING, detail="sent by an earlier run")
            led.transition(row.key, JobStatus.FAILED, detail="a generation that expired",
                           generation_id=f"g-{row.key}", error="expired")  # fmt: skip
    procs = [guarded_worker(tmp_path, f"w{i}", env) for i in range(3)]
    for proc in procs:
        proc.communicate(timeout=HANG_GUARD + GUARD.total_seconds())
    created = server.state.stats()["generations_created"]
    assert (created + 2) * CREDITS_PER_JOB <= cap
    assert created == 5


def test_waiting_on_a_full_account_reads_no_pending_jobs(
    tmp_path: Path, mock_server_factory: Factory, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account's one slot is held by a generation another process left (its lease runs
    out 2 s in): the run waits on the account, looking every ~0.1 s for work to take over,
    then takes that generation over and finishes it. Looking reads only the keys of jobs
    nobody holds: the run reads its pass's rows (the pending ones) a fixed number of times,
    however long it waited, never once per look."""
    server = mock_server_factory(MockOptions(latency_min=0.1, latency_max=0.2, seed=64))
    m = fleet_manifest(tmp_path / "m.yaml", server, jobs=30, concurrency=1, rps=50)
    env = fleet_env(pg_url, RUNNER_LEASE="0.4")
    app.enqueue([m], tmp_path / "q", ledger=pg_url)
    provider = _provider(m, env)
    with open_ledger(pg_url) as led:
        [job] = led.claim(str(m), "otherhost/1/abcdef", lease=2, limit=1)
        led.transition(job.key, JobStatus.SUBMITTING)
        limits = led.shared_limits()
        assert limits is not None
        assert limits.take_slot("|".join(account_of(provider)), job.key, 1)

    async def submit() -> str:
        try:
            return await provider.submit(job.request, idempotency_key=job.idempotency_key)
        finally:
            await provider.aclose()

    with open_ledger(pg_url) as led:
        led.transition(job.key, JobStatus.QUEUED, generation_id=anyio.run(submit))

    from runner.ledger.postgres import PostgresLedger  # psycopg: there with pg_url

    reads: list[int] = []
    jobs = PostgresLedger.jobs

    def counted(self: Ledger, *args: Any, **kwargs: Any) -> list[JobRow]:
        rows = jobs(self, *args, **kwargs)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(PostgresLedger, "jobs", counted)
    until = datetime.now(UTC) + timedelta(seconds=3)
    env_ = app.Environment(environ=env)
    app.run(m, tmp_path / "r", app.RunOptions(until=until), env_, ledger=pg_url)
    with open_ledger(pg_url) as led:
        done = led.get(job.key)
    assert done is not None and done.status is JobStatus.DOWNLOADED
    assert sum(n >= 20 for n in reads) <= 4, reads

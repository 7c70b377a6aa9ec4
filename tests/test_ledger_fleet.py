"""What the processes of a fleet share through a ledger beyond the job rows (SPEC §8): which
jobs may be taken over (both implementations), and on PostgreSQL leases in the server's
time, whatever the hosts' clocks say, and an account's Retry-After pause."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from runner.engine.shared import SharedThrottle
from runner.ledger import JobStatus, open_ledger
from tests.test_ledger import BACKENDS, MANIFEST, Backend, HandClock, make_job

S = JobStatus


@pytest.fixture(params=BACKENDS, ids=lambda backend: backend.name)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger of each implementation."""
    backend: Backend = request.param
    return backend.fresh_url(request, tmp_path)


def test_unclaimed_names_only_free_jobs_in_the_statuses_asked(ledger_url: str) -> None:
    """``unclaimed``: the keys of the manifest's jobs in the given statuses that nobody holds
    or whose lease has run out (what a waiting process may take over) — a live holder's job,
    another status or another manifest's job is not named."""
    clock = HandClock()
    jobs = [make_job(index=i, n=i) for i in range(4)]
    other = make_job(index=0, n=99, manifest="/work/other.yaml")
    with open_ledger(ledger_url, clock=clock) as led:
        led.record_plan(MANIFEST, jobs)
        led.record_plan(other.manifest, [other])
        for job in jobs[:3]:
            led.transition(job.key, S.SUBMITTING)
        led.transition(other.key, S.SUBMITTING)
        led.transition(jobs[1].key, S.QUEUED, generation_id="g1")
        led.claim(MANIFEST, "alive", lease=60, keys=[jobs[0].key])
        led.claim(MANIFEST, "dying", lease=5, keys=[jobs[2].key])
        in_flight = [S.SUBMITTING, S.QUEUED]
        assert led.unclaimed(MANIFEST, in_flight) == [jobs[1].key]
        assert led.unclaimed(MANIFEST, [S.PENDING]) == [jobs[3].key]
        clock.now += timedelta(seconds=5)  # the dying holder's lease has run out
        assert led.unclaimed(MANIFEST, in_flight) == [jobs[2].key, jobs[1].key]


def skewed(hours: float) -> Callable[[], datetime]:
    """A host clock ``hours`` off the true time (and the server's)."""
    return lambda: datetime.now(UTC) + timedelta(hours=hours)


def test_leases_are_kept_in_the_servers_time_whatever_the_hosts_clocks(pg_url: str) -> None:
    """Two hosts whose clocks are four hours apart share one ledger. A 60 s lease one of them
    takes holds against the other, whose clock says it ran out hours ago — the job is neither
    claimed nor found unclaimed there, and it holds no slot for a pending job there either —
    and the lease runs out 60 s after the server's now, not the host's."""
    job, other = make_job(index=0, n=0), make_job(index=1, n=1)
    with (
        open_ledger(pg_url, clock=skewed(-2)) as behind,
        open_ledger(pg_url, clock=skewed(+2)) as ahead,
    ):
        behind.record_plan(MANIFEST, [job, other])
        assert [r.key for r in behind.claim(MANIFEST, "behind", lease=60, limit=1)] == [job.key]
        claim = behind.claim_of(job.key)
        assert claim is not None
        until = datetime.fromisoformat(claim.lease_until)
        off = until - datetime.now(UTC) - timedelta(seconds=60)
        assert abs(off) < timedelta(minutes=5)  # the server's time, not two hours off

        assert [r.key for r in ahead.claim(MANIFEST, "ahead", lease=60)] == [other.key]
        assert ahead.unclaimed(MANIFEST, [S.PENDING]) == []
        ahead.release("ahead", [other.key])
        assert ahead.unclaimed(MANIFEST, [S.PENDING]) == [other.key]
        claim = behind.claim_of(job.key)
        assert claim is not None and claim.holder == "behind"

        # The other way round: the host ahead's lease holds against the host behind.
        behind.release("behind", [job.key])
        assert [r.key for r in ahead.claim(MANIFEST, "ahead", lease=60)] == [job.key, other.key]
        assert behind.claim(MANIFEST, "behind", lease=60) == []
        assert ahead.renew("ahead", [job.key], lease=60) == {job.key}

        # A pending job's account slot goes only when its holder's lease has run out.
        limits = ahead.shared_limits()
        assert limits is not None
        assert limits.take_slot("acct", job.key, 1)
    with open_ledger(pg_url, clock=skewed(+3)) as later:
        limits = later.shared_limits()
        assert limits is not None
        assert not limits.take_slot("acct", other.key, 1)  # job's slot stands: its lease holds


def server_time(url: str) -> float:
    """The database server's clock now (epoch seconds)."""
    import psycopg  # only with a cluster (pg_url): the tests without one run without it

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


def test_a_retry_after_pauses_every_process_on_the_account(pg_url: str) -> None:
    """Host A is told Retry-After: 4 s while host B's next call sleeps to its turn on the
    same account: neither that call nor B's next goes before the pause has run out in the
    server's time, though B never heard the Retry-After itself."""
    with open_ledger(pg_url) as a_led, open_ledger(pg_url) as b_led:
        a_limits, b_limits = a_led.shared_limits(), b_led.shared_limits()
        assert a_limits is not None and b_limits is not None
        # Calls 2.5 s apart: B's second call is asleep to its turn when A's pause comes,
        # unless this test's own task is held up for over 2.4 s (at 2/s the margin was
        # 0.6 s, which a loaded machine can eat); the pause outlasts that turn, so without
        # the shared pause B's second call would go before it ends.
        a = SharedThrottle(0.5, limits=a_limits, account="acct")
        b = SharedThrottle(0.5, limits=b_limits, account="acct")
        sent: list[float] = []
        paused_at: list[float] = []

        async def b_calls() -> None:
            for _ in range(3):  # the first at once, the next ones 2.5 s apart
                await b.wait_turn()
                sent.append(server_time(pg_url))

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(b_calls)
                while not sent:
                    await anyio.sleep(0.01)
                paused_at.append(server_time(pg_url))
                a.pause(4.0)  # B's second call is asleep to its turn by now

        anyio.run(main)
    assert len(sent) == 3
    assert all(t >= paused_at[0] + 4.0 for t in sent[1:]), (sent, paused_at)

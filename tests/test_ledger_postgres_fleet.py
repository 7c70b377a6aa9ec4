"""What the processes of a fleet share through a PostgreSQL ledger beyond the job rows
(SPEC §8): leases in the server's time, whatever the hosts' clocks say."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

from runner.ledger import JobStatus, open_ledger
from tests.test_ledger import MANIFEST, make_job

S = JobStatus


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

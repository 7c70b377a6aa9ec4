"""The jobs this process works on: claimed in the ledger, their lease renewed on the run's
clock (SPEC §8; the rules are ``runner.ledger.claims``).

The executor claims a job just before it works on it and releases it when its task ends, so
several processes on one PostgreSQL ledger each take the jobs nobody else holds. A process
that dies stops renewing; once its lease has run out, any other process takes its jobs over
where the ledger says they are. On SQLite (one executor, by the lock) every claim succeeds:
the executor is the same code whatever the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import anyio

from runner.engine.clock import SYSTEM_CLOCK, Clock
from runner.errors import LedgerError
from runner.ledger import JobRow, Ledger
from runner.ledger.claims import new_holder

log = logging.getLogger(__name__)

#: Seconds a claim lasts unless renewed: a dead process's jobs wait this long at most.
DEFAULT_LEASE = 60.0
#: The lease is renewed this many times per lease period, so a late renewal or two (a
#: loaded machine, a slow database) never lets it run out under a live holder.
RENEWALS_PER_LEASE = 4
#: At most this long between looks at jobs other processes hold (a cheap read).
MAX_RECHECK = 2.0


class Claims:
    """What one process holds. Shared by the executors of a run; :meth:`keep` renews."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        lease: float = DEFAULT_LEASE,
        holder: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ledger = ledger
        self.lease = lease
        self.holder = holder or new_holder()
        self.clock = clock
        self.held: set[str] = set()
        self.lost: set[str] = set()  # leases that ran out and were taken over while held

    @property
    def recheck(self) -> float:
        """How often to look again for jobs other processes hold (seconds)."""
        return min(self.lease / RENEWALS_PER_LEASE, MAX_RECHECK)

    def take(self, rows: Iterable[JobRow]) -> list[JobRow]:
        """Claim those of ``rows`` nobody holds; return them as the ledger has them now."""
        by_manifest: dict[str, list[str]] = {}
        for row in rows:
            by_manifest.setdefault(row.manifest, []).append(row.key)
        got: list[JobRow] = []
        for manifest, keys in by_manifest.items():
            got += self.ledger.claim(manifest, self.holder, lease=self.lease, keys=keys)
        self.held.update(r.key for r in got)
        return got

    def release(self, keys: Sequence[str]) -> None:
        """Let others have these jobs."""
        mine = [k for k in keys if k in self.held]
        if mine:
            self.held.difference_update(mine)
            self.ledger.release(self.holder, mine)

    async def keep(self) -> None:
        """Renew every held lease, ``RENEWALS_PER_LEASE`` times a lease, until cancelled;
        then release what is still held."""
        try:
            while True:
                await self.clock.sleep(self.lease / RENEWALS_PER_LEASE)
                try:
                    self.renew()
                except LedgerError as err:  # a database hiccup: the next renewal tries again
                    log.warning("could not renew leases (next try in a moment): %s", err)
        finally:
            with anyio.CancelScope(shield=True):
                self.release(sorted(self.held))

    def renew(self) -> None:
        """Extend every held lease once."""
        if not self.held:
            return
        kept = self.ledger.renew(self.holder, set(self.held), lease=self.lease)
        lost = self.held - kept
        if lost:
            # Only a process stalled for a whole lease gets here; the job's new holder goes
            # on from the ledger (a resend keeps its idempotency key, a download is verified).
            log.warning("lease lost on %d jobs (taken over): %s", len(lost), ", ".join(lost))
            self.lost |= lost
            self.held -= lost

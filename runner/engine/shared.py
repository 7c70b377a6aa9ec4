"""Account limits held in the database, for processes sharing a PostgreSQL ledger (SPEC §8).

The in-process ``Throttle``, ``AdaptiveSlots`` and ``Budget`` keep one process within the
account's limits; where several processes on several hosts share an account, these variants
ask the ledger (``SharedLimits``) first, so the limits hold summed over every host:

- ``SharedThrottle``: each call takes the account's next turn from the database (spaced
  ``SHARED_RATE_SAFETY / rps`` apart in the server's time, after the account's pause: a
  Retry-After any process received holds them all);
- ``AccountGate``: a generation takes one of the account's slots before it is sent and
  frees it once the provider is done with it;
- ``SharedBudget``: a run cap's and a total cap's credits are reserved in the database by
  every process that shares the caps (the workers of one enqueued manifest).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.engine.budget import Budget, Priced
from runner.engine.clock import SYSTEM_CLOCK, Clock
from runner.engine.throttle import MAX_PAUSE, Throttle
from runner.errors import BudgetExceededError
from runner.ledger import JobStatus
from runner.ledger.base import SharedLimits

#: Calls of several hosts are spaced wider than one process's (``throttle.RATE_SAFETY``): the
#: time from a turn to its arrival at the provider varies more across processes, and a call
#: that arrives late must not bring the next ``rps`` into one 1-second window with it.
SHARED_RATE_SAFETY = 1.25
#: Seconds a call may start after its turn before it takes a new one (half the slack that
#: ``SHARED_RATE_SAFETY`` leaves in a 1-second window), and how many times it may.
MAX_LATENESS = (SHARED_RATE_SAFETY - 1) / 2
MAX_LATE_TURNS = 3
#: Seconds before its turn a call looks whether another process paused the account (a call
#: whose turn comes sooner than that goes as it is, like one already on its way).
PAUSE_LOOKAHEAD = 0.05

#: A job let go in these statuses has a generation at the provider (left in flight for
#: `collect`, or for the next process): its slot stays until someone polls it to the end. A
#: job let go in ``submitting`` — its submit held (throttled past the ceiling, or every answer
#: lost), or its task stopped — frees its slot: no process of ours is driving it, and a slot
#: kept for it would be kept until a later run re-sends it, so that with ``concurrency: 1``
#: every other job would wait on it all night. Money is unaffected (a ``submitting`` job's
#: credits stay counted as charged, and its re-send carries the same idempotency key). The
#: cost: if a lost answer hid an accepted generation, the provider runs it beside ours until
#: it ends, one more than our count; the provider's own limit then answers a submit with a
#: throttle (429, or the platform's concurrency-limit 400), which costs no attempt and no
#: credit. A process that DIES mid-submit lets nothing go: that job keeps its slot until
#: another process takes it over (its lease run out) and re-sends it.
AT_PROVIDER = (JobStatus.QUEUED, JobStatus.RUNNING)


class SharedThrottle(Throttle):
    """A ``Throttle`` whose turns and pauses (Retry-After) come from the database, shared by
    every process on the account."""

    def __init__(
        self,
        requests_per_second: float,
        *,
        limits: SharedLimits,
        account: str,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(requests_per_second, clock=clock)
        self.interval = SHARED_RATE_SAFETY / requests_per_second
        self.limits = limits
        self.account = account

    def pause(self, seconds: float) -> None:
        """Hold every call for ``seconds``: this process's, and (through the database) every
        other process's on the account."""
        super().pause(seconds)
        self.limits.pause(self.account, min(seconds, MAX_PAUSE))

    async def wait_turn(self) -> None:
        """Return when this caller may send one request."""
        late = 0
        while True:
            while (left := self.paused_for) > 0:
                await self.clock.sleep(left)
            delay = self.limits.rate_turn(self.account, self.interval)  # after any pause
            due = self.clock.now() + delay
            if delay > PAUSE_LOOKAHEAD:
                # A pause another process records while this call sleeps to its turn holds it
                # (and this process's other calls) too. It is read a little before the turn,
                # so that the read never makes the call late.
                await self.clock.sleep(delay - PAUSE_LOOKAHEAD)
                shared = self.limits.paused_for(self.account)
                if shared > 0 and shared > due - self.clock.now():  # it outlasts the turn
                    Throttle.pause(self, shared)
                    continue
            await self.clock.sleep(max(0.0, due - self.clock.now()))
            if self.paused_for > 0:
                continue
            # Woken well after its turn (a busy host), a call could arrive together with the
            # next ones: it takes a new turn instead (a few times at most, so it always goes).
            if self.clock.now() - due > MAX_LATENESS and late < MAX_LATE_TURNS:
                late += 1
                continue
            return


class AccountGate:
    """The account's concurrency slots, counted in the database across processes."""

    def __init__(
        self, limits: SharedLimits, account: str, limit: int, *, recheck: float, clock: Clock
    ) -> None:
        self.limits = limits
        self.account = account
        self.limit = max(1, limit)
        self.recheck = recheck
        self.clock = clock

    def enter(self, key: str) -> bool:
        """Give job ``key`` one of the account's slots, if one is free (else ``False``: look
        again after ``recheck`` seconds)."""
        return self.limits.take_slot(self.account, key, self.limit)

    def adopt(self, key: str) -> None:
        """Count job ``key``, found already at the provider, whatever the count."""
        self.limits.take_slot(self.account, key, self.limit, force=True)

    def leave(self, key: str, status: JobStatus) -> None:
        """Free job ``key``'s slot as its task lets it go in ``status``, unless its
        generation is still at the provider (see ``AT_PROVIDER``)."""
        if status not in AT_PROVIDER:
            self.limits.free_slot(key)


@dataclass
class SharedBudget(Budget):
    """A ``Budget`` whose caps are shared, through the database, by every process that
    reserves under ``scope`` (the workers of one enqueued manifest): the run cap's credits
    are reserved under ``scope``, the total cap's under ``scope|total``. That one starts at
    what the manifest had charged when its first process reserved, and every process adds
    what it sends and takes off what the provider did not charge, so credits charged before
    and by every host since count once each, whichever host looks."""

    limits: SharedLimits | None = None
    scope: str = ""

    @property
    def total_scope(self) -> str:
        return f"{self.scope}|total"

    def reserve(self, job: Priced) -> None:
        """Reserve ``job``'s credits here and in the shared scopes, or raise
        ``BudgetExceededError`` with the numbers (and reserve nothing)."""
        caps = self._shared_caps()
        if self.limits is None or not caps or not self.needs(job):
            super().reserve(job)
            return
        run_cap, total_cap = self.run_cap, self.total_cap
        self.run_cap = self.total_cap = None  # the shared caps stand for this process's
        try:
            super().reserve(job)
        finally:
            self.run_cap, self.total_cap = run_cap, total_cap
        taken: list[str] = []
        for scope, cap, start, what in caps:
            if self.limits.reserve_credits(scope, job.credits, cap, start=start) is None:
                for done in taken:  # nothing reserved: a refusal leaves every scope as it was
                    self.limits.refund_credits(done, job.credits)
                super().refund(job)
                raise BudgetExceededError(
                    f"budget: job {job.key} ({job.credits:g} credits) would bring {what} "
                    f"over its cap of {cap:g} credits"
                )
            taken.append(scope)

    def _shared_caps(self) -> list[tuple[str, float, float, str]]:
        """(scope, cap, what it starts at, what it counts) of each cap set."""
        caps = []
        if self.total_cap is not None:
            what = "the manifest's total charged credits (every host's, orphaned jobs included)"
            caps.append((self.total_scope, self.total_cap, self.charged_before, what))
        if self.run_cap is not None:
            what = "what every process sharing this cap submitted"
            caps.append((self.scope, self.run_cap, 0.0, what))
        return caps

    def refund(self, job: Priced) -> None:
        """Give ``job``'s credits back, in the shared scopes too: the total's whoever
        reserved them (it counts every charged credit), the run cap's if this pass did."""
        if self.limits is not None:
            if self.total_cap is not None:
                self.limits.refund_credits(self.total_scope, job.credits)
            if self.run_cap is not None and job.key in self._reserved:
                self.limits.refund_credits(self.scope, job.credits)
        super().refund(job)

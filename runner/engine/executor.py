"""The executor: turns pending jobs into verified videos, resumably. Scheduling only.

One task per job walks it through the stages (``stages.JobStages``: submit → poll →
download); here they are started in order as concurrency slots free up, until the budget,
``--until`` or ``--max-failures`` says stop, and stopped on Ctrl-C (a first one lets calls
under way finish and commit; a second one drops their shields and stops at once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from operator import attrgetter

import anyio

from runner.engine.budget import submission_order
from runner.engine.claims import Claims
from runner.engine.earlier import EarlierWork
from runner.engine.progress import Outcome
from runner.engine.shared import AccountGate
from runner.engine.stages import AT_PROVIDER, Gone
from runner.errors import (
    BudgetExceededError,
    FatalError,
)
from runner.ledger import JobBrief, JobRow, JobStatus

PROGRESS_INTERVAL = 0.5
AFTER_SUBMIT = (*AT_PROVIDER, JobStatus.COMPLETED)  # generations under way or done
ENDED = frozenset({JobStatus.DOWNLOADED, JobStatus.FAILED, JobStatus.ORPHANED})
Driven = JobRow | JobBrief  # a job a run is given: whole, or the brief of one that had ended
# What a process takes over from a dead one while it waits for the account's slots: its
# generations (they hold slots until polled to the end) and its interrupted submits (one may
# hold a slot too; it is re-sent with its idempotency key).
TAKE_OVER = (JobStatus.SUBMITTING, *AFTER_SUBMIT)
_status = attrgetter("status")


class Executor(EarlierWork):
    """Runs jobs from the ledger against one provider (see ``JobStages`` for what it takes)."""

    _scope: anyio.CancelScope | None = None  # the run's task group, while it runs
    # Set by the run (``runner.app.execute``): jobs are worked on only once claimed.
    claims: Claims | None = None
    gate: AccountGate | None = None  # the account's slots across processes (PostgreSQL)
    _driven: set[str]  # keys this run has claimed (and so worked on)
    _todo: dict[str, JobRow]  # the jobs of the current pass, by key

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """First Ctrl-C: submit nothing more; calls under way finish and commit."""
        self.outcome.interrupted = True
        self.progress.stopped = "interrupted"
        if self._scope is not None:
            self._scope.cancel()

    def abort(self) -> None:
        """Second Ctrl-C: stop at once, calls under way included. The ledger stays consistent
        because every status change is a transaction, committed whole or not at all."""
        self.stop()
        self.calls.shields.drop()

    # --- the run --------------------------------------------------------------------------

    async def run(self, rows: Sequence[Driven], finishing: Collection[str] = ()) -> Outcome:
        """Drive ``rows`` (in manifest order) as far as the settings allow (a job that had
        ended may come as its brief: it is counted, never driven); the ``finishing``
        ones, which the manifest no longer produces, are cancelled while queued where the
        provider can, else polled and downloaded, then orphaned. With ``claims``, only jobs
        this process claims; jobs another live process holds are waited for, and taken over
        when its lease runs out."""
        self.finishing = set(finishing)
        self.progress.start(rows)
        self._driven = set()
        self._todo = {}
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                ticker = anyio.CancelScope()
                tg.start_soon(self._tick, ticker)
                todo = [r for r in rows if isinstance(r, JobRow)]  # briefs: ended
                while todo:
                    async with anyio.create_task_group() as jobs:
                        # --submit-only leaves what is already under way to `collect`.
                        if self.settings.download:
                            for row in self._take(r for r in todo if r.status in AFTER_SUBMIT):
                                self._start(row, jobs, holds_slot=False)
                        if self.settings.submit:
                            self._todo = {r.key: r for r in todo}
                            await self._dispatch(submission_order(todo), jobs)
                    todo = await self._held_elsewhere(rows)
                ticker.cancel()
        finally:
            self._scope = None
            self._report()
        self._count_unfinished(rows)
        self.outcome.credits_this_run = self.budget.this_run
        self.outcome.credits_total = self.budget.total
        return self.outcome

    async def _dispatch(self, waiting: list[JobRow], jobs: anyio.abc.TaskGroup) -> None:
        """Start submissions in order, as slots free up, until the budget, ``--until`` or
        ``--max-failures`` says stop."""
        for row in waiting:
            await self.slots.acquire()
            stop = self._stop_reason()
            if stop is not None:
                await self.slots.release(succeeded=False)
                self.outcome.stopped = stop
                self.progress.stopped = stop.split(": ")[0]
                return
            taken = self._take([row])
            if not taken or taken[0].status not in (JobStatus.PENDING, JobStatus.SUBMITTING):
                # Another process holds it, or moved it on before it died: it is under way.
                await self.slots.release(succeeded=False)
                for found in taken:
                    self._start(found, jobs, holds_slot=False)
                continue
            row = taken[0]
            try:
                self.budget.reserve(row)
            except BudgetExceededError as err:
                await self.slots.release(succeeded=False)
                self._release(row)
                self.outcome.budget_stop = str(err)
                self.progress.stopped = "budget reached"
                return
            while self.gate is not None and not self.gate.enter(row.key):
                # The account is full. Generations a dead process left at the provider hold
                # slots until someone polls them: take those over while waiting.
                self._take_over(jobs)
                await self.clock.sleep(self.gate.recheck)
                stop = self._stop_reason()
                if stop is not None:  # --until / --max-failures end the wait too
                    # What this pass reserved goes back; an interrupted submit reserved
                    # nothing (it may be charged already) and keeps its count.
                    self.budget.unreserve(row)
                    await self.slots.release(succeeded=False)
                    self._release(row)
                    self.outcome.stopped = stop
                    self.progress.stopped = stop.split(": ")[0]
                    return
            jobs.start_soon(self._drive, row, True)

    # --- claims ---------------------------------------------------------------------------

    def _take(self, rows: Iterable[JobRow]) -> list[JobRow]:
        """The jobs among ``rows`` this process may work on now, as the ledger has them."""
        if self.claims is None:
            return list(rows)
        taken = self.claims.take(rows)
        self._driven.update(r.key for r in taken)
        return taken

    def _release(self, row: JobRow) -> None:
        if self.claims is not None:
            self.claims.release([row.key])

    def _start(self, row: JobRow, jobs: anyio.abc.TaskGroup, *, holds_slot: bool) -> None:
        """Start a job found past its submit: polled (holding a slot) or downloaded; or one
        found mid-submit (its holder dead, or it was held): re-sent with its key, in the slot
        its dead holder took (its generation may be at the provider) or a free one."""
        if row.status is JobStatus.SUBMITTING and self.settings.submit and self._may_resend(row):
            if not holds_slot:
                self.slots.adopt()
            jobs.start_soon(self._drive, row, True)
        elif row.status in AT_PROVIDER and self.settings.download:
            self._adopt(row)
            if not holds_slot:
                self.slots.adopt()
            if self.gate is not None:
                self.gate.adopt(row.key)
            jobs.start_soon(self._drive, row, True)
        elif row.status is JobStatus.COMPLETED and self.settings.download:
            jobs.start_soon(self._drive, row, False)
        else:  # pending again (or --submit-only): let it go; a later pass may send it
            self._driven.discard(row.key)
            self._release(row)

    def _may_resend(self, row: JobRow) -> bool:
        """Whether an interrupted submit found free may be re-sent now: it keeps the slot its
        dead holder took, else it needs a free one (a held submit let its slot go)."""
        return self.gate is None or self.gate.enter(row.key)

    def _take_over(self, jobs: anyio.abc.TaskGroup) -> None:
        """Start the jobs of this pass (not yet worked on here) that nobody holds any more
        and that are mid-submit or past it. Called every few seconds while the account is
        full, so it reads only the keys of such jobs (few: in a healthy fleet their holders
        are alive and none is found), never the pass's pending jobs."""
        if not self._todo:
            return
        manifest = next(iter(self._todo.values())).manifest
        free = self.ledger.unclaimed(manifest, TAKE_OVER)
        found = [self._todo[k] for k in free if k in self._todo and k not in self._driven]
        for row in self._take(found):
            self._start(row, jobs, holds_slot=False)

    async def _held_elsewhere(self, rows: Sequence[Driven]) -> list[JobRow]:
        """Jobs of ``rows`` this run still has work for that another process held (after a
        wait, as they are now); empty when there are none or the run is stopping."""
        if self.claims is None or self.outcome.fatal is not None or self.outcome.interrupted:
            return []
        # A job that had ended when the run began stays out of it; the others are read
        # briefly first, and in full only when this run still wants them.
        left = [r.key for r in rows if r.key not in self._driven and r.status not in ENDED]
        briefs = self.ledger.briefs(keys=left) if left else iter(())
        again = [b.key for b in briefs if self._wants(b.status)]
        wanted = [r for r in self.ledger.jobs(keys=again) if self._wants(r.status)] if again else []
        if wanted:
            await self.clock.sleep(self.claims.recheck)
        return wanted

    def _wants(self, status: JobStatus) -> bool:
        """Whether this run would still do something with a job in ``status``."""
        if status in (JobStatus.PENDING, JobStatus.SUBMITTING):
            stopped = self.outcome.stopped or self.outcome.budget_stop
            return self.settings.submit and not stopped
        return status in AFTER_SUBMIT and self.settings.download

    def _stop_reason(self) -> str | None:
        """Why no new submission may start now, if one may not."""
        until = self.settings.until
        if until is not None and datetime.now(UTC) >= until:
            return f"--until {until.astimezone():%Y-%m-%d %H:%M} reached: nothing more submitted"
        limit = self.settings.max_failures
        if limit is not None and self.outcome.failed >= limit:
            return (
                f"--max-failures {limit} reached ({self.outcome.failed} jobs failed in this run):"
                " nothing more submitted"
            )
        return None

    async def _drive(self, row: JobRow, holds_slot: bool) -> None:
        """Walk one job as far as it can go in this run, then let other processes have it."""
        try:
            await self._walk(row, holds_slot)
        finally:
            with anyio.CancelScope(shield=True):
                self._release(row)

    async def _walk(self, row: JobRow, holds_slot: bool) -> None:
        try:
            try:
                if row.status is JobStatus.PENDING and row.prior_generation_id:
                    row = await self._take_up_earlier(row)
                if row.status in (JobStatus.PENDING, JobStatus.SUBMITTING):
                    row = await self._submit(row)
                    if not self.settings.download:
                        return
                if row.key in self.finishing and row.status is JobStatus.QUEUED:
                    row = await self._cancel_queued(row)
                if row.status in AT_PROVIDER:
                    row = await self._poll(row)
            finally:
                if holds_slot:
                    succeeded = row.status is JobStatus.COMPLETED
                    with anyio.CancelScope(shield=True):
                        await self.slots.release(succeeded=succeeded)
                        if self.gate is not None:
                            self.gate.leave(row.key, (self.ledger.get(row.key) or row).status)
            if row.status is JobStatus.COMPLETED and self.settings.download:
                await self._download(row)
        except Gone:
            pass
        except FatalError as err:
            if self.outcome.fatal is None:
                self.outcome.fatal = err
            if self._scope is not None:
                self._scope.cancel()
        finally:
            if row.key in self.finishing:
                self._orphan_when_done(row.key)

    # --- reporting ------------------------------------------------------------------------

    async def _tick(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                self._report()
                await self.clock.sleep(PROGRESS_INTERVAL)

    def _report(self) -> None:
        self.progress.running = self.slots.in_flight
        self.progress.concurrency_limit = self.slots.limit
        self.progress.paused_for = self.calls.throttle.paused_for
        self.progress.now = self.clock.now()
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _count_unfinished(self, rows: Sequence[Driven]) -> None:
        """The run's jobs by status as it stops. Given only briefs (jobs that had ended: a
        no-op run), nothing was driven and they are counted as given; otherwise the ledger
        is read (one read of the briefs, in its order)."""
        done: set[JobStatus] = set(ENDED)
        if not self.settings.download:
            done |= {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED}
        if JobRow in set(map(type, rows)):
            rows = list(self.ledger.briefs(keys=[r.key for r in rows]))
        statuses = Counter(map(_status, rows))  # in the order the jobs first have them
        self.outcome.unfinished = sum(n for s, n in statuses.items() if s not in done)
        self.outcome.statuses = {s.value: n for s, n in statuses.items()}

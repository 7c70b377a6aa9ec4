"""The executor: turns pending jobs into verified videos, resumably. Scheduling only.

One task per job walks it through the stages (``stages.JobStages``: submit → poll →
download); here they are started in order as concurrency slots free up, until the budget,
``--until`` or ``--max-failures`` says stop, and stopped on Ctrl-C (a first one lets calls
under way finish and commit; a second one drops their shields and stops at once).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import anyio

from runner.engine.budget import submission_order
from runner.engine.earlier import EarlierWork
from runner.engine.progress import Outcome
from runner.engine.stages import AT_PROVIDER, Gone
from runner.errors import (
    BudgetExceededError,
    FatalError,
)
from runner.ledger import JobRow, JobStatus

PROGRESS_INTERVAL = 0.5


class Executor(EarlierWork):
    """Runs jobs from the ledger against one provider (see ``JobStages`` for what it takes)."""

    _scope: anyio.CancelScope | None = None  # the run's task group, while it runs

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """First Ctrl-C: submit nothing more; calls under way finish and commit."""
        self.outcome.interrupted = True
        self.progress.stopped = "interrupted"
        if self._scope is not None:
            self._scope.cancel()

    def abort(self) -> None:
        """Second Ctrl-C: stop at once, calls under way included. The ledger stays consistent
        because every status change is its own transaction."""
        self.stop()
        self.calls.shields.drop()

    # --- the run --------------------------------------------------------------------------

    async def run(self, rows: Sequence[JobRow], finishing: Collection[str] = ()) -> Outcome:
        """Drive ``rows`` (in manifest order) as far as the settings allow; the ``finishing``
        ones, which the manifest no longer produces, are cancelled while queued where the
        provider can, else polled and downloaded, then orphaned."""
        self.finishing = set(finishing)
        self.progress.start(rows)
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                ticker = anyio.CancelScope()
                tg.start_soon(self._tick, ticker)
                async with anyio.create_task_group() as jobs:
                    # --submit-only leaves what is already under way to `collect`.
                    for row in rows if self.settings.download else ():
                        if row.status in AT_PROVIDER:
                            self._adopt(row)
                            self.slots.adopt()
                            jobs.start_soon(self._drive, row, True)
                        elif row.status is JobStatus.COMPLETED:
                            jobs.start_soon(self._drive, row, False)
                    if self.settings.submit:
                        await self._dispatch(submission_order(rows), jobs)
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
            try:
                self.budget.reserve(row)
            except BudgetExceededError as err:
                await self.slots.release(succeeded=False)
                self.outcome.budget_stop = str(err)
                self.progress.stopped = "budget reached"
                return
            jobs.start_soon(self._drive, row, True)

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
        """Walk one job as far as it can go in this run."""
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

    def _count_unfinished(self, rows: Sequence[JobRow]) -> None:
        keys = [r.key for r in rows]
        done: set[JobStatus] = {JobStatus.DOWNLOADED, JobStatus.FAILED, JobStatus.ORPHANED}
        if not self.settings.download:
            done |= {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED}
        self.outcome.unfinished = sum(r.status not in done for r in self.ledger.jobs(keys=keys))

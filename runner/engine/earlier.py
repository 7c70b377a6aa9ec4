"""Generations paid for earlier, which a run must not pay for again nor lose (SPEC v2 §4):
the failed attempt of a retried job (asked for first: it may have completed after all), and
jobs the manifest no longer produces that were already sent (``finishing``: cancelled while
queued where the provider can, else downloaded; orphaned once at their end)."""

from __future__ import annotations

import functools
import logging

from runner.engine.polling import iso
from runner.engine.stages import Gone, JobStages
from runner.errors import DeadlineError, ExhaustedError, PermanentError
from runner.ledger import JobRow, JobStatus, Ledger
from runner.providers import canceller

log = logging.getLogger(__name__)


def record_cancelled(ledger: Ledger, key: str, generation_id: str) -> str:
    """Record that the provider cancelled a queued generation (refunded): the job is failed
    with the reason ``cancelled``. Returns the event's detail. ``runner cancel`` and a run's
    finishing jobs both record it so."""
    detail = f"generation {generation_id} cancelled while queued (refunded)"
    ledger.transition(key, JobStatus.FAILED, detail=detail, error="cancelled")
    return detail


class EarlierWork(JobStages):
    """The stages, plus what a run does with generations paid for before it."""

    finishing: set[str]  # keys the manifest no longer produces, set by ``Executor.run``

    async def _take_up_earlier(self, row: JobRow) -> JobRow:
        """A retried job first asks for its failed attempt's generation: if it completed after
        all (or is still under way) it is taken up, and nothing new is paid for. Any other
        answer, or none, and the retry submits anew (its credits stay reserved either way:
        the generation taken up was paid for too)."""
        generation_id = row.prior_generation_id or ""
        try:
            status = await self.calls(functools.partial(self.provider.status, generation_id))
        except (ExhaustedError, DeadlineError, PermanentError) as err:
            self.ledger.note(row.key, f"earlier generation {generation_id} not found: {err}")
            return row
        taken = f"earlier generation {generation_id} is {status.state}: taken up, not paid again"
        if status.state == "completed" and status.video_url:
            return self._move(
                row,
                JobStatus.COMPLETED,
                taken,
                generation_id=generation_id,
                video_url=status.video_url,
                expires_at=iso(status.expires_at),
            )
        if status.state in ("queued", "running"):
            self._adopt(row)  # its age and deadline count from the earlier attempt's accept
            return self._move(row, JobStatus.QUEUED, taken, generation_id=generation_id)
        self.ledger.note(row.key, f"earlier generation {generation_id} is {status.raw}")
        return row

    async def _cancel_queued(self, row: JobRow) -> JobRow:
        """A job the manifest no longer produces, still queued: cancelled (refunded) where the
        provider can cancel; else, or once it has started, it goes on to be downloaded."""
        able = canceller(self.provider)
        if able is None:
            return row
        generation_id = row.generation_id or ""
        try:
            cancelled = await self.calls(functools.partial(able.cancel, generation_id))
        except (ExhaustedError, DeadlineError, PermanentError) as err:
            self.ledger.note(row.key, f"could not cancel generation {generation_id}: {err}")
            return row
        if not cancelled:
            return row
        self.budget.refund(row)  # not counted as this run's failure: nobody wants it any more
        detail = record_cancelled(self.ledger, row.key, generation_id)
        log.info("%s %s: %s", row.campaign, row.key, detail)
        raise Gone()

    def _orphan_when_done(self, key: str) -> None:
        """A finishing job that reached the end of its way (downloaded, failed or cancelled)
        becomes orphaned, its file kept; one still under way stays for the next run."""
        row = self.ledger.get(key)
        if row is not None and row.status in (JobStatus.DOWNLOADED, JobStatus.FAILED):
            kept = f"; its video is kept at {row.location}" if row.location else ""
            self._move(row, JobStatus.ORPHANED, f"no longer produced by its manifest{kept}")

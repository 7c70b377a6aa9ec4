"""The money rules: what counts as charged, what a run may still submit, and in which order.

SPEC v2 §5: ``budget.max_credits`` / ``--max-credits`` cap the estimated credits submitted in
one run; ``budget.max_total_credits`` caps every credit the manifest ever had charged
(submitted and not refunded, orphaned jobs included: that money was spent). Whichever is
reached first stops new submissions. The executor and ``run --dry-run`` both walk
:func:`submission_order` and ask the same :class:`Budget`, so a dry run cannot drift from a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from runner.errors import BudgetExceededError
from runner.ledger import JobStatus

#: Statuses whose estimated credits are spent: sent, and not refunded (the provider does not
#: charge failed generations; pending jobs are not sent yet).
CHARGED = frozenset(
    {
        JobStatus.SUBMITTING,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.COMPLETED,
        JobStatus.DOWNLOADED,
    }
)


class Priced(Protocol):
    """What the budget needs to know of a job."""

    @property
    def key(self) -> str: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def credits(self) -> float: ...


class Charged(Priced, Protocol):
    """A ledger row: an orphaned job was charged if it had been accepted and did not fail."""

    @property
    def generation_id(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


P = TypeVar("P", bound=Priced)


def expired(error: str | None) -> bool:
    """Whether a failure is a result that expired before it was downloaded: the provider
    charged for it (it was completed), unlike a failed or NSFW generation."""
    return (error or "").startswith("expired")


def charged(row: Charged) -> bool:
    """Whether a job's estimated credits are spent (see ``CHARGED``); an orphaned job still
    cost what it cost when it was sent, and a result that expired unread was paid for."""
    if row.status in CHARGED:
        return True
    if row.status is JobStatus.FAILED:
        return row.generation_id is not None and expired(_reason(row.error))
    if row.status is JobStatus.ORPHANED and row.generation_id is not None:
        return not row.error or expired(_reason(row.error))
    return False


def _reason(error: str | None) -> str:
    """The provider's words in a failure the executor recorded as ``generation <words>``."""
    return (error or "").removeprefix("generation ")


def charged_credits(rows: Iterable[Charged]) -> float:
    """The estimated credits of every charged job among ``rows``."""
    # (``status in CHARGED`` first: ``charged``'s own first test, without a call per job)
    return sum((r.credits for r in rows if r.status in CHARGED or charged(r)), 0.0)


def submission_order(rows: Sequence[P], limit: int | None = None) -> list[P]:
    """The jobs a run sends, in the order it sends them: jobs interrupted mid-submit first
    (they may already be paid for, so neither ``--limit`` nor the budget holds them back),
    then pending jobs in manifest order, at most ``limit`` of them."""
    resend = [r for r in rows if r.status is JobStatus.SUBMITTING]
    fresh = [r for r in rows if r.status is JobStatus.PENDING]
    return resend + (fresh if limit is None else fresh[:limit])


@dataclass
class Budget:
    """The two caps, and what this run has reserved against them."""

    run_cap: float | None = None  # budget.max_credits / --max-credits
    total_cap: float | None = None  # budget.max_total_credits
    charged_before: float = 0.0  # the manifest's charged credits when the run started
    this_run: float = 0.0  # reserved by this run and not refunded
    _reserved: set[str] = field(default_factory=set)

    @property
    def total(self) -> float:
        """Every charged credit of the manifest, this run's included."""
        return self.charged_before + self.this_run

    def needs(self, job: Priced) -> bool:
        """Whether sending ``job`` spends new credits (a re-send was paid for already)."""
        return job.status is JobStatus.PENDING

    def reserve(self, job: Priced) -> None:
        """Count ``job``'s credits as spent, or raise ``BudgetExceededError`` with the numbers."""
        if not self.needs(job):
            return
        c = job.credits
        if self.run_cap is not None and self.this_run + c > self.run_cap:
            raise BudgetExceededError(
                f"budget: job {job.key} ({c:g} credits) would bring this run to "
                f"{self.this_run + c:g} credits, over the run's cap of {self.run_cap:g} "
                f"({self.this_run:g} submitted in this run)"
            )
        if self.total_cap is not None and self.total + c > self.total_cap:
            raise BudgetExceededError(
                f"budget: job {job.key} ({c:g} credits) would bring the manifest's total to "
                f"{self.total + c:g} credits, over max_total_credits {self.total_cap:g} "
                f"({self.total:g} charged so far, orphaned jobs included)"
            )
        self.this_run += c
        self._reserved.add(job.key)

    def refund(self, job: Priced) -> None:
        """The provider did not charge ``job`` after all (refused, or its generation failed)."""
        if job.key in self._reserved:
            self._reserved.discard(job.key)
            self.this_run -= job.credits
        else:
            self.charged_before -= job.credits

    def unreserve(self, job: Priced) -> None:
        """Give back what this run reserved for ``job``, which it did not send after all
        (held before its submit: it stays ``pending`` and is reserved again when it is sent);
        nothing when this run reserved nothing for it."""
        if job.key in self._reserved:
            self.refund(job)

    def select(self, rows: Sequence[P], limit: int | None = None) -> tuple[list[P], str | None]:
        """What a run would send, as :meth:`reserve` decides it, and why it would stop (the
        dry run). Reserves as it goes, like the run."""
        sent: list[P] = []
        for row in submission_order(rows, limit):
            try:
                self.reserve(row)
            except BudgetExceededError as err:
                return sent, str(err)
            sent.append(row)
        return sent, None

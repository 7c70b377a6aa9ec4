"""What a run reports while it goes (``Progress``) and how it ended (``Outcome``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter

from runner.errors import FatalError
from runner.ledger import JobBrief, JobRow, JobStatus

_status = attrgetter("status")


@dataclass
class Progress:
    """Live counters, handed to the progress callback a few times a second. Times are on the
    engine's clock: ``started`` when the run began, ``now`` at the last report. Counts are of
    the jobs the run was given (``total``), so done/total reads like a bar; rates and the ETA
    count only what this run finished (not ``done_before``)."""

    total: int = 0
    submitted: int = 0
    running: int = 0  # jobs holding a concurrency slot (waiting for a soul, sent, at work)
    downloaded: int = 0
    failed: int = 0
    done_before: int = 0  # downloaded or failed before this run began
    throttled: int = 0
    retries: int = 0
    concurrency_limit: int = 0
    paused_for: float = 0.0  # seconds left of a Retry-After pause
    souls: dict[str, int] = field(default_factory=dict)  # soul → jobs waiting for its model
    stopped: str | None = None  # why nothing more is submitted (budget, Ctrl-C, a deadline)
    started: float = 0.0
    now: float = 0.0

    def start(self, rows: Iterable[JobRow | JobBrief]) -> None:
        """Count the jobs a run is given (several executors may share one Progress)."""
        statuses = Counter(map(_status, rows))
        downloaded, failed = statuses[JobStatus.DOWNLOADED], statuses[JobStatus.FAILED]
        self.total += statuses.total()
        self.downloaded += downloaded
        self.failed += failed
        self.done_before += downloaded + failed

    @contextmanager
    def waiting_for(self, soul: str) -> Iterator[None]:
        """A job waits for its soul's model (trained, or being trained) inside this block."""
        self.souls[soul] = self.souls.get(soul, 0) + 1
        try:
            yield
        finally:
            self.souls[soul] -= 1
            if not self.souls[soul]:
                del self.souls[soul]

    @property
    def done(self) -> int:
        """Jobs finished: downloaded or failed, in this run or before it."""
        return self.downloaded + self.failed

    @property
    def elapsed(self) -> float:
        return max(0.0, self.now - self.started)

    @property
    def at_provider(self) -> int:
        """Jobs holding a slot that are not just waiting for a soul's model."""
        return max(0, self.running - sum(self.souls.values()))

    @property
    def rate(self) -> float:
        """Jobs this run finished (downloaded or failed) per second since it began."""
        elapsed = self.elapsed
        return (self.done - self.done_before) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every job is finished at this run's rate, if there is a rate."""
        left = self.total - self.done
        return left / self.rate if self.rate > 0 and left > 0 else None


@dataclass
class Outcome:
    """How a run ended. The CLI turns it into a summary and an exit code."""

    submitted: int = 0
    downloaded: int = 0
    failed: int = 0
    unfinished: int = 0  # still in flight or not downloaded when the run stopped
    # the run's jobs by status when it stopped (statuses in manifest order), read once with
    # ``unfinished``: the run's counts without reading them again
    statuses: dict[str, int] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # key → why it was left for next run
    budget_stop: str | None = None
    stopped: str | None = None  # why submissions stopped early (--until, --max-failures)
    interrupted: bool = False
    fatal: FatalError | None = None
    credits_this_run: float = 0.0  # estimated credits this run submitted (not refunded)
    credits_total: float = 0.0  # estimated credits the manifest has had charged, in all
    videos: list[str] = field(default_factory=list)  # locations of the videos this run saved

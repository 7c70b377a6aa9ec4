"""What a run reports while it goes (``Progress``) and how it ended (``Outcome``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.errors import FatalError


@dataclass
class Progress:
    """Live counters, handed to the progress callback a few times a second. Times are on the
    engine's clock: ``started`` when the run began, ``now`` at the last report."""

    total: int = 0
    submitted: int = 0
    running: int = 0  # generations in flight at the provider
    downloaded: int = 0
    failed: int = 0
    throttled: int = 0
    retries: int = 0
    concurrency_limit: int = 0
    paused_for: float = 0.0
    started: float = 0.0
    now: float = 0.0

    @property
    def rate(self) -> float:
        """Finished jobs (downloaded or failed) per second since the start."""
        elapsed = self.now - self.started
        return (self.downloaded + self.failed) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every job is finished at the current rate, if there is a rate."""
        left = self.total - self.downloaded - self.failed
        return left / self.rate if self.rate > 0 and left > 0 else None


@dataclass
class Outcome:
    """How a run ended. The CLI turns it into a summary and an exit code."""

    submitted: int = 0
    downloaded: int = 0
    failed: int = 0
    unfinished: int = 0  # still in flight or not downloaded when the run stopped
    held: dict[str, str] = field(default_factory=dict)  # key → why it was left for next run
    budget_stop: str | None = None
    stopped: str | None = None  # why submissions stopped early (--until, --max-failures)
    interrupted: bool = False
    fatal: FatalError | None = None
    credits_this_run: float = 0.0  # estimated credits this run submitted (not refunded)
    credits_total: float = 0.0  # estimated credits the manifest has had charged, in all
    videos: list[str] = field(default_factory=list)  # locations of the videos this run saved

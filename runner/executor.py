"""The executor: turns pending jobs into verified video files, resumably.

One task per job walks it through submit → poll → download. Around them:
- ``AdaptiveSlots`` bounds generations in flight (falls on throttling, climbs on success);
- ``Throttle`` spaces every API call (requests_per_second) and holds them all during a
  Retry-After pause;
- a semaphore bounds downloads.

Crash safety (SPEC §4): a job is committed as ``submitting`` with its idempotency key before the
POST and as ``queued`` with the generation id right after it; on resume, ``submitting`` jobs are
re-sent with the same key and everything later is only polled or downloaded. Each provider call
and the ledger write that records its answer run in a shielded scope, so a first Ctrl-C lets
them finish and commit; a second one drops the shields and stops at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from runner.downloads import DownloadPolicy, download, safe_destination
from runner.errors import (
    DownloadError,
    ExpiredURLError,
    FatalError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
    UnsafeURLError,
)
from runner.ledger import JobRow, JobStatus, Ledger
from runner.providers import GenerationStatus, Provider
from runner.throttle import AdaptiveSlots, Backoff, Throttle, retry_wait

log = logging.getLogger(__name__)

POLL_GROWTH = 1.5  # each quiet poll waits this much longer, up to poll_max
MIN_POLL_STEP = 0.01  # seconds: the smallest poll interval after the first
PROGRESS_INTERVAL = 0.5
AT_PROVIDER = (JobStatus.QUEUED, JobStatus.RUNNING)  # generations the provider is working on


@dataclass(frozen=True)
class ExecutorSettings:
    """Everything the executor needs to know about limits; built from the manifest + flags."""

    concurrency: int = 4
    requests_per_second: float = 2.0
    download_concurrency: int = 4
    max_attempts: int = 5
    poll_initial: float = 5.0
    poll_max: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    submit: bool = True  # False for `collect`
    download: bool = True  # False for `run --submit-only`
    max_credits: float | None = None
    credits_spent: float = 0.0  # estimated credits of jobs already submitted, not refunded


@dataclass
class Progress:
    """Live counters, handed to the progress callback a few times a second."""

    total: int = 0
    submitted: int = 0
    running: int = 0  # generations in flight at the provider
    downloaded: int = 0
    failed: int = 0
    throttled: int = 0
    retries: int = 0
    concurrency_limit: int = 0
    paused_for: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Finished jobs (downloaded or failed) per second since the start."""
        elapsed = time.monotonic() - self.started
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
    interrupted: bool = False
    fatal: FatalError | None = None


def budget_message(key: str, credits: float, spent: float, cap: float) -> str:
    """Why the budget stopped submissions, with the numbers."""
    return (
        f"budget: submitting job {key} ({credits:g} credits) would bring estimated credits "
        f"to {spent + credits:g}, over the cap of {cap:g} ({spent:g} already submitted)"
    )


class _Gone(Exception):
    """This job's task has nothing more to do in this run."""


class Executor:
    """Runs jobs from the ledger against one provider. Create it inside the running event loop
    and pass the same ``Throttle`` to anything else that calls the provider in this run."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        provider: Provider,
        download_client: httpx.AsyncClient,
        output_dir: Path,
        settings: ExecutorSettings,
        throttle: Throttle | None = None,
        souls: Callable[[str], Awaitable[str]] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.download_client = download_client
        self.output_dir = output_dir
        self.settings = settings
        self.policy = DownloadPolicy.for_base_url(provider.base_url)
        self.souls = souls
        self.on_progress = on_progress
        self.rng = rng or random.Random()
        self.progress = Progress()
        self.outcome = Outcome()
        self._spent = settings.credits_spent
        # Created here, inside the running loop, as aiolimiter wants.
        self.throttle = throttle or Throttle(settings.requests_per_second)
        self.slots = AdaptiveSlots(settings.concurrency)
        self.downloads = anyio.Semaphore(max(1, settings.download_concurrency))
        self._shields: set[anyio.CancelScope] = set()
        self._scope: anyio.CancelScope | None = None

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """First Ctrl-C: submit nothing more; calls under way finish and commit."""
        self.outcome.interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    def abort(self) -> None:
        """Second Ctrl-C: stop at once, calls under way included. The ledger stays consistent
        because every status change is its own transaction."""
        self.stop()
        for scope in list(self._shields):
            scope.shield = False
            scope.cancel()

    @contextmanager
    def _critical(self) -> Iterator[None]:
        """A provider call and the ledger write that records it: not cut by a first Ctrl-C."""
        with anyio.CancelScope(shield=True) as scope:
            self._shields.add(scope)
            try:
                yield
            finally:
                self._shields.discard(scope)

    # --- the run --------------------------------------------------------------------------

    async def run(self, rows: Sequence[JobRow]) -> Outcome:
        """Drive ``rows`` (in manifest order) as far as the settings allow."""
        self.progress.total = len(rows)
        self.progress.downloaded = sum(r.status is JobStatus.DOWNLOADED for r in rows)
        waiting = [r for r in rows if r.status in (JobStatus.PENDING, JobStatus.SUBMITTING)]
        # Jobs interrupted mid-submit go first: they may already be paid for.
        waiting.sort(key=lambda r: r.status is not JobStatus.SUBMITTING)
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                ticker = anyio.CancelScope()
                tg.start_soon(self._tick, ticker)
                async with anyio.create_task_group() as jobs:
                    # --submit-only leaves what is already under way to `collect`.
                    for row in rows if self.settings.download else ():
                        if row.status in AT_PROVIDER:
                            self.slots.adopt()
                            jobs.start_soon(self._drive, row, True)
                        elif row.status is JobStatus.COMPLETED:
                            jobs.start_soon(self._drive, row, False)
                    if self.settings.submit:
                        await self._dispatch(waiting, jobs)
                ticker.cancel()
        finally:
            self._scope = None
            self._report()
        self._count_unfinished(rows)
        return self.outcome

    async def _dispatch(self, waiting: list[JobRow], jobs: anyio.abc.TaskGroup) -> None:
        """Start submissions in order, as slots free up, until the budget says stop."""
        cap = self.settings.max_credits
        for row in waiting:
            await self.slots.acquire()
            fresh = row.status is JobStatus.PENDING
            if fresh and cap is not None and self._spent + row.credits > cap:
                await self.slots.release(succeeded=False)
                self.outcome.budget_stop = budget_message(row.key, row.credits, self._spent, cap)
                return
            if fresh:
                self._spent += row.credits
            jobs.start_soon(self._drive, row, True)

    async def _drive(self, row: JobRow, holds_slot: bool) -> None:
        """Walk one job as far as it can go in this run."""
        try:
            try:
                if row.status in (JobStatus.PENDING, JobStatus.SUBMITTING):
                    row = await self._submit(row)
                    if not self.settings.download:
                        return
                if row.status in AT_PROVIDER:
                    row = await self._poll(row)
            finally:
                if holds_slot:
                    succeeded = row.status is JobStatus.COMPLETED
                    with anyio.CancelScope(shield=True):
                        await self.slots.release(succeeded=succeeded)
            if row.status is JobStatus.COMPLETED and self.settings.download:
                await self._download(row)
        except _Gone:
            pass
        except FatalError as err:
            if self.outcome.fatal is None:
                self.outcome.fatal = err
            if self._scope is not None:
                self._scope.cancel()

    # --- stages ---------------------------------------------------------------------------

    def _move(self, row: JobRow, to: JobStatus, detail: str | None = None, **cols: Any) -> JobRow:
        new = self.ledger.transition(row.key, to, detail=detail, **cols)
        log.info("%s %s: %s -> %s: %s", row.campaign, row.key, row.status, to, detail or "")
        if to is JobStatus.FAILED:
            self.progress.failed += 1
            self.outcome.failed += 1
        elif to is JobStatus.DOWNLOADED:
            self.progress.downloaded += 1
            self.outcome.downloaded += 1
        return new

    def _hold(self, row: JobRow, reason: str) -> _Gone:
        """Leave the job as it is for the next run, saying why (ledger and summary)."""
        self.ledger.note(row.key, f"{reason}; the next run tries again")
        self.outcome.held[row.key] = reason
        return _Gone()

    def _fail(self, row: JobRow, reason: str, **cols: Any) -> _Gone:
        """Record the job as failed; the caller raises what this returns to end its task."""
        if row.status is not JobStatus.FAILED:
            self._move(row, JobStatus.FAILED, reason, error=reason, **cols)
        return _Gone()

    async def _throttled(self, err: ThrottledError, attempt: int) -> None:
        """Backpressure, not failure: lower the concurrency ceiling and wait. A Retry-After
        pauses every call to the provider; without one, only this task backs off."""
        self.progress.throttled += 1
        self.slots.throttled()
        wait = retry_wait(err.retry_after, attempt, self.settings.backoff)
        log.info("throttled (%s); waiting %.1fs", err.message, wait)
        if err.retry_after is not None:
            self.throttle.pause(wait)
        else:
            await anyio.sleep(wait)

    def _obey_retry_after(self, err: TransientError) -> None:
        """A 503 (or any transient answer) with Retry-After holds every call, too."""
        if err.retry_after is not None:
            self.throttle.pause(err.retry_after)

    async def _submit(self, row: JobRow) -> JobRow:
        soul_model = None
        if row.soul:
            # Before `submitting`: a job waiting for its soul has not been sent anywhere.
            if self.souls is None:
                raise self._fail(row, f"soul {row.soul!r} is not available in this run")
            try:
                soul_model = await self.souls(row.soul)
            except PermanentError as err:
                self._spent -= row.credits
                raise self._fail(row, f"soul {row.soul!r}: {err.message}") from err
        key = row.idempotency_key
        if row.status is JobStatus.PENDING:
            row = self._move(row, JobStatus.SUBMITTING, f"submitting with idempotency key {key}")
        else:
            row = self._move(
                row, JobStatus.SUBMITTING, f"resending with the same idempotency key {key}"
            )
        throttles = 0
        while True:
            throttled: ThrottledError | None = None
            await self.throttle.wait_turn()
            with self._critical():
                try:
                    generation_id = await self.provider.submit(
                        row.request, idempotency_key=key, soul_model_id=soul_model
                    )
                except ThrottledError as err:
                    throttled = err
                except TransientError as err:
                    self._obey_retry_after(err)
                    row = self._transient(row, err)
                except PermanentError as err:
                    self._spent -= row.credits
                    raise self._fail(row, f"submit refused: {err.message}") from err
                else:
                    self.progress.submitted += 1
                    self.outcome.submitted += 1
                    return self._move(
                        row,
                        JobStatus.QUEUED,
                        f"accepted as generation {generation_id}",
                        generation_id=generation_id,
                        error=None,
                    )
            if throttled is not None:
                throttles += 1
                self.ledger.note(row.key, f"throttled: {throttled.message}")
                await self._throttled(throttled, throttles)
            else:
                await anyio.sleep(self.settings.backoff.delay(row.attempts, self.rng))

    def _transient(self, row: JobRow, err: TransientError) -> JobRow:
        """Count a transient submit failure against ``max_attempts`` (across runs).

        Out of attempts, the job fails, unless the last POST may have been accepted: then it
        stays ``submitting``, so the next run re-sends it with the same key and finds out,
        instead of a retry paying for a second generation.
        """
        attempts = row.attempts + 1
        self.progress.retries += 1
        if attempts >= self.settings.max_attempts:
            if isinstance(err, UnknownOutcomeError):
                self.ledger.transition(
                    row.key,
                    JobStatus.SUBMITTING,
                    detail=f"attempt {attempts}: {err.message}; the provider may have it, so "
                    "the next run re-sends it with the same key",
                    attempts=attempts,
                    error=err.message,
                )
                self.outcome.held[row.key] = f"submit answer lost: {err.message}"
                raise _Gone() from err
            self._spent -= row.credits
            raise self._fail(
                row,
                f"gave up after {attempts} attempts: {type(err).__name__}: {err.message}",
                attempts=attempts,
            )
        return self._move(
            row,
            row.status,
            f"attempt {attempts} failed ({err.message}); retrying with the same key",
            attempts=attempts,
            error=err.message,
        )

    async def _status(self, row: JobRow) -> GenerationStatus:
        """The generation's status. Throttles are waited out (uncounted); transient errors are
        retried up to ``max_attempts``, then the job is left as it is for the next run."""
        errors = throttles = 0
        while True:
            await self.throttle.wait_turn()
            try:
                with self._critical():
                    return await self.provider.status(row.generation_id or "")
            except ThrottledError as err:
                throttles += 1
                await self._throttled(err, throttles)
            except TransientError as err:
                self._obey_retry_after(err)
                errors += 1
                self.progress.retries += 1
                if errors >= self.settings.max_attempts:
                    raise self._hold(row, f"status unavailable: {err}") from err
                await anyio.sleep(self.settings.backoff.delay(errors, self.rng))

    async def _poll(self, row: JobRow) -> JobRow:
        """Poll until the generation is completed or failed. Returns the completed row."""
        delay = self.settings.poll_initial
        while True:
            await anyio.sleep(delay * self.rng.uniform(0.9, 1.1))
            # A zero poll_initial must still back off towards poll_max.
            delay = min(self.settings.poll_max, max(delay * POLL_GROWTH, MIN_POLL_STEP))
            try:
                status = await self._status(row)
            except PermanentError as err:
                raise self._fail(row, f"status refused: {err.message}") from err
            if status.state == "completed":
                return self._move(
                    row,
                    JobStatus.COMPLETED,
                    "generation completed",
                    video_url=status.video_url,
                    error=None,
                )
            if status.state == "failed":
                self._spent -= row.credits
                raise self._fail(row, f"generation {status.error or status.raw}")
            if status.state == "running" and row.status is not JobStatus.RUNNING:
                row = self._move(row, JobStatus.RUNNING, f"provider says {status.raw}")

    async def _download(self, row: JobRow) -> None:
        async with self.downloads:
            try:
                dest = safe_destination(self.output_dir, row.path)
            except UnsafeURLError as err:
                raise self._fail(row, str(err)) from err
            refreshed = False
            tries = 0
            while True:
                try:
                    with self._critical():
                        got = await download(
                            self.download_client,
                            row.video_url or "",
                            dest,
                            policy=self.policy,
                            resume_token=row.generation_id,
                        )
                        self._move(
                            row,
                            JobStatus.DOWNLOADED,
                            f"saved {got.bytes} bytes",
                            bytes=got.bytes,
                            sha256=got.sha256,
                            error=None,
                        )
                    return
                except ExpiredURLError as err:
                    if refreshed:
                        reason = f"video URL expired again after refresh: {err}"
                        raise self._fail(row, reason) from err
                    refreshed = True
                    row = await self._refresh_url(row)
                except UnsafeURLError as err:
                    raise self._fail(row, str(err)) from err
                except (TransientError, DownloadError, OSError) as err:
                    # The generation is paid for and done: never fail it for this. A local
                    # problem (disk full, a file where a folder should be) is said and kept.
                    tries += 1
                    self.progress.retries += 1
                    if isinstance(err, OSError) or tries >= self.settings.max_attempts:
                        raise self._hold(row, f"download failed: {err}") from err
                    await anyio.sleep(self.settings.backoff.delay(tries, self.rng))

    async def _refresh_url(self, row: JobRow) -> JobRow:
        try:
            status = await self._status(row)
        except PermanentError as err:
            raise self._fail(row, f"video URL expired and refresh failed: {err}") from err
        if status.state != "completed" or not status.video_url:
            raise self._fail(row, f"video URL expired; provider now says {status.raw}")
        return self._move(
            row, JobStatus.COMPLETED, "video URL refreshed", video_url=status.video_url
        )

    # --- reporting ------------------------------------------------------------------------

    async def _tick(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                self._report()
                await anyio.sleep(PROGRESS_INTERVAL)

    def _report(self) -> None:
        self.progress.running = self.slots.in_flight
        self.progress.concurrency_limit = self.slots.limit
        self.progress.paused_for = self.throttle.paused_for
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _count_unfinished(self, rows: Sequence[JobRow]) -> None:
        keys = [r.key for r in rows]
        done: set[JobStatus] = {JobStatus.DOWNLOADED, JobStatus.FAILED}
        if not self.settings.download:
            done |= {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED}
        self.outcome.unfinished = sum(r.status not in done for r in self.ledger.jobs(keys=keys))

"""The stages every job goes through: submit, poll, download — and the ledger moves that
record them. ``Executor`` (executor.py) schedules jobs through these; the rules they apply
live in ``calls`` (every provider call), ``polling`` (when to look again), ``budget`` (money)
and the output store (where a video goes).

Crash safety (SPEC §4): a job is committed as ``submitting`` with its idempotency key before the
POST and as ``queued`` with the generation id right after it; on resume, ``submitting`` jobs are
re-sent with the same key and everything later is only polled or downloaded. Each provider call
and the ledger write that records its answer run in a shield (``calls``), so a first Ctrl-C
lets them finish and commit.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx

from runner.engine.budget import Budget, expired
from runner.engine.calls import Calls
from runner.engine.clock import SYSTEM_CLOCK, Clock
from runner.engine.learning import GenerationTimes, completion_detail
from runner.engine.polling import age, deadline, expiry, iso
from runner.engine.progress import Outcome, Progress
from runner.engine.settings import EngineSettings
from runner.engine.throttle import AdaptiveSlots, PriorityGate, Throttle
from runner.engine.uploads import inside, is_local, public_url
from runner.engine.writes import GroupCommit
from runner.errors import (
    DeadlineError,
    DownloadError,
    ExhaustedError,
    ExpiredURLError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
    UnsafeURLError,
)
from runner.ledger import JobRow, JobStatus, Ledger
from runner.outputs import DownloadPolicy, OutputStore
from runner.providers import GenerationStatus, Provider

log = logging.getLogger(__name__)

AT_PROVIDER = (JobStatus.QUEUED, JobStatus.RUNNING)  # generations the provider is working on


class Gone(Exception):
    """This job's task has nothing more to do in this run."""


class JobStages:
    """One job's way through the provider and the output store, for one provider. Create it
    (as an ``Executor``) inside the running event loop; anything else that calls the
    provider in this run (soul training) uses ``self.calls``."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        provider: Provider,
        store: OutputStore,
        download_client: httpx.AsyncClient,
        settings: EngineSettings,
        budget: Budget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_progress: Callable[[Progress], None] | None = None,
        rng: random.Random | None = None,
        throttle: Throttle | None = None,
        slots: AdaptiveSlots | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.store = store
        self.download_client = download_client
        self.settings = settings
        self.budget = budget or Budget()
        self.clock = clock
        self.policy = DownloadPolicy.for_base_url(provider.base_url)
        self.souls: Callable[[str], Awaitable[str]] | None = None
        self.on_progress = on_progress
        self.rng = rng or random.Random()
        # Executors of manifests on one account share its throttle and slots (and a run's
        # executors one progress display).
        self.progress = progress or Progress(started=clock.now(), now=clock.now())
        self.outcome = Outcome()
        self.slots = slots or AdaptiveSlots(settings.concurrency)
        self.calls = Calls(
            throttle=throttle or Throttle(settings.requests_per_second, clock=clock),
            clock=clock,
            max_attempts=settings.max_attempts,
            backoff=settings.backoff,
            rng=self.rng,
            on_throttled=self._throttled,
            on_retry=self._retried,
        )
        self.downloads = PriorityGate(settings.download_concurrency)
        self._deadlines: dict[str, float | None] = {}  # key → when to stop waiting (clock)
        self._uploading: dict[str, anyio.Lock] = {}  # one upload per local file at a time
        self.files: Mapping[str, str] = {}  # local file → URL, as recorded (ledger.Resolved)
        self._submitted: dict[str, float] = {}  # key → when its accepted submit was sent
        self.times = GenerationTimes(ledger, clock)  # how long generations take: polls
        self.writes = GroupCommit(ledger)  # the hot status changes, committed per loop turn

    # --- ledger moves ---------------------------------------------------------------------

    def _move(self, row: JobRow, to: JobStatus, detail: str | None = None, **cols: Any) -> JobRow:
        """A status change in a transaction of its own (the rare ones)."""
        new = self.ledger.transition(row.key, to, detail=detail, **cols)
        return self._moved(row, new, to, detail)

    async def _commit(
        self, row: JobRow, to: JobStatus, detail: str | None = None, **cols: Any
    ) -> JobRow:
        """A status change committed with the others of this loop turn (``writes``); durable
        when this returns, like ``_move``."""
        new = await self.writes.transition(row.key, to, detail=detail, **cols)
        return self._moved(row, new, to, detail)

    def _moved(self, row: JobRow, new: JobRow, to: JobStatus, detail: str | None) -> JobRow:
        log.info("%s %s: %s -> %s: %s", row.campaign, row.key, row.status, to, detail or "")
        if to is JobStatus.FAILED:
            self.progress.failed += 1
            self.outcome.failed += 1
        elif to is JobStatus.DOWNLOADED:
            self.progress.downloaded += 1
            self.outcome.downloaded += 1
        return new

    def _hold(self, row: JobRow, reason: str) -> Gone:
        """Leave the job as it is for the next run, saying why (ledger and summary); one
        held before its submit (nothing of it sent) gives back the credits reserved for it."""
        if row.status is JobStatus.PENDING:
            self.budget.unreserve(row)
        self.ledger.note(row.key, f"{reason}; the next run tries again")
        self.outcome.held[row.key] = reason
        return Gone()

    def _fail(self, row: JobRow, reason: str, *, refund: bool = False, **cols: Any) -> Gone:
        """Record the job as failed (refunding its credits when the provider charged nothing);
        the caller raises what this returns to end its task."""
        if refund:
            self.budget.refund(row)
        if row.status is not JobStatus.FAILED:
            self._move(row, JobStatus.FAILED, reason, error=reason, **cols)
        return Gone()

    def _throttled(self, err: ThrottledError) -> None:
        """Backpressure, not failure: lower the concurrency ceiling (the calls policy waits)."""
        self.progress.throttled += 1
        self.slots.throttled()

    def _retried(self, err: TransientError) -> None:
        self.progress.retries += 1

    # --- stages ---------------------------------------------------------------------------

    async def _submit(self, row: JobRow) -> JobRow:
        soul_model = None
        if row.soul:
            # Before `submitting`: a job waiting for its soul has not been sent anywhere.
            if self.souls is None:
                raise self._fail(row, f"soul {row.soul!r} is not available in this run")
            try:
                with self.progress.waiting_for(row.soul):
                    soul_model = await self.souls(row.soul)
            except (ExhaustedError, DeadlineError) as err:
                # The soul's answers were lost or kept failing: nothing of this job was sent;
                # the next run recovers the soul (SPEC v2 §4) and sends the job then.
                raise self._hold(row, f"soul {row.soul!r}: {err.message}") from err
            except PermanentError as err:
                raise self._fail(row, f"soul {row.soul!r}: {err.message}", refund=True) from err
        request = await self._with_public_image(row)
        key = row.idempotency_key
        verb = "submitting with" if row.status is JobStatus.PENDING else "resending with the same"
        row = await self._commit(row, JobStatus.SUBMITTING, f"{verb} idempotency key {key}")

        def count(err: TransientError, attempts: int) -> None:
            nonlocal row
            if attempts < self.settings.max_attempts:
                detail = f"attempt {attempts} failed ({err.message}); retrying with the same key"
                row = self._move(row, row.status, detail, attempts=attempts, error=err.message)

        def note(err: ThrottledError) -> None:
            self.ledger.note(row.key, f"throttled: {err.message}")

        async def send() -> JobRow:
            self._submitted[row.key] = self.clock.now()  # polls count from the send, not the answer
            generation_id = await self.provider.submit(
                request, idempotency_key=key, soul_model_id=soul_model
            )
            self._deadlines[row.key] = deadline(self.settings.generation_timeout, None, self.clock)
            self.progress.submitted += 1
            self.outcome.submitted += 1
            return await self._commit(
                row,
                JobStatus.QUEUED,
                f"accepted as generation {generation_id}",
                generation_id=generation_id,
                error=None,
            )

        try:
            return await self.calls(send, used=row.attempts, count=count, throttled=note)
        except DeadlineError as err:
            # Nothing was accepted while it was throttled; the next run re-sends the same key.
            raise self._hold(row, f"submit {err.message}") from err
        except ExhaustedError as err:
            if isinstance(err.last, UnknownOutcomeError):
                # The last POST may have been accepted: keep `submitting`, so the next run
                # re-sends it with the same key and finds out, instead of a retry paying twice.
                self.ledger.transition(
                    row.key,
                    JobStatus.SUBMITTING,
                    detail=f"attempt {err.attempts}: {err.last.message}; the provider may have "
                    "it, so the next run re-sends it with the same key",
                    attempts=err.attempts,
                    error=err.last.message,
                )
                self.outcome.held[row.key] = f"submit answer lost: {err.last.message}"
                raise Gone() from err
            raise self._fail(row, err.message, refund=True, attempts=err.attempts) from err
        except PermanentError as err:
            raise self._fail(row, f"submit refused: {err.message}", refund=True) from err

    async def _with_public_image(self, row: JobRow) -> dict[str, Any]:
        """The request as sent: a local ``image_url`` (inside the manifest's folder) sent as
        the URL recorded for it (``files``), else uploaded first; the ledger keeps the request
        as planned."""
        image = row.request.get("image_url")
        if not isinstance(image, str) or not is_local(image):
            return row.request
        try:
            url = self.files.get(image) or await public_url(
                str(inside(image, Path(row.manifest).parent)),
                ledger=self.ledger,
                provider=self.provider,
                calls=self.calls,
                locks=self._uploading,
            )
        except (ExhaustedError, DeadlineError) as err:  # nothing of the job was sent
            raise self._hold(row, f"image_url upload: {err.message}") from err
        except PermanentError as err:
            if row.status is JobStatus.SUBMITTING:  # it may be paid for: never failed here
                raise self._hold(row, f"image_url: {err.message}") from err
            raise self._fail(row, f"image_url: {err.message}", refund=True) from err
        return {**row.request, "image_url": url}

    async def _status(self, row: JobRow) -> GenerationStatus:
        """The generation's status; after ``max_attempts`` transient errors in a row the job
        is left as it is for the next run (a paid generation is never failed for that).

        An answer that cannot be used (malformed, a 404 of a generation the provider
        accepted, a completed one without a video) may be a glitch of the provider's: it is
        retried like a transient error, never taken as the generation's failure.
        """
        generation_id = row.generation_id or ""

        async def ask() -> GenerationStatus:
            try:
                return await self.provider.status(generation_id)
            except PermanentError as err:
                message = f"unusable status answer: {err.message}"
                raise TransientError(message, status_code=err.status_code) from err

        try:
            return await self.calls(ask)
        except ExhaustedError as err:
            raise self._hold(row, f"status unavailable: {err.last}") from err
        except DeadlineError as err:
            raise self._hold(row, f"status {err.message}") from err

    async def _poll(self, row: JobRow) -> JobRow:
        """Poll until the generation is completed or failed. Returns the completed row.
        The polls go where the history says generations like it end (``learning``); the
        completed event records when it was last seen unfinished and when seen done."""
        submitted = self._submitted.get(row.key, self.clock.now())
        unfinished = 0.0  # seconds after the submit it was last seen unfinished

        async def check() -> JobRow | None:
            nonlocal row, unfinished
            status = await self._status(row)
            seen = self.clock.now() - submitted
            if status.state == "completed":
                self.times.observe(row.request, unfinished, seen)
                return await self._commit(
                    row,
                    JobStatus.COMPLETED,
                    completion_detail(unfinished, seen),
                    video_url=status.video_url,
                    expires_at=iso(status.expires_at),
                    error=None,
                )
            if status.state == "failed":
                # A result that expired before it was downloaded was paid for all the same.
                refund = not expired(status.error)
                raise self._fail(row, f"generation {status.error or status.raw}", refund=refund)
            if status.state == "running" and row.status is not JobStatus.RUNNING:
                row = await self._commit(row, JobStatus.RUNNING, f"provider says {status.raw}")
            unfinished = seen
            return None

        delays, sleep = self.times.polls(row.request, self.settings.poll, self.rng, submitted)
        try:
            return await self.settings.poll.until(
                check,
                clock=self.clock,
                rng=self.rng,
                deadline=self._deadlines.get(row.key),
                delays=delays,
                sleep=sleep,
            )
        except DeadlineError as err:
            reason = (
                f"generation {row.generation_id} not finished {self.settings.generation_timeout:g}s"
                " after its submit; left in flight for `runner collect`"
            )
            raise self._hold(row, reason) from err

    def _adopt(self, row: JobRow) -> None:
        """A generation found in flight: when it was accepted (the event that recorded its
        generation id), on this run's clock, and when to stop waiting (``generation_timeout``
        after that)."""
        accepted = [e.at for e in self.ledger.events(row.key) if e.to_status is JobStatus.QUEUED]
        since = accepted[-1] if accepted else None
        self._submitted[row.key] = self.clock.now() - age(since)
        self._deadlines[row.key] = deadline(self.settings.generation_timeout, since, self.clock)

    async def _download(self, row: JobRow) -> None:
        # The result that the provider drops soonest is downloaded first.
        async with self.downloads.slot(expiry(row.expires_at)):
            refreshed = False  # an output path that escapes fails in ``save``, before a fetch
            while True:
                try:
                    await self.calls(functools.partial(self._save, row), rate=False)
                    return
                except ExpiredURLError as err:
                    if refreshed:
                        reason = f"video URL expired again after refresh: {err}"
                        raise self._fail(row, reason) from err
                    refreshed = True
                    row = await self._refresh_url(row)
                except UnsafeURLError as err:
                    raise self._fail(row, str(err)) from err
                except ExhaustedError as err:
                    # The generation is paid for and done: never fail it for this.
                    raise self._hold(row, f"download failed: {err.last}") from err
                except OSError as err:
                    # A local problem (disk full, a file where a folder should be): said, kept.
                    raise self._hold(row, f"download failed: {err}") from err

    async def _save(self, row: JobRow) -> None:
        try:
            saved = await self.store.save(
                self.download_client,
                row.video_url or "",
                row.path,
                policy=self.policy,
                resume_token=row.generation_id,
            )
        except (ExpiredURLError, UnsafeURLError):
            raise
        except DownloadError as err:  # a body that failed its checks is worth another try
            raise TransientError(str(err)) from err
        await self._commit(
            row,
            JobStatus.DOWNLOADED,
            f"saved {saved.bytes} bytes",
            bytes=saved.bytes,
            sha256=saved.sha256,
            location=saved.location,
            error=None,
        )
        self.outcome.videos.append(saved.location)

    async def _refresh_url(self, row: JobRow) -> JobRow:
        status = await self._status(row)
        if status.state == "failed":  # e.g. the result expired: the provider's own words
            raise self._fail(row, f"video URL expired; provider says {status.error or status.raw}")
        if not status.video_url:
            # A completed generation that now reads as unfinished is a regression at the
            # provider, not a failure: it is paid for, so the next run asks again.
            raise self._hold(row, f"video URL expired; provider now says {status.raw}")
        return self._move(
            row,
            JobStatus.COMPLETED,
            "video URL refreshed",
            video_url=status.video_url,
            expires_at=iso(status.expires_at) or row.expires_at,
        )

"""The ledger interface: what the rest of the runner may ask of any ledger (SPEC §4).

SQLite (``runner.ledger.sqlite``) and PostgreSQL (``runner.ledger.postgres``) implement it.
Both take the same rules from ``runner.ledger.status``, build their rows with
``runner.ledger.rows`` and ``runner.ledger.plan``, and return the records of
``runner.ledger.models``; ``tests/test_ledger.py`` is the contract every one must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from runner.ledger.claims import Claim, ManifestRecord, Resolved
from runner.ledger.models import (
    EventRow,
    GenerationTime,
    JobBrief,
    JobRow,
    JobState,
    PlanDiff,
    ReportRow,
    SoulRow,
    Transition,
)
from runner.ledger.status import JobStatus

if TYPE_CHECKING:
    from runner.jobs import Job  # a type only: the ledger needs no manifest code

Clock = Callable[[], datetime]
StatusFilter = JobStatus | str | Iterable[JobStatus | str]


def utcnow() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


class SharedLimits(Protocol):
    """Per-account limits every process on a ledger shares (PostgreSQL; SPEC §8): see
    ``runner.ledger.postgres.limits``."""

    def declare_concurrency(self, account: str, manifest: str, concurrency: int) -> None:
        """Record ``manifest``'s ``limits.concurrency`` on ``account``."""
        ...

    def take_slot(self, account: str, key: str, limit: int, *, force: bool = False) -> bool:
        """Give job ``key`` one of ``account``'s slots if one is free (or it has one
        already): at most ``limit``, and at most the smallest concurrency declared by a
        manifest on the account with work left; ``force``: whatever the count."""
        ...

    def free_slot(self, key: str) -> None:
        """Job ``key``'s generation no longer counts against its account."""
        ...

    def rate_turn(self, account: str, interval: float) -> float:
        """Reserve ``account``'s next call turn (after its pause, if any); seconds from now
        until it."""
        ...

    def pause(self, account: str, seconds: float) -> None:
        """Hold every process's calls on ``account`` for ``seconds`` (a Retry-After)."""
        ...

    def paused_for(self, account: str) -> float:
        """Seconds left of ``account``'s pause (0 when none)."""
        ...

    def reserve_credits(
        self, scope: str, credits: float, cap: float, *, start: float = 0.0
    ) -> float | None:
        """Add ``credits`` to ``scope``'s reservations if within ``cap``: the new total, or
        ``None`` (nothing added); a scope's first use starts it at ``start``."""
        ...

    def refund_credits(self, scope: str, credits: float) -> None:
        """Give back credits ``scope`` reserved."""
        ...


class Ledger(Protocol):
    """A ledger opened by :func:`runner.ledger.open_ledger`: every job, its status changes,
    soul models and uploads, so that every run can resume.

    Opening and locking. Opening read-write connects but changes no schema: an implementation
    brings its schema up to date in :meth:`executor_lock`, after the lock is taken, or on
    first use by a process that does not execute jobs. So the way to execute is
    ``with open_ledger(url) as ledger, ledger.executor_lock(): ...`` and a second run refused
    by the lock has changed nothing. A read-only ledger (``open_ledger(url, readonly=True)``)
    refuses every write with ``LedgerError`` and never creates anything.

    Every write is one transaction: a status change and its event commit together or not at
    all. Errors are ``LedgerError`` (``TransitionError`` for a change the state machine
    refuses, ``LedgerLockedError`` from :meth:`executor_lock`).
    """

    @property
    def readonly(self) -> bool:
        """Whether the ledger was opened read-only."""
        ...

    @property
    def url(self) -> str:
        """Where the ledger lives, for messages (never holds a password)."""
        ...

    @property
    def id(self) -> str:
        """The ledger's own random id, made when it was created: the first part of every
        idempotency key it hands out (``<id>-<key>-<n>``)."""
        ...

    def executor_lock(self) -> AbstractContextManager[None]:
        """A context manager held by the one process that executes jobs against this ledger.

        Entering never waits: while another process (or another lock in this one) holds it,
        it raises ``LedgerLockedError`` naming the holder (pid and start time). Once held, the
        schema is brought up to date. SQLite: an ``flock`` on ``runner.lock`` beside the file,
        released by the kernel however the holder dies. An implementation that lets several
        processes execute together (PostgreSQL, SPEC §8) may only upgrade the schema here.
        """
        ...

    def close(self) -> None:
        """Close the ledger; it cannot be used afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the ledger."""
        ...

    # --- jobs -------------------------------------------------------------------------

    def get(self, key: str) -> JobRow | None:
        """The job with this exact key, or ``None``."""
        ...

    def match_key(self, prefix: str) -> str:
        """The one key that is ``prefix`` or starts with it; ``LedgerError`` if none or several."""
        ...

    def jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> list[JobRow]:
        """Jobs matching every given filter, ordered by manifest, then manifest order, then key."""
        ...

    def iter_jobs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> Iterator[JobRow]:
        """:meth:`jobs`, streamed from one snapshot: memory stays flat however many there
        are. Consume it before the next call on this ledger (it holds a read transaction)."""
        ...

    def briefs(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
        keys: Collection[str] | None = None,
    ) -> Iterator[JobBrief]:
        """:meth:`iter_jobs`, only the columns of ``JobBrief`` (key, manifest, campaign,
        status, path, location, bytes, credits, generation id, error): for counts, budgets
        and file checks over many jobs. Consume it before the next call on this ledger."""
        ...

    def events(self, key: str) -> list[EventRow]:
        """A job's status changes and notes, oldest first."""
        ...

    def report_rows(
        self,
        *,
        status: StatusFilter | None = None,
        campaign: str | Iterable[str] | None = None,
        manifest: str | None = None,
    ) -> Iterator[ReportRow]:
        """:meth:`iter_jobs`, only the columns of ``ReportRow`` (what the HTML report shows
        or counts), its JSON columns as the ledger's text. Consume it before the next call
        on this ledger."""
        ...

    def generation_times(self, shape: Mapping[str, Any], *, limit: int) -> list[GenerationTime]:
        """How long the ``limit`` most recently completed generations took whose request has
        exactly these values for the fields of ``shape`` (``None`` for a field it lacks),
        newest first. A job counts once per submission: from the last ``queued`` event before
        its first ``completed`` one after that."""
        ...

    def counts(self, manifest: str | None = None) -> dict[str, dict[str, int]]:
        """``{campaign: {status: count}}``, campaigns by name, statuses in life-cycle order."""
        ...

    def status_counts(
        self, manifest: str, campaign: str | Iterable[str] | None = None
    ) -> dict[str, int]:
        """``{status: count}`` of a manifest's jobs (of ``campaign``, if given), statuses in
        the order its jobs first have them (manifest order, as :meth:`briefs` gives them):
        one grouped query, not a read of every job."""
        ...

    def transition(
        self, key: str, to: JobStatus | str, *, detail: str | None = None, **columns: Any
    ) -> JobRow:
        """Move a job to status ``to``, updating ``columns`` and appending the event, atomically;
        return the job as it is now.

        ``columns`` may be any of ``TRANSITION_COLUMNS`` (``location`` is written in the same
        change as ``downloaded``). The state machine is ``runner.ledger.status``:
        ``TransitionError`` for a refused change, ``TypeError`` for another column,
        ``LedgerError`` for an unknown key, ``ValueError`` for an unknown status.
        """
        ...

    def transition_many(self, changes: Iterable[Transition]) -> list[JobRow]:
        """Several :meth:`transition` calls in one transaction (all or none: the first refused
        change raises and nothing is written); the jobs as they are now, in that order."""
        ...

    def note(self, key: str, detail: str) -> None:
        """Append an event that records something without changing the job's status
        (``from_status`` and ``to_status`` are both the current one)."""
        ...

    def bump_attempts(self, key: str) -> int:
        """Count one more attempt for a job (no status change, no event); return the count."""
        ...

    def retry_failed(
        self,
        manifest: str,
        keys: Collection[str] | None = None,
        campaigns: Collection[str] | None = None,
    ) -> int:
        """Put a manifest's failed jobs (all, or those with these keys / in these campaigns)
        back to ``pending`` with the next idempotency key and no attempts; return how many."""
        ...

    # --- claims (runner.ledger.claims) --------------------------------------------------

    def claim(
        self,
        manifest: str,
        holder: str,
        *,
        lease: float,
        limit: int | None = None,
        keys: Collection[str] | None = None,
    ) -> list[JobRow]:
        """Claim for ``holder``, for ``lease`` seconds, up to ``limit`` jobs of ``manifest``
        (among ``keys``, if given) that are not terminal and that nobody else holds (or
        whose holder's lease has run out); return them as they are now, ``submitting`` ones
        first, then in manifest order (a job ``holder`` holds already is not claimed again:
        ``renew`` extends its lease). Taking a job over from another holder appends a note
        naming both. On PostgreSQL, rows other processes are claiming at this moment are
        skipped, never waited for, and never handed to two holders.
        """
        ...

    def renew(self, holder: str, keys: Collection[str], *, lease: float) -> set[str]:
        """Extend ``holder``'s claims on ``keys`` to ``lease`` seconds from now; return the
        keys it still holds (a claim that ran out and was taken over is not renewed)."""
        ...

    def release(self, holder: str, keys: Collection[str]) -> None:
        """Give up ``holder``'s claims on ``keys``; claims of other holders are left alone."""
        ...

    def claim_of(self, key: str) -> Claim | None:
        """Who holds job ``key`` and until when, or ``None`` when nobody does."""
        ...

    def unclaimed(self, manifest: str, statuses: Collection[JobStatus]) -> list[str]:
        """The keys of ``manifest``'s jobs in ``statuses`` that nobody holds (or whose
        holder's lease has run out): what a process may take over. Reads only those rows."""
        ...

    def record_manifest(
        self, path: str, *, source: str, output: str, resolved: Resolved | None = None
    ) -> None:
        """Record (or replace) what workers need of the manifest at ``path`` (as its jobs
        name it): its YAML ``source``, its resolved ``output`` (a directory or s3://) and
        what the recording host resolved of it from its disk (``resolved``); each recording
        starts a new budget scope."""
        ...

    def recorded_manifests(self) -> list[ManifestRecord]:
        """Every manifest recorded, by path."""
        ...

    def shared_limits(self) -> SharedLimits | None:
        """The per-account limits the processes on this ledger share, where several may
        execute at once (PostgreSQL); ``None`` where one process executes (SQLite): its
        in-process throttle and slots are the account's."""
        ...

    # --- plans ------------------------------------------------------------------------

    def diff(
        self,
        manifest_path: str,
        jobs: Sequence[Job],
        *,
        charged: Callable[[JobState], bool] | None = None,
    ) -> PlanDiff:
        """What :meth:`record_plan` would do with these jobs, without writing anything.

        Given ``charged`` (``engine.budget.charged``), the diff also sums the estimated
        credits of the jobs recorded for this manifest that it says were charged
        (``PlanDiff.charged_credits``: what ``charged_credits(briefs(manifest=...))`` gives),
        from its own read of them: one read of the ledger for both.
        """
        ...

    def record_plan(self, manifest_path: str, jobs: Sequence[Job]) -> PlanDiff:
        """Record a manifest's jobs in one transaction and return the resulting diff.

        New jobs are inserted as ``pending`` (idempotency key ``<key>-1``); jobs the ledger
        knows keep their status and get their path, credits, order and tags refreshed (and
        move to this manifest if another one recorded them); orphaned jobs the manifest
        produces again go back to the status they had; every job recorded for this manifest
        path that it no longer produces becomes ``orphaned``. Nothing is deleted.
        """
        ...

    def record_plan_checked(
        self,
        manifest_path: str,
        jobs: Sequence[Job],
        ready: Callable[[list[JobBrief]], bool],
    ) -> PlanDiff | None:
        """:meth:`record_plan`, once ``ready`` has seen, in its transaction, the briefs of
        the jobs recorded for this manifest before it writes (what ``briefs(manifest=...)``
        reads, in that order: the jobs after recording too when the diff is ``unchanged``).
        When ``ready`` says ``False`` nothing is written and the result is ``None``. One
        read of the ledger for both (a run's re-check and its plan)."""
        ...

    # --- souls and uploads ------------------------------------------------------------

    def get_soul(self, name: str, manifest: str) -> SoulRow | None:
        """The soul model recorded for ``souls.<name>`` of this manifest, or ``None``."""
        ...

    def souls(self, manifest: str | None = None) -> list[SoulRow]:
        """Every soul record (of one manifest, if given), by manifest and name."""
        ...

    def set_soul(
        self,
        name: str,
        manifest: str,
        *,
        status: str,
        model_id: str | None = None,
        error: str | None = None,
        images_hash: str | None = None,
        idempotency_key: str | None = None,
    ) -> SoulRow:
        """Record a soul model's state, replacing every field but ``created_at``."""
        ...

    def get_upload(self, sha256: str) -> str | None:
        """The public URL of a local file already uploaded, by the sha256 of its content."""
        ...

    def record_upload(self, sha256: str, url: str) -> str:
        """Remember where a local file's content was uploaded, unless another upload of the
        same content was recorded first; return the URL in effect (the first one), so every
        request that refers to the file — a re-sent one too — carries the same URL."""
        ...

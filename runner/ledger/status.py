"""Job states and the rules for changing them: pure, no I/O, shared by every ledger.

Every ledger implementation calls :func:`check_transition` before it writes a status change,
so the state machine lives here once, whatever stores the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from runner.errors import TransitionError


class JobStatus(StrEnum):
    """Where a job is in its life. Stored as the lowercase word."""

    PENDING = "pending"  # planned, nothing sent yet
    # committed with its idempotency key just before the POST; found like this on resume, it is
    # re-sent with the same key, because the POST may have reached the provider
    SUBMITTING = "submitting"
    QUEUED = "queued"  # the provider accepted it and gave a generation id
    RUNNING = "running"  # the provider reports it in progress
    COMPLETED = "completed"  # the provider has a video for it; not downloaded (yet)
    # the video is stored, complete, with bytes, sha256 and location recorded
    DOWNLOADED = "downloaded"
    FAILED = "failed"  # terminal failure; ``error`` says why
    ORPHANED = "orphaned"  # its manifest no longer produces it; kept, never deleted


S = JobStatus

#: Every status change a ledger accepts. ``orphaned`` is special: it may only go back to
#: the status the job had before it was orphaned (see :func:`check_transition`).
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    # pending → queued / completed: a retried job whose earlier generation turned out to be
    # still under way or completed after all is taken up instead of being paid for again
    S.PENDING: frozenset({S.SUBMITTING, S.QUEUED, S.COMPLETED, S.FAILED, S.ORPHANED}),
    S.SUBMITTING: frozenset(
        # submitting → submitting is a resend with the same idempotency key;
        # → pending when the submit was refused before it could have reached the provider
        {S.SUBMITTING, S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.PENDING, S.ORPHANED}
    ),
    S.QUEUED: frozenset({S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.ORPHANED}),
    S.RUNNING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.ORPHANED}),
    # completed → completed refreshes an expired video URL
    S.COMPLETED: frozenset({S.COMPLETED, S.DOWNLOADED, S.FAILED, S.ORPHANED}),
    # downloaded → completed when the file is found missing or corrupt: download it again;
    # downloaded → downloaded when the video moved (a new output name): its location changes
    S.DOWNLOADED: frozenset({S.DOWNLOADED, S.COMPLETED, S.ORPHANED}),
    # failed → pending only through a deliberate retry (a new idempotency key)
    S.FAILED: frozenset({S.PENDING, S.ORPHANED}),
    S.ORPHANED: frozenset(),
}

#: Statuses of jobs the provider has (or may have) but that are not stored yet.
IN_FLIGHT: frozenset[JobStatus] = frozenset({S.SUBMITTING, S.QUEUED, S.RUNNING, S.COMPLETED})

#: Columns of ``jobs`` that ``Ledger.transition`` may set besides ``status``.
TRANSITION_COLUMNS: frozenset[str] = frozenset(
    {
        "generation_id",
        "idempotency_key",
        "attempts",
        "error",
        "video_url",
        "bytes",
        "sha256",
        "location",
        "expires_at",
        "prior_generation_id",
    }
)


def check_transition(
    key: str,
    current: JobStatus,
    to: JobStatus,
    columns: Mapping[str, Any],
    *,
    idempotency_key: str,
    before_orphaning: JobStatus | None = None,
) -> str | None:
    """Refuse a status change the state machine does not allow; else return the event detail
    the change implies when the caller gives none (``None`` for most changes).

    ``key`` names the job in messages, ``current`` is its status and ``idempotency_key`` its
    key now; ``columns`` are what the change sets. An orphaned job may only go back to
    ``before_orphaning``, the status it had before it was orphaned (see
    :func:`restored_status`). submitting → submitting is a resend and must keep the job's
    idempotency key. Raises ``TypeError`` for a column outside ``TRANSITION_COLUMNS`` and
    ``TransitionError`` for a refused change.
    """
    unknown = set(columns) - TRANSITION_COLUMNS
    if unknown:
        raise TypeError(f"transition() cannot set {', '.join(sorted(unknown))}")
    allowed = TRANSITIONS[current]
    if current is JobStatus.ORPHANED:
        allowed = frozenset({before_orphaning or JobStatus.PENDING})
    if to not in allowed:
        raise TransitionError(f"job {key}: {current} → {to} is not allowed")
    if current is to is JobStatus.SUBMITTING:
        if columns.get("idempotency_key", idempotency_key) != idempotency_key:
            raise TransitionError(
                f"job {key}: a job in submitting is re-sent with its idempotency key "
                f"{idempotency_key}, never a new one"
            )
        return f"resent with the same idempotency key {idempotency_key}"
    return None


def restored_status(from_status: JobStatus | str | None) -> JobStatus:
    """The status an orphaned job goes back to, given the ``from_status`` of the last event
    that orphaned it (``None`` when there is no such event: pending, as nothing was sent)."""
    if from_status is None or from_status == JobStatus.ORPHANED:
        return JobStatus.PENDING
    return JobStatus(from_status)


def first_idempotency_key(key: str, ledger_id: str) -> str:
    """The idempotency key a job is planned with: ``<ledger-id>-<key>-1``. The ledger's own
    id keeps two ledgers (two state dirs, two machines) on one account from ever receiving
    each other's generations or colliding on a changed body (SPEC v2 §4)."""
    return f"{ledger_id}-{key}-1"


def retry_idempotency_key(key: str, idempotency_key: str, ledger_id: str) -> str:
    """The key a deliberate retry of a failed job sends with: ``<ledger-id>-<key>-<n+1>``
    (a key from before ledger ids, ``<key>-<n>``, counts on from its ``n``)."""
    head, _, suffix = idempotency_key.rpartition("-")
    n = int(suffix) if head.endswith(key) and suffix.isdigit() else 1
    return f"{ledger_id}-{key}-{n + 1}"

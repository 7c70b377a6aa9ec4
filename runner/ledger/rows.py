"""What a write puts in the rows and what a read makes of them: the Python side that every
ledger implementation shares, so that only their SQL differs.

Pure functions over ``JobRow``s and plain dicts. An implementation reads the rows it needs in
its transaction, calls these, and writes what they return; the plan's counterpart is in
plan.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runner.errors import LedgerError
from runner.ledger.models import JobRow
from runner.ledger.status import JobStatus, check_transition, retry_idempotency_key

#: How many keys ``match_key`` asks for: enough to list five and say there are more.
MATCH_LIMIT = 6


#: The ``meta`` row holding the ledger's own id (see :func:`new_ledger_id`).
LEDGER_ID = "id"


def new_ledger_id() -> str:
    """A random id for a new ledger (12 hex digits), the first part of its idempotency keys."""
    return secrets.token_hex(6)


def timestamp(clock: Callable[[], datetime]) -> str:
    """The clock's time as every ledger stores and returns it: UTC, ISO 8601, microseconds."""
    return clock().astimezone(UTC).isoformat(timespec="microseconds")


def event_row(
    key: str, from_status: JobStatus | None, to: JobStatus, detail: str | None, now: str
) -> dict[str, Any]:
    """A row of ``events`` (its ``id`` is the database's)."""
    return {
        "job_key": key,
        "at": now,
        "from_status": from_status.value if from_status is not None else None,
        "to_status": to.value,
        "detail": detail,
    }


@dataclass(frozen=True)
class Change:
    """One status change, ready to write in one transaction."""

    updates: dict[str, Any]  # columns of the job's row, ``status`` and ``updated_at`` included
    event: dict[str, Any]  # its row of ``events``


def status_change(
    row: JobRow,
    to: JobStatus,
    *,
    detail: str | None,
    columns: dict[str, Any],
    restore: Callable[[str], JobStatus],
    now: str,
) -> Change:
    """The change moving ``row`` (as read, locked, in the writing transaction) to ``to``.

    ``restore(key)`` answers, for an orphaned job only, the status it had before (see
    ``status.restored_status``). Raises what ``check_transition`` raises.
    """
    before = restore(row.key) if row.status is JobStatus.ORPHANED else None
    implied = check_transition(
        row.key,
        row.status,
        to,
        columns,
        idempotency_key=row.idempotency_key,
        before_orphaning=before,
    )
    return Change(
        updates={**columns, "status": to.value, "updated_at": now},
        event=event_row(row.key, row.status, to, detail or implied, now),
    )


def note_event(row: JobRow, detail: str, now: str) -> dict[str, Any]:
    """The event of a note: from and to the job's current status."""
    return event_row(row.key, row.status, row.status, detail, now)


def retry_change(row: JobRow, ledger_id: str) -> tuple[str, dict[str, Any]]:
    """The detail and columns of a deliberate retry of a failed job: back to ``pending``
    with the next idempotency key, no attempts, nothing from the failed generation."""
    new_key = retry_idempotency_key(row.key, row.idempotency_key, ledger_id)
    columns = {
        "idempotency_key": new_key,
        "attempts": 0,
        "error": None,
        "generation_id": None,
        "video_url": None,
        # asked for before the retry pays again: it may have completed after all
        "prior_generation_id": row.generation_id or row.prior_generation_id,
    }
    return f"retry with idempotency key {new_key}", columns


def status_values(status: JobStatus | str | Iterable[JobStatus | str]) -> list[str]:
    """A ``jobs(status=...)`` filter as the words stored (``ValueError`` for an unknown one)."""
    statuses = [status] if isinstance(status, str) else list(status)
    return [JobStatus(s).value for s in statuses]


def name_values(names: str | Iterable[str]) -> list[str]:
    """A ``jobs(campaign=...)`` filter: one name or several."""
    return [names] if isinstance(names, str) else list(names)


def grouped_counts(groups: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """``{campaign: {status: count}}`` from ``(campaign, status, count)`` groups: campaigns by
    name (code point order, whatever the database's collation), statuses in life-cycle order."""
    order = {status.value: i for i, status in enumerate(JobStatus)}
    result: dict[str, dict[str, int]] = {}
    for campaign, status, n in sorted(groups, key=lambda g: (g[0], order.get(g[1], 99))):
        result.setdefault(campaign, {})[status] = int(n)
    return result


def status_counts_query(where: str, *, exact: bool = False) -> str:
    """The SQL of ``Ledger.status_counts`` (the same on both dialects): each status and its
    count, in the order of its first job in manifest order (``JOB_ORDER`` within the one
    manifest that ``where`` names). The first form orders by each status's lowest
    ``job_index`` (one grouped scan); two statuses with the same lowest index (an orphan
    left at a current job's place) need the ``exact`` form, which numbers every job
    (:func:`counted_statuses`)."""
    if not exact:
        return (
            "SELECT status, count(*) AS jobs, min(job_index) AS first_index FROM jobs"
            f" WHERE {where} GROUP BY status ORDER BY first_index"
        )
    return (
        "SELECT status, count(*) AS jobs FROM (SELECT status, row_number() OVER"
        f" (ORDER BY job_index, key) AS n FROM jobs WHERE {where}) AS t GROUP BY status"
        " ORDER BY min(n)"
    )


def counted_statuses(
    query: Callable[[str], Iterable[Mapping[str, Any]]], where: str
) -> dict[str, int]:
    """``Ledger.status_counts`` from ``query(sql)`` (the rows of ``sql``, its parameters
    bound by the caller): the grouped scan, or the exact order when it ties."""
    rows = list(query(status_counts_query(where)))
    if len({r["first_index"] for r in rows}) < len(rows):
        rows = list(query(status_counts_query(where, exact=True)))
    return {str(r["status"]): int(r["jobs"]) for r in rows}


def matched_key(prefix: str, keys: list[str]) -> str:
    """The one key of ``keys`` (those starting with ``prefix``, sorted, at most
    ``MATCH_LIMIT``); ``LedgerError`` if there is none or several."""
    if not prefix or not keys:
        raise LedgerError(f"no job {prefix!r} in the ledger")
    if len(keys) > 1:
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise LedgerError(f"{prefix!r} matches several jobs ({shown}); give more of the key")
    return keys[0]

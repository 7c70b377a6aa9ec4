"""The ``plan --json`` document (SPEC §5): each job with its ledger status, and a summary.

Which ledger statuses count as new, done, in flight or failed, and how credit figures are
shown (:func:`number`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from functools import reduce
from itertools import compress
from operator import add, attrgetter
from types import MappingProxyType
from typing import Any

from runner.jobs.keys import Job

IN_FLIGHT_STATUSES = frozenset({"submitting", "queued", "running", "completed"})
NOT_SUBMITTED_STATUSES = frozenset({"new", "pending"})
DONE_STATUS = "downloaded"
FAILED_STATUS = "failed"
_NO_STATUSES: Mapping[str, str] = MappingProxyType({})
_CREDITS = attrgetter("credits")


def number(value: float) -> int | float:
    """A credit figure as JSON shows it: whole numbers without ``.0``, no float noise."""
    value = round(value, 6)
    return int(value) if value.is_integer() else value


def plan_document(
    jobs: Sequence[Job],
    statuses: Mapping[str, str] = _NO_STATUSES,
    orphaned: int = 0,
    finishing: int = 0,
) -> dict[str, Any]:
    """The ``plan --json`` document of SPEC §5.

    ``statuses`` maps job keys to ledger statuses; a key missing from it is ``new``. ``new``
    in the summary also counts ``pending`` jobs (recorded, not yet submitted), and
    ``estimated_credits`` is what those would cost. ``finishing`` jobs (no longer produced,
    already sent) count in flight (SPEC v2 §4).
    """
    texts = plan_statuses(jobs, statuses)
    return {
        "summary": plan_summary(jobs, texts, orphaned, finishing),
        "jobs": plan_entries(jobs, texts),
    }


def plan_statuses(jobs: Sequence[Job], statuses: Mapping[str, str]) -> list[str]:
    """Each job's status as the plan shows it (:func:`plan_document`'s ``statuses``)."""
    if not statuses:
        return ["new"] * len(jobs)
    get = statuses.get
    texts = [get(job.key, "new") for job in jobs]
    if set(map(type, texts)) <= {str}:
        return texts
    return [str(getattr(raw, "value", raw)) for raw in texts]  # a str Enum member too


def plan_summary(
    jobs: Sequence[Job], texts: Sequence[str], orphaned: int = 0, finishing: int = 0
) -> dict[str, Any]:
    """The plan document's ``summary`` of jobs of these statuses (:func:`plan_statuses`)."""
    if len(jobs) != len(texts):
        raise ValueError(f"{len(jobs)} jobs but {len(texts)} statuses")
    counts = Counter(texts)
    new = sum(counts[status] for status in NOT_SUBMITTED_STATUSES)
    # the new jobs' credits, added in order (as a loop of ``+=`` adds them)
    unsent = map(NOT_SUBMITTED_STATUSES.__contains__, texts)
    credits = reduce(add, compress(map(_CREDITS, jobs), unsent), 0.0) if new else 0.0
    return {
        "total": len(jobs),
        "new": new,
        "done": counts[DONE_STATUS],
        "in_flight": finishing + sum(counts[status] for status in IN_FLIGHT_STATUSES),
        "failed": counts[FAILED_STATUS],
        "orphaned": orphaned,
        "estimated_credits": number(credits),
    }


def plan_entries(jobs: Sequence[Job], texts: Sequence[str]) -> list[dict[str, Any]]:
    """The plan document's ``jobs``: a mapping of :data:`PLAN_COLUMNS` per job."""
    return [
        {
            "key": job.key,
            "campaign": job.campaign,
            "status": status,
            "vars": job.vars,
            "request": job.request,
            "path": job.path,
        }
        for job, status in zip(jobs, texts, strict=True)
    ]


#: The fields of each of the plan document's jobs, in order.
PLAN_COLUMNS = ("key", "campaign", "status", "vars", "request", "path")


def plan_columns(jobs: Sequence[Job], texts: Sequence[str]) -> dict[str, list[Any]]:
    """:func:`plan_entries` a column each (``{field: each job's value}``, in
    :data:`PLAN_COLUMNS` order): the same values, without a mapping per job."""
    columns = {name: list(map(attrgetter(name), jobs)) for name in PLAN_COLUMNS if name != "status"}
    columns["status"] = list(texts)
    return {name: columns[name] for name in PLAN_COLUMNS}

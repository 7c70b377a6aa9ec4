"""Comparing a manifest's jobs with the ledger: what is new, done, in flight, failed, orphaned.

Pure functions over rows already read, shared by every ledger implementation: their ``diff``
and ``record_plan`` do the reading (:func:`gather_plan`) and the writing, in the order
:func:`plan_writes` gives.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from runner.jsontext import dumps
from runner.ledger.models import PlanDiff
from runner.ledger.rows import event_row
from runner.ledger.status import IN_FLIGHT, JobStatus, first_idempotency_key

if TYPE_CHECKING:
    from runner.jobs import Job  # a type only: the ledger needs no manifest code


_json = dumps  # json.dumps(value, ensure_ascii=False)


class Recorded(Protocol):
    """What a plan reads of a ledger's job: a ``JobRow`` to record it (``plan_writes``), a
    ``JobBrief`` is enough for the diff alone."""

    @property
    def key(self) -> str: ...
    @property
    def manifest(self) -> str: ...
    @property
    def status(self) -> JobStatus: ...


R = TypeVar("R", bound=Recorded)


@dataclass(frozen=True)
class Plan(Generic[R]):
    """A diff plus what ``record_plan`` needs to carry it out."""

    diff: PlanDiff
    produced: dict[str, Job]  # by key, first occurrence, manifest order
    existing: dict[str, R]  # the produced jobs the ledger already has
    # the manifest's ledger jobs it no longer produces, not yet orphaned and not in flight
    to_orphan: list[R]


def gather_plan(
    manifest: str,
    jobs: Sequence[Job],
    *,
    read_rows: Callable[[list[str], str], Iterable[R]],
    restore: Callable[[str], JobStatus],
) -> Plan[R]:
    """The plan for a manifest's ``jobs`` (the first of each key counts).

    ``read_rows(keys, manifest)`` gives the ledger's jobs that have one of these keys or
    are recorded for this manifest, in ``jobs()`` order; ``restore(key)`` the status an
    orphaned job goes back to (see ``status.restored_status``).
    """
    produced = _first_by_key(jobs)
    rows = _first_by_key(list(read_rows(list(produced), manifest)))
    existing = {key: rows[key] for key in produced if key in rows}
    gone = [row for row in rows.values() if row.key not in produced and row.manifest == manifest]
    back = {key: restore(key) for key, row in existing.items() if row.status is JobStatus.ORPHANED}
    return compute_plan(produced, existing, gone, back)


K = TypeVar("K", bound="Job | Recorded")


def _first_by_key(items: Sequence[K]) -> dict[str, K]:
    """``items`` by key, the first of each key, in their order (keys are usually unique: then
    one dict comprehension does it)."""
    found = {item.key: item for item in items}
    if len(found) < len(items):
        found = {}
        for item in items:
            found.setdefault(item.key, item)
    return found


def compute_plan(
    produced: dict[str, Job],
    existing: dict[str, R],
    gone: list[R],
    restore: Mapping[str, JobStatus],
) -> Plan[R]:
    """The plan for ``produced`` jobs, given the ones the ledger has (``existing``), the
    manifest's ledger jobs it no longer produces (``gone``), and for each orphaned job it
    produces again the status it goes back to (``restore``).

    A job no longer produced that is already in flight is paid for (or may be): it is not
    orphaned here but left ``finishing`` — counted in flight — for a run to cancel while
    queued or to download, and only then orphan (SPEC v2 §4)."""
    finishing = [row for row in gone if row.status in IN_FLIGHT]
    gone = [row for row in gone if row.status not in IN_FLIGHT]
    orphaned = JobStatus.ORPHANED
    # each known job's status after the plan, in manifest order (``existing`` is in it)
    after = {
        key: restore[key] if row.status is orphaned else row.status for key, row in existing.items()
    }
    tally = Counter(after.values())
    pending = JobStatus.PENDING
    credits = 0.0
    for key, job in produced.items():
        if after.get(key, pending) is pending:
            credits += job.credits
    diff = PlanDiff(
        statuses={key: status.value for key, status in after.items()},
        total=len(produced),
        new=len(produced) - len(existing) + tally[pending],
        done=tally[JobStatus.DOWNLOADED],
        in_flight=sum(tally[status] for status in IN_FLIGHT) + len(finishing),
        failed=tally[JobStatus.FAILED],
        orphaned=len(gone),
        new_credits=credits,
        added=tuple(key for key in produced if key not in existing),
        orphaned_keys=tuple(row.key for row in gone),
        restored_keys=tuple(key for key, row in existing.items() if row.status is orphaned),
        finishing_keys=tuple(row.key for row in finishing),
    )
    to_orphan = [row for row in gone if row.status is not JobStatus.ORPHANED]
    return Plan(diff, produced, existing, to_orphan)


def new_row(job: Job, manifest: str, now: str, ledger_id: str) -> dict[str, Any]:
    """The ``jobs`` row of a job the ledger has not seen: pending, first idempotency key."""
    return {
        "key": job.key,
        "campaign": job.campaign,
        "manifest": manifest,
        "job_index": job.index,
        "request": _json(job.request),
        "vars": _json(job.vars),
        "path": job.path,
        "status": JobStatus.PENDING.value,
        "idempotency_key": first_idempotency_key(job.key, ledger_id),
        "attempts": 0,
        "credits": job.credits,
        "priced_by": job.priced_by,
        "soul": job.soul,
        "tags": _json(list(job.tags)),
        "variant": job.variant,
        "created_at": now,
        "updated_at": now,
    }


class Stored(Recorded, Protocol):
    """What :func:`refreshed_columns` reads of a ledger's job: a ``JobRow``, or a
    ``PlannedRow`` (whose JSON columns are their text)."""

    @property
    def campaign(self) -> str: ...
    @property
    def job_index(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def credits(self) -> float: ...
    @property
    def priced_by(self) -> str | None: ...
    @property
    def soul(self) -> str | None: ...
    @property
    def variant(self) -> int | None: ...
    def stored_json(self, name: str) -> str | None: ...
    def plan_texts(self) -> tuple[str | None, str | None, str | None]: ...


S = TypeVar("S", bound=Stored)

#: The columns :func:`refreshed_columns` compares as they are, in its order.
_PLAIN = ("manifest", "campaign", "job_index", "path", "credits", "priced_by", "soul", "variant")


def refreshed_columns(
    row: Stored, job: Job, manifest: str, encode: Callable[[Any], str] = _json
) -> dict[str, Any]:
    """Columns of a known job that the manifest now describes differently (never status).

    A JSON column is first compared as the text the ledger holds (``stored_json``): the same
    text is the same value, so the usual no-op plan decodes none of them. ``encode`` (of the
    tags and vars) is ``json.dumps(value, ensure_ascii=False)``, or a memo of it."""
    ours = (
        row.manifest,
        row.campaign,
        row.job_index,
        row.path,
        row.credits,
        row.priced_by,
        row.soul,
        row.variant,
    )
    theirs = (
        manifest,
        job.campaign,
        job.index,
        job.path,
        job.credits,
        job.priced_by,
        job.soul,
        job.variant,
    )
    # a tuple is encoded as its list; a request is its job's own
    texts = (encode(job.tags), _json(job.request), encode(job.vars))
    held = row.plan_texts()  # (tags, request, vars) as stored_json gives them
    if ours == theirs and texts == held:  # the usual case: nothing to refresh
        return {}
    changes = {c: new for c, old, new in zip(_PLAIN, ours, theirs, strict=True) if old != new}
    if texts == held:  # all three JSON columns as the ledger holds them
        return changes
    values = (("tags", job.tags), ("request", job.request), ("vars", job.vars))
    for (column, value), text, stored in zip(values, texts, held, strict=True):
        if text == stored:
            continue
        old = getattr(row, column)
        if isinstance(old, str):  # a PlannedRow's text
            old = json.loads(old)
        if (list(old) if column == "tags" else old) != (list(value) if column == "tags" else value):
            changes[column] = text
    return changes


@dataclass(frozen=True)
class PlanWrites(Generic[S]):
    """What ``record_plan`` writes, in this order, in one transaction."""

    new_jobs: list[dict[str, Any]]  # rows of ``jobs`` to insert
    new_events: list[dict[str, Any]]  # their first events
    refreshed: list[tuple[str, dict[str, Any]]]  # (key, columns to update) of known jobs
    # status changes after that: orphaned jobs produced again go back first, then the
    # manifest's jobs it no longer produces become orphaned
    moves: list[tuple[S, JobStatus, str]]


def plan_writes(plan: Plan[S], manifest: str, now: str, ledger_id: str) -> PlanWrites[S]:
    """The writes that record ``plan`` for ``manifest`` at time ``now``."""
    new_jobs = [
        new_row(job, manifest, now, ledger_id)
        for key, job in plan.produced.items()
        if key not in plan.existing
    ]
    planned = f"planned from {manifest}"
    refreshed = []
    # The jobs of a row share their vars, those of a campaign their tags: each encoded once
    # (by identity: the jobs, and so their values, live through this call).
    texts: dict[int, str] = {}

    def encode(value: Any) -> str:
        text = texts.get(id(value))
        if text is None:
            text = texts[id(value)] = _json(value)
        return text

    for key, row in plan.existing.items():
        changes = refreshed_columns(row, plan.produced[key], manifest, encode)
        if changes:
            refreshed.append((key, {**changes, "updated_at": now}))
    moves = [
        (plan.existing[key], JobStatus(plan.diff.statuses[key]), "produced again by the manifest")
        for key in plan.diff.restored_keys
    ]
    moves += [
        (row, JobStatus.ORPHANED, f"no longer produced by {manifest}") for row in plan.to_orphan
    ]
    return PlanWrites(
        new_jobs=new_jobs,
        new_events=[
            event_row(row["key"], None, JobStatus.PENDING, planned, now) for row in new_jobs
        ],
        refreshed=refreshed,
        moves=moves,
    )


def recorded(plan: Plan[Any], writes: PlanWrites[Any]) -> PlanDiff:
    """What ``record_plan`` returns: the plan's diff, saying whether ``writes`` wrote nothing."""
    unchanged = not (writes.new_jobs or writes.refreshed or writes.moves)
    return replace(plan.diff, unchanged=unchanged)

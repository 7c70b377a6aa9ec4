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
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from runner.jsontext import dumps
from runner.ledger.models import PLANNED_COLUMNS, JobState, PlanDiff, PlannedRow
from runner.ledger.rows import event_row
from runner.ledger.status import IN_FLIGHT, JobStatus, first_idempotency_key

if TYPE_CHECKING:
    from runner.jobs import Job  # a type only: the ledger needs no manifest code


_json = dumps  # json.dumps(value, ensure_ascii=False)


class Recorded(Protocol):
    """What a plan reads of a ledger's job: a ``PlannedRow`` to record it (``plan_writes``),
    a ``JobState`` for the diff alone."""

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
    read: dict[str, R]  # every job read, by key, in the order read (``read_rows``)


def gather_plan(
    manifest: str,
    jobs: Sequence[Job],
    *,
    read_rows: Callable[[list[str], str], Iterable[R]],
    restore: Callable[[str], JobStatus],
) -> Plan[R]:
    """The plan for a manifest's ``jobs`` (the first of each key counts).

    ``read_rows(keys, manifest)`` gives the ledger's jobs that have one of these keys or
    are recorded for this manifest (those in ``jobs()`` order); ``restore(key)`` the status an
    orphaned job goes back to (see ``status.restored_status``).
    """
    produced = _first_by_key(jobs)
    rows = _first_by_key(list(read_rows(list(produced), manifest)))
    if list(rows) == list(produced):  # the usual re-plan: the same jobs in the same order
        # (keyed by the jobs' own keys: the diff's statuses keep no copy of the rows')
        existing = dict(zip(produced, rows.values(), strict=True))
    else:
        existing = {key: row for key in produced if (row := rows.get(key)) is not None}
    gone = []
    if len(existing) < len(rows):  # (the usual re-plan reads only jobs it produces)
        gone = [
            row for row in rows.values() if row.key not in produced and row.manifest == manifest
        ]
    orphaned = JobStatus.ORPHANED
    back = {key: restore(key) for key, row in existing.items() if row.status is orphaned}
    return compute_plan(produced, existing, gone, back, read=rows)


K = TypeVar("K", bound="Job | Recorded")
_key = attrgetter("key")


def _first_by_key(items: Sequence[K]) -> dict[str, K]:
    """``items`` by key, the first of each key, in their order (keys are usually unique: then
    one dict made in C does it)."""
    found = dict(zip(map(_key, items), items, strict=True))
    if len(found) < len(items):
        found = {}
        for item in items:
            found.setdefault(item.key, item)
    return found


#: Each status's word (``status.value`` is a Python property: a dict is faster).
_VALUES = {status: status.value for status in JobStatus}
_status = attrgetter("status")


def compute_plan(
    produced: dict[str, Job],
    existing: dict[str, R],
    gone: list[R],
    restore: Mapping[str, JobStatus],
    *,
    read: dict[str, R],
) -> Plan[R]:
    """The plan for ``produced`` jobs, given the ones the ledger has (``existing``), the
    manifest's ledger jobs it no longer produces (``gone``), and for each orphaned job it
    produces again, in ``existing``'s order, the status it goes back to (``restore``);
    ``read`` is every job read, by key, in the order read.

    A job no longer produced that is already in flight is paid for (or may be): it is not
    orphaned here but left ``finishing`` — counted in flight — for a run to cancel while
    queued or to download, and only then orphan (SPEC v2 §4)."""
    finishing = [row for row in gone if row.status in IN_FLIGHT]
    gone = [row for row in gone if row.status not in IN_FLIGHT]
    # each known job's status after the plan, in manifest order (``existing`` is in it)
    after = dict(zip(existing, map(_status, existing.values()), strict=True))
    after.update(restore)
    statuses = dict(zip(after, map(_VALUES.__getitem__, after.values()), strict=True))
    tally = Counter(statuses.values())
    pending = JobStatus.PENDING
    added = (
        tuple(key for key in produced if key not in existing) if len(after) < len(produced) else ()
    )
    credits = 0.0
    if tally[pending]:
        for key, job in produced.items():
            if after.get(key, pending) is pending:
                credits += job.credits
    else:  # the pending jobs are the added ones (the same sum, in the same order)
        for key in added:
            credits += produced[key].credits
    diff = PlanDiff(
        statuses=statuses,
        total=len(produced),
        new=len(produced) - len(existing) + tally[pending],
        done=tally[JobStatus.DOWNLOADED],
        in_flight=sum(tally[status] for status in IN_FLIGHT) + len(finishing),
        failed=tally[JobStatus.FAILED],
        orphaned=len(gone),
        new_credits=credits,
        added=added,
        orphaned_keys=tuple(row.key for row in gone),
        restored_keys=tuple(restore),
        finishing_keys=tuple(row.key for row in finishing),
    )
    to_orphan = [row for row in gone if row.status is not JobStatus.ORPHANED]
    return Plan(diff, produced, existing, to_orphan, read)


def diff_with_charges(
    plan: Plan[JobState], manifest: str, charged: Callable[[JobState], bool] | None
) -> PlanDiff:
    """``plan``'s diff; given ``charged`` (``engine.budget.charged``), with the estimated
    credits of the jobs read that are recorded for ``manifest`` and ``charged`` says were
    charged (``PlanDiff.charged_credits``): summed as ``engine.budget.charged_credits`` sums
    ``briefs(manifest=manifest)``, in the same order, so the same float."""
    if charged is None:
        return plan.diff
    rows = plan.read.values()
    spent = sum((r.credits for r in rows if r.manifest == manifest and charged(r)), 0.0)
    return replace(plan.diff, charged_credits=spent)


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


#: What :func:`refreshed_columns` compares as they are: ``PlannedRow``'s values 3 to 6
#: (job_index, path, credits, priced_by) with a job's ``_plain``.
_PLAIN = PLANNED_COLUMNS[3:7]
_plain = attrgetter("index", "path", "credits", "priced_by")


def _same(row: PlannedRow, job: Job, manifest: str, tags: str) -> bool:
    """Whether recording ``job`` for ``manifest`` changes nothing of ``row`` (``tags``: the
    job's, encoded): the usual case, told before anything else is built."""
    return row[3:7] == _plain(job) and row.manifest == manifest and row.tags == tags


def refreshed_columns(row: PlannedRow, job: Job, manifest: str, tags: str) -> dict[str, Any]:
    """Columns of a known job that the manifest now describes differently (never status):
    its manifest, order, path, credits, pricer and tags (``tags``: the job's, encoded).

    The tags are compared as the text the ledger holds first, then, if that differs, as
    values (the same values stored another way stay as stored). What else the manifest says
    of a job — its campaign, vars, request, variant and soul — is what its key is the hash
    of (``runner.jobs.keys``): the job the ledger holds under that key has the same values,
    so they are neither read nor compared (they could differ only in how the text is
    written, which is never rewritten)."""
    if _same(row, job, manifest, tags):
        return {}  # the usual case: nothing to refresh
    theirs = _plain(job)
    changes: dict[str, Any] = {"manifest": manifest} if row.manifest != manifest else {}
    changes.update(
        (c, new) for c, old, new in zip(_PLAIN, row[3:7], theirs, strict=True) if old != new
    )
    if row.tags != tags and json.loads(row.tags) != list(job.tags):
        changes["tags"] = tags
    return changes


@dataclass(frozen=True)
class PlanWrites(Generic[R]):
    """What ``record_plan`` writes, in this order, in one transaction."""

    new_jobs: list[dict[str, Any]]  # rows of ``jobs`` to insert
    new_events: list[dict[str, Any]]  # their first events
    refreshed: list[tuple[str, dict[str, Any]]]  # (key, columns to update) of known jobs
    # status changes after that: orphaned jobs produced again go back first, then the
    # manifest's jobs it no longer produces become orphaned
    moves: list[tuple[R, JobStatus, str]]


def plan_writes(
    plan: Plan[PlannedRow], manifest: str, now: str, ledger_id: str
) -> PlanWrites[PlannedRow]:
    """The writes that record ``plan`` for ``manifest`` at time ``now``."""
    new_jobs = [new_row(plan.produced[key], manifest, now, ledger_id) for key in plan.diff.added]
    planned = f"planned from {manifest}"
    refreshed = []
    # The jobs of a campaign share their tags: encoded once (by identity: the jobs, and so
    # their tags, live through this call).
    texts: dict[int, str] = {}
    produced = plan.produced
    for key, row in plan.existing.items():
        job = produced[key]
        tags = texts.get(id(job.tags))
        if tags is None:
            tags = texts[id(job.tags)] = _json(list(job.tags))
        if _same(row, job, manifest, tags):
            continue  # the usual case (a call of ``refreshed_columns`` spared)
        changes = refreshed_columns(row, job, manifest, tags)
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

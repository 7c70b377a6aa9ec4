"""The read-only use cases: ``status``, ``jobs``, ``show``, ``export``, a run's counts. They
never take the executor lock, never write, and work during a run or on a ledger in a read-only
folder.

What they return is redacted: a ledger written before redaction existed may hold a key the
provider echoed into a video URL or an error text; the credentials in ``environ`` are masked
in those columns and in event details before anything is shown.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from runner.app.common import reading
from runner.errors import LedgerError
from runner.ledger import EventRow, JobRow, JobStatus, ReportRow
from runner.providers import redactor


@dataclass(frozen=True)
class Shown:
    """One job and its whole history."""

    job: JobRow
    events: list[EventRow]

    def to_dict(self) -> dict[str, Any]:
        """The ``show --json`` document."""
        return {"job": self.job.to_dict(), "events": [e.to_dict() for e in self.events]}


def status(
    state_dir: Path, manifest: Path | None = None, *, ledger: str | None = None
) -> dict[str, Any]:
    """The ``status --json`` document: ``{"campaigns": {NAME: {STATUS: N}}, "totals": ...}``
    (of one manifest's jobs, if given)."""
    counts: dict[str, dict[str, int]] = {}
    with reading(state_dir, ledger) as opened:
        if opened is not None:
            counts = opened.counts(manifest_column(manifest) if manifest else None)
    totals = {
        s.value: n for s in JobStatus if (n := sum(c.get(s.value, 0) for c in counts.values()))
    }
    return {"campaigns": counts, "totals": totals}


def jobs(
    state_dir: Path,
    *,
    statuses: Sequence[str] = (),
    campaigns: Sequence[str] = (),
    ledger: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[JobRow]:
    """The ledger's jobs, filtered by status and campaign (all of them when none is given),
    with the credentials of ``environ`` (default: the process's) masked."""
    return list(
        iter_jobs(state_dir, statuses=statuses, campaigns=campaigns, ledger=ledger, environ=environ)
    )


def iter_jobs(
    state_dir: Path,
    *,
    statuses: Sequence[str] = (),
    campaigns: Sequence[str] = (),
    ledger: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[JobRow]:
    """:func:`jobs`, streamed from one snapshot (the ledger stays open until it is consumed)."""
    redacted = redacting(environ)
    with reading(state_dir, ledger) as opened:
        if opened is not None:
            for row in opened.iter_jobs(status=statuses or None, campaign=campaigns or None):
                yield redacted(row)


def show(
    state_dir: Path,
    key: str,
    *,
    ledger: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Shown:
    """One job (``key`` may be a unique prefix) with its event history, with the credentials
    of ``environ`` (default: the process's) masked."""
    with reading(state_dir, ledger) as opened:
        if opened is None:
            where = ledger or state_dir
            raise LedgerError(f"no job {key!r}: there is no ledger in {where} yet")
        row = opened.get(opened.match_key(key))
        assert row is not None
        events = opened.events(row.key)
    mask = redactor(environ=os.environ if environ is None else environ)
    return Shown(
        redacting(environ)(row),
        [dataclasses.replace(e, detail=_masked(mask, e.detail)) for e in events],
    )


def _masked(mask: Callable[[str], str], text: str | None) -> str | None:
    return None if text is None else mask(text)


Row = TypeVar("Row", JobRow, ReportRow)


def redacting(
    environ: Mapping[str, str] | None = None, columns: tuple[str, ...] = ("video_url", "error")
) -> Callable[[Row], Row]:
    """A function that masks the credentials of ``environ`` (default: the process's) in a row
    where a provider's answer may have put them: the video URL and the error (``columns``:
    those of them that will be shown)."""
    mask = redactor(environ=os.environ if environ is None else environ)

    def redacted(row: Row) -> Row:
        masked: dict[str, Any] = {}
        for column in columns:
            text = getattr(row, column)
            if text is not None and (hidden := mask(text)) != text:
                masked[column] = hidden
        if not masked:
            return row  # nothing to hide: no copy (which would decode its JSON columns)
        if isinstance(row, ReportRow):
            return row._replace(**masked)
        return dataclasses.replace(row, **masked)

    return redacted


def selection_counts(
    state_dir: Path,
    manifest: str,
    *,
    campaigns: Sequence[str] = (),
    tags: Sequence[str] = (),
    ledger: str | None = None,
) -> dict[str, int]:
    """How many of a manifest's jobs (``manifest`` as the ledger names it) have each status,
    orphaned ones left out: those in ``campaigns`` and with one of ``tags``, if given. Statuses
    in the order the jobs first have them (manifest order)."""
    counts: dict[str, int] = {}
    with reading(state_dir, ledger) as opened:
        if opened is None:
            return counts
        if not tags:  # one grouped query
            counted = opened.status_counts(manifest, list(campaigns) or None)
            counted.pop(JobStatus.ORPHANED.value, None)
            return counted
        # only whole rows have tags
        for row in opened.iter_jobs(manifest=manifest, campaign=list(campaigns) or None):
            if row.status is not JobStatus.ORPHANED and set(tags) & set(row.tags):
                counts[row.status.value] = counts.get(row.status.value, 0) + 1
    return counts


def manifest_column(manifest: Path) -> str:
    """The ledger's name for a manifest: its resolved path, as ``Manifest.path`` has it."""
    return str(manifest.expanduser().resolve())

"""The read-only use cases: ``status``, ``jobs``, ``show``, ``export``. They never take the
executor lock, never write, and work during a run or on a ledger in a read-only folder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.app.common import reading
from runner.errors import LedgerError
from runner.ledger import EventRow, JobRow, JobStatus


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
) -> list[JobRow]:
    """The ledger's jobs, filtered by status and campaign (all of them when none is given)."""
    return list(iter_jobs(state_dir, statuses=statuses, campaigns=campaigns, ledger=ledger))


def iter_jobs(
    state_dir: Path,
    *,
    statuses: Sequence[str] = (),
    campaigns: Sequence[str] = (),
    ledger: str | None = None,
) -> Iterator[JobRow]:
    """:func:`jobs`, streamed from one snapshot (the ledger stays open until it is consumed)."""
    with reading(state_dir, ledger) as opened:
        if opened is not None:
            yield from opened.iter_jobs(status=statuses or None, campaign=campaigns or None)


def show(state_dir: Path, key: str, *, ledger: str | None = None) -> Shown:
    """One job (``key`` may be a unique prefix) with its event history."""
    with reading(state_dir, ledger) as opened:
        if opened is None:
            where = ledger or state_dir
            raise LedgerError(f"no job {key!r}: there is no ledger in {where} yet")
        row = opened.get(opened.match_key(key))
        assert row is not None
        return Shown(row, opened.events(row.key))


def manifest_column(manifest: Path) -> str:
    """The ledger's name for a manifest: its resolved path, as ``Manifest.path`` has it."""
    return str(manifest.expanduser().resolve())

"""The read-only use cases: ``status``, ``jobs``, ``show``, ``export``. They never take the
executor lock, never write, and work during a run or on a ledger in a read-only folder."""

from __future__ import annotations

from collections.abc import Sequence
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


def status(state_dir: Path, manifest: Path | None = None) -> dict[str, Any]:
    """The ``status --json`` document: ``{"campaigns": {NAME: {STATUS: N}}, "totals": ...}``
    (of one manifest's jobs, if given)."""
    counts: dict[str, dict[str, int]] = {}
    with reading(state_dir) as ledger:
        if ledger is not None:
            counts = ledger.counts(manifest_column(manifest) if manifest else None)
    totals = {
        s.value: n for s in JobStatus if (n := sum(c.get(s.value, 0) for c in counts.values()))
    }
    return {"campaigns": counts, "totals": totals}


def jobs(
    state_dir: Path, *, statuses: Sequence[str] = (), campaigns: Sequence[str] = ()
) -> list[JobRow]:
    """The ledger's jobs, filtered by status and campaign (all of them when none is given)."""
    with reading(state_dir) as ledger:
        if ledger is None:
            return []
        return ledger.jobs(status=statuses or None, campaign=campaigns or None)


def show(state_dir: Path, key: str) -> Shown:
    """One job (``key`` may be a unique prefix) with its event history."""
    with reading(state_dir) as ledger:
        if ledger is None:
            raise LedgerError(f"no job {key!r}: there is no ledger in {state_dir} yet")
        row = ledger.get(ledger.match_key(key))
        assert row is not None
        return Shown(row, ledger.events(row.key))


def manifest_column(manifest: Path) -> str:
    """The ledger's name for a manifest: its resolved path, as ``Manifest.path`` has it."""
    return str(manifest.expanduser().resolve())

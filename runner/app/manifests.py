"""``validate`` and ``plan``: what a manifest says, and how it compares with the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.app.common import reading
from runner.engine import charged_credits
from runner.errors import ManifestError
from runner.jobs import Job, expand, number, plan_document
from runner.manifest import load_manifest


@dataclass(frozen=True)
class Validated:
    """One manifest checked: how many jobs it makes, or what is wrong with it."""

    path: Path
    jobs: int | None = None
    error: ManifestError | None = None


def validate(paths: Sequence[Path]) -> list[Validated]:
    """Load and expand each manifest; every problem is reported, none raised."""
    results = []
    for path in paths:
        try:
            results.append(Validated(path, jobs=len(expand(load_manifest(path)))))
        except ManifestError as err:
            results.append(Validated(path, error=err))
    return results


@dataclass(frozen=True)
class Planned:
    """``document`` is the ``plan --json`` document; ``jobs`` the expanded jobs, in its order."""

    document: dict[str, Any]
    jobs: list[Job]


def plan(manifest_path: str | Path, state_dir: Path) -> Planned:
    """The ``plan --json`` document: the manifest's jobs against the ledger, with both budget
    figures (this run's new jobs against ``max_credits``; the manifest's total, charged so
    far plus new, against ``max_total_credits``). Reads the ledger without the lock and
    writes nothing; without a ledger every job is new."""
    manifest = load_manifest(manifest_path)
    jobs = expand(manifest)
    statuses: dict[str, str] = {}
    orphaned = 0
    charged = 0.0
    with reading(state_dir) as ledger:
        if ledger is not None:
            diff = ledger.diff(str(manifest.path), jobs)
            statuses, orphaned = diff.statuses, diff.orphaned
            charged = charged_credits(ledger.jobs(manifest=str(manifest.path)))
    doc = plan_document(jobs, statuses, orphaned)
    summary = doc["summary"]
    summary["charged_credits"] = number(charged)
    summary["estimated_total_credits"] = number(charged + summary["estimated_credits"])
    summary["max_credits"] = manifest.budget.max_credits
    summary["max_total_credits"] = manifest.budget.max_total_credits
    return Planned(doc, jobs)

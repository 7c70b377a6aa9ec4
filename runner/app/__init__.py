"""The use cases: what every command does, callable from Python, returning data.

The CLI parses options, calls one of these and renders what it returns; tests call them the
same way. Each lives with its stage: ``manifests`` (validate, plan), ``run`` (run, collect,
the dry run), ``souls`` (souls, retry), ``queries`` (status, jobs, show, export).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.lazy import exports

if TYPE_CHECKING:
    from runner.app.common import Environment, select
    from runner.app.manifests import Planned, Validated, plan, validate
    from runner.app.queries import (
        Shown,
        iter_jobs,
        jobs,
        manifest_column,
        selection_counts,
        show,
        status,
    )
    from runner.app.run import RunResult, collect, run, run_many
    from runner.app.souls import Cancelled, SoulsResult, cancel, retry, train_souls
    from runner.app.worker import WorkerResult, enqueue, worker
    from runner.settings import RunOptions

# Each module → the names it exports through this package (imported when first asked for:
# ``status`` does not import the engine, the providers and httpx that ``run`` needs).
_HOMES = {
    "runner.app.common": ("Environment", "select"),
    "runner.app.manifests": ("Planned", "Validated", "plan", "validate"),
    "runner.app.queries": (
        "Shown", "iter_jobs", "jobs", "manifest_column", "selection_counts", "show", "status",
    ),
    "runner.app.run": ("RunResult", "collect", "run", "run_many"),
    "runner.app.souls": ("Cancelled", "SoulsResult", "cancel", "retry", "train_souls"),
    "runner.app.worker": ("WorkerResult", "enqueue", "worker"),
    "runner.settings": ("RunOptions",),
}  # fmt: skip

__all__ = [
    "Cancelled",
    "Environment",
    "Planned",
    "RunOptions",
    "RunResult",
    "Shown",
    "SoulsResult",
    "Validated",
    "WorkerResult",
    "cancel",
    "collect",
    "enqueue",
    "iter_jobs",
    "jobs",
    "manifest_column",
    "plan",
    "retry",
    "run",
    "run_many",
    "select",
    "selection_counts",
    "show",
    "status",
    "train_souls",
    "validate",
    "worker",
]

__getattr__, __dir__ = exports(__name__, _HOMES)

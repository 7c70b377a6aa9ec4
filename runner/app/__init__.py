"""The use cases: what every command does, callable from Python, returning data.

The CLI parses options, calls one of these and renders what it returns; tests call them the
same way. Each lives with its stage: ``manifests`` (validate, plan), ``run`` (run, collect,
the dry run), ``souls`` (souls, retry), ``queries`` (status, jobs, show, export).
"""

from __future__ import annotations

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

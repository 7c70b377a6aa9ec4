"""The ledger: SQLite state that makes every run resumable (SPEC §4).

``Ledger`` is the database (jobs, their events, soul models, uploads), ``JobStatus`` and
``TRANSITIONS`` its state machine, ``ExecutorLock`` the one-executor-per-ledger guard.
"""

from __future__ import annotations

from runner.ledger.db import BUSY_TIMEOUT, LEDGER_FILE, Ledger, utcnow
from runner.ledger.lock import LOCK_FILE, ExecutorLock
from runner.ledger.models import (
    IN_FLIGHT,
    TRANSITION_COLUMNS,
    TRANSITIONS,
    EventRow,
    JobRow,
    JobStatus,
    PlanDiff,
    SoulRow,
)

__all__ = [
    "BUSY_TIMEOUT",
    "IN_FLIGHT",
    "LEDGER_FILE",
    "LOCK_FILE",
    "TRANSITIONS",
    "TRANSITION_COLUMNS",
    "EventRow",
    "ExecutorLock",
    "JobRow",
    "JobStatus",
    "Ledger",
    "PlanDiff",
    "SoulRow",
    "utcnow",
]

"""The ledger: the state that makes every run resumable (SPEC §4).

``Ledger`` is the interface (base.py) and :func:`open_ledger` the way to get one from a URL;
``SqliteLedger`` (sqlite/) and ``PostgresLedger`` (postgres/, imported only when asked for,
as it needs psycopg) implement it. ``JobStatus`` and ``TRANSITIONS``
(status.py) are the state machine every implementation enforces; ``JobRow``, ``EventRow``,
``SoulRow`` and ``PlanDiff`` (models.py) the records they return.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload
from urllib.parse import unquote

from runner.errors import LedgerError
from runner.ledger.base import Clock, Ledger, utcnow
from runner.ledger.models import (
    EventRow,
    GenerationTime,
    JobBrief,
    JobRow,
    PlanDiff,
    ReportRow,
    SoulRow,
    Transition,
)
from runner.ledger.sqlite import (
    BUSY_TIMEOUT,
    LEDGER_FILE,
    LOCK_FILE,
    ExecutorLock,
    SqliteLedger,
)
from runner.ledger.status import IN_FLIGHT, TRANSITION_COLUMNS, TRANSITIONS, JobStatus
from runner.ledger.urls import masked_url

if TYPE_CHECKING:
    from runner.ledger.postgres import PostgresLedger

__all__ = [
    "BUSY_TIMEOUT",
    "IN_FLIGHT",
    "LEDGER_FILE",
    "LOCK_FILE",
    "TRANSITIONS",
    "TRANSITION_COLUMNS",
    "EventRow",
    "ExecutorLock",
    "GenerationTime",
    "JobBrief",
    "JobRow",
    "JobStatus",
    "Ledger",
    "PlanDiff",
    "ReportRow",
    "SoulRow",
    "SqliteLedger",
    "Transition",
    "default_ledger_url",
    "open_ledger",
    "utcnow",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def default_ledger_url(state_dir: str | Path) -> str:
    """The ledger of a state directory: ``<state>/ledger.db``."""
    return str(Path(state_dir) / LEDGER_FILE)


@overload
def open_ledger(
    url: str | Path, *, readonly: Literal[False] = False, clock: Clock = utcnow
) -> Ledger: ...


@overload
def open_ledger(
    url: str | Path, *, readonly: Literal[True], clock: Clock = utcnow
) -> Ledger | None: ...


@overload
def open_ledger(url: str | Path, *, readonly: bool, clock: Clock = utcnow) -> Ledger | None: ...


def open_ledger(url: str | Path, *, readonly: bool = False, clock: Clock = utcnow) -> Ledger | None:
    """Open the ledger at ``url``.

    ``url`` is a path to the SQLite file (``state/ledger.db``, see :func:`default_ledger_url`)
    or ``sqlite:///abs/path.db``; ``postgresql://`` (or ``postgres://``) is a PostgreSQL
    database, in libpq's URL form (``postgresql://user:password@host:port/db?sslmode=...``,
    ``postgresql:///db?host=/run/postgresql``), that must exist. Any other URL is a
    ``LedgerError``, and no message ever shows a password.

    Read-write, a SQLite file and its directory are created if needed; the schema is brought
    up to date by ``executor_lock()`` or on first use (see ``Ledger``). ``readonly=True`` never
    creates or writes anything and returns ``None`` when there is no ledger yet. ``clock``
    gives the times the ledger records.
    """
    target = str(url)
    match = _SCHEME.match(target)
    if match is None:
        path = Path(target) if target else None
    else:
        scheme = match.group(1).lower()
        if scheme in ("postgresql", "postgres"):
            postgres = _postgres(target)
            if readonly:
                return postgres.open_readonly(target)
            return postgres.open(target, clock=clock)
        path = Path(unquote(target[len("sqlite://") :])) if scheme == "sqlite" else None
        if path is not None and not path.is_absolute():
            path = None
    if path is None:
        raise LedgerError(
            f"cannot open the ledger {masked_url(target)!r}: give a path to a SQLite file "
            "(state/ledger.db) or a URL like sqlite:///abs/path/ledger.db"
        )
    if readonly:
        return SqliteLedger.open_readonly(path)
    return SqliteLedger.open(path, clock=clock)


def _postgres(url: str) -> type[PostgresLedger]:
    """The PostgreSQL implementation, or a ``LedgerError`` saying how to install it."""
    try:
        import psycopg  # noqa: F401  (the "postgres" extra)
    except ImportError as err:
        raise LedgerError(
            f"cannot open the ledger {masked_url(url)}: the PostgreSQL ledger needs psycopg 3 "
            f"(pip install 'runner[postgres]'): {err}"
        ) from None
    from runner.ledger.postgres import PostgresLedger

    return PostgresLedger

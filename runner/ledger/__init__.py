"""The ledger: the state that makes every run resumable (SPEC §4).

``Ledger`` is the interface (base.py) and :func:`open_ledger` the way to get one from a URL;
``SqliteLedger`` (sqlite/) is the first implementation. ``JobStatus`` and ``TRANSITIONS``
(status.py) are the state machine every implementation enforces; ``JobRow``, ``EventRow``,
``SoulRow`` and ``PlanDiff`` (models.py) the records they return.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, overload
from urllib.parse import unquote, urlsplit

from runner.errors import LedgerError
from runner.ledger.base import Clock, Ledger, utcnow
from runner.ledger.models import EventRow, JobRow, PlanDiff, SoulRow
from runner.ledger.sqlite import (
    BUSY_TIMEOUT,
    LEDGER_FILE,
    LOCK_FILE,
    ExecutorLock,
    SqliteLedger,
)
from runner.ledger.status import IN_FLIGHT, TRANSITION_COLUMNS, TRANSITIONS, JobStatus

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
    "SqliteLedger",
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
    or ``sqlite:///abs/path.db``. ``postgresql://`` (or ``postgres://``) names the PostgreSQL
    ledger, not available yet; any other URL is a ``LedgerError``.

    Read-write, the file and its directory are created if needed; the schema is brought up to
    date by ``executor_lock()`` or on first use (see ``Ledger``). ``readonly=True`` never
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
            raise LedgerError(
                f"cannot open the ledger {_safe(target)}: the PostgreSQL ledger is not "
                "available yet; use a SQLite file such as state/ledger.db"
            )
        path = Path(unquote(target[len("sqlite://") :])) if scheme == "sqlite" else None
        if path is not None and not path.is_absolute():
            path = None
    if path is None:
        raise LedgerError(
            f"cannot open the ledger {_safe(target)!r}: give a path to a SQLite file "
            "(state/ledger.db) or a URL like sqlite:///abs/path/ledger.db"
        )
    if readonly:
        return SqliteLedger.open_readonly(path)
    return SqliteLedger.open(path, clock=clock)


def _safe(url: str) -> str:
    """``url`` with any password replaced, fit for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()

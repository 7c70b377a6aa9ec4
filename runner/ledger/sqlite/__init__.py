"""The SQLite ledger: one file in WAL mode, schema by append-only named migrations, one
executing process at a time (an ``flock`` beside the file)."""

from __future__ import annotations

from runner.ledger.sqlite.ledger import SqliteLedger
from runner.ledger.sqlite.lock import LOCK_FILE, ExecutorLock
from runner.ledger.sqlite.store import BUSY_TIMEOUT, LEDGER_FILE

__all__ = ["BUSY_TIMEOUT", "LEDGER_FILE", "LOCK_FILE", "ExecutorLock", "SqliteLedger"]

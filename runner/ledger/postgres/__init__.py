"""The PostgreSQL ledger (SPEC §8): the same tables and named migrations as the SQLite one,
in a database that any number of processes on any hosts use at once.

Needs the ``postgres`` extra (psycopg 3); ``runner.ledger.open_ledger`` imports this package
only for a ``postgresql://`` URL, so a SQLite-only install never needs psycopg.
"""

from __future__ import annotations

from runner.ledger.postgres.ledger import PLAN_LOCK, PostgresLedger
from runner.ledger.postgres.migrations import MIGRATION_LOCK
from runner.ledger.postgres.store import CONNECT_TIMEOUT

__all__ = ["CONNECT_TIMEOUT", "MIGRATION_LOCK", "PLAN_LOCK", "PostgresLedger"]

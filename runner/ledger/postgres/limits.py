"""Per-account limits shared by every process on one PostgreSQL ledger (SPEC §8).

A provider counts generations in flight and calls per second per account, whatever host they
come from, so the processes of a fleet keep those counts here, under row locks:

- ``account_slots``: one row per generation that holds one of the account's concurrency
  slots, keyed by its job. A slot outlives the process that took it (the provider still
  counts the generation); it is freed when the job leaves the provider, and a slot whose job
  is back to ``pending`` with nobody holding it (its process died before sending) is dropped.
- ``account_rates``: when the account's next call may go, in the database server's time, so
  hosts' clocks need not agree: each caller reserves the next turn and sleeps until it; and
  until when a Retry-After that any process received holds every process's calls.
- ``budgets``: credits reserved against a cap by every process sharing it, checked and added
  in one statement.
"""

from __future__ import annotations

from typing import Any

from runner.ledger.postgres.migrations import Connection
from runner.ledger.postgres.store import Store

#: Statuses whose generation the provider counts (or may count) against the account.
_AT_PROVIDER = ("submitting", "queued", "running")


class AccountLimits:
    """The shared limits of the ledger behind ``store`` (its connection, its transactions)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def declare_concurrency(self, account: str, manifest: str, concurrency: int) -> None:
        """Record ``manifest``'s ``limits.concurrency`` on ``account``."""
        with self._store.write() as conn:
            conn.execute(
                "INSERT INTO account_concurrency (account, manifest, concurrency)"
                " VALUES (%s, %s, %s) ON CONFLICT (account, manifest)"
                " DO UPDATE SET concurrency = EXCLUDED.concurrency",
                [account, manifest, concurrency],
            )

    def take_slot(self, account: str, key: str, limit: int, *, force: bool = False) -> bool:
        """Give job ``key`` one of ``account``'s slots if one is free (or it has one):
        ``limit``, or fewer when a manifest on the account with work left declared fewer;
        ``force`` takes it whatever the count (a generation already at the provider)."""
        now = self._store.server_now()  # leases are in the server's time
        with self._store.write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ["slots:" + account])
            smallest = conn.execute(
                "SELECT min(c.concurrency) AS n FROM account_concurrency c WHERE c.account = %s"
                " AND EXISTS (SELECT 1 FROM jobs j WHERE j.manifest = c.manifest"
                " AND j.status <> ALL(%s))",
                [account, ["downloaded", "failed", "orphaned"]],
            ).fetchone()
            if smallest is not None and smallest["n"] is not None:
                limit = min(limit, int(smallest["n"]))
            conn.execute(
                "DELETE FROM account_slots s USING jobs j WHERE s.account = %s"
                " AND j.key = s.job_key AND (j.status <> ALL(%s) AND (j.status <> 'pending'"
                " OR j.claimed_by IS NULL OR j.lease_until <= %s))",
                [account, list(_AT_PROVIDER), now],
            )
            row = conn.execute(
                "SELECT count(*) AS n, bool_or(job_key = %s) AS mine FROM account_slots"
                " WHERE account = %s",
                [key, account],
            ).fetchone()
            assert row is not None
            if row["mine"]:
                return True
            if not force and row["n"] >= limit:
                return False
            conn.execute(
                "INSERT INTO account_slots (job_key, account, taken_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (job_key) DO UPDATE SET account = EXCLUDED.account",
                [key, account, now],
            )
        return True

    def free_slot(self, key: str) -> None:
        """Job ``key``'s generation no longer counts against its account."""
        with self._store.write() as conn:
            conn.execute("DELETE FROM account_slots WHERE job_key = %s", [key])

    def slots_taken(self, account: str) -> int:
        """How many of ``account``'s slots are held now."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM account_slots WHERE account = %s", [account]
            ).fetchone()
        return int(row["n"]) if row is not None else 0

    def rate_turn(self, account: str, interval: float) -> float:
        """Reserve ``account``'s next call turn, ``interval`` seconds after the one before
        and not before the account's pause ends; return how many seconds from now it is."""
        with self._store.write() as conn:
            row = self._rates_row(conn, account)
            turn = max(float(row["now"]), float(row["next_call"]), float(row["paused_until"]))
            conn.execute(
                "UPDATE account_rates SET next_call = %s WHERE account = %s",
                [turn + interval, account],
            )
        return turn - float(row["now"])

    def pause(self, account: str, seconds: float) -> None:
        """Hold every call on ``account``, from every process, ``seconds`` from now (in the
        server's time; an earlier, longer pause is kept)."""
        with self._store.write() as conn:
            row = self._rates_row(conn, account)
            conn.execute(
                "UPDATE account_rates SET paused_until = greatest(paused_until, %s)"
                " WHERE account = %s",
                [float(row["now"]) + seconds, account],
            )

    def paused_for(self, account: str) -> float:
        """Seconds left of ``account``'s pause (0 when none)."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT paused_until - extract(epoch FROM clock_timestamp())::float8 AS left"
                " FROM account_rates WHERE account = %s",
                [account],
            ).fetchone()
        return max(0.0, float(row["left"])) if row is not None else 0.0

    def _rates_row(self, conn: Connection, account: str) -> dict[str, Any]:
        """``account``'s rate row, locked for this transaction, with the server's ``now``."""
        conn.execute(
            "INSERT INTO account_rates (account, next_call) VALUES (%s, 0)"
            " ON CONFLICT (account) DO NOTHING",
            [account],
        )
        row = conn.execute(
            "SELECT next_call, paused_until, extract(epoch FROM clock_timestamp())::float8"
            " AS now FROM account_rates WHERE account = %s FOR UPDATE",
            [account],
        ).fetchone()
        assert row is not None
        return row

    def reserve_credits(
        self, scope: str, credits: float, cap: float, *, start: float = 0.0
    ) -> float | None:
        """Add ``credits`` to what ``scope`` reserved if that stays within ``cap``: the new
        total, or ``None`` (nothing added) when it would not. A scope used for the first time
        starts at ``start`` (credits charged before it)."""
        with self._store.write() as conn:
            conn.execute(
                "INSERT INTO budgets (scope, reserved) VALUES (%s, %s)"
                " ON CONFLICT (scope) DO NOTHING",
                [scope, start],
            )
            row = conn.execute(
                "UPDATE budgets SET reserved = reserved + %s WHERE scope = %s"
                " AND reserved + %s <= %s RETURNING reserved",
                [credits, scope, credits, cap],
            ).fetchone()
        return float(row["reserved"]) if row is not None else None

    def refund_credits(self, scope: str, credits: float) -> None:
        """Give back credits ``scope`` reserved (the provider did not charge them)."""
        with self._store.write() as conn:
            conn.execute(
                "UPDATE budgets SET reserved = greatest(0, reserved - %s) WHERE scope = %s",
                [credits, scope],
            )

    def reserved_credits(self, scope: str) -> float:
        """What ``scope`` has reserved so far."""
        with self._store.read() as conn:
            row = conn.execute("SELECT reserved FROM budgets WHERE scope = %s", [scope]).fetchone()
        return float(row["reserved"]) if row is not None else 0.0

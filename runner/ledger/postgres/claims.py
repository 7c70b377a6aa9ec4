"""Job claims in the PostgreSQL ledger (see ``runner.ledger.claims``).

Many processes on many hosts claim from one database at once. A claim reads the claimable
rows with ``FOR UPDATE SKIP LOCKED``: rows another process is claiming (or changing) right
now are skipped rather than waited for, so claimers never queue behind each other and never
get the same job.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from runner.ledger.claims import (
    CLAIM_ORDER,
    CLAIMABLE,
    Claim,
    ManifestRecord,
    Resolved,
    claimable_where,
    lease_end,
    takeover_note,
)
from runner.ledger.models import JobRow
from runner.ledger.postgres.limits import AccountLimits
from runner.ledger.postgres.souls import SoulsAndUploads
from runner.ledger.rows import note_event
from runner.ledger.status import JobStatus


class JobClaims(SoulsAndUploads):
    """``claim``, ``renew``, ``release`` and ``claim_of``; ``PostgresLedger`` builds on this."""

    def claim(
        self,
        manifest: str,
        holder: str,
        *,
        lease: float,
        limit: int | None = None,
        keys: Collection[str] | None = None,
    ) -> list[JobRow]:
        """Claim up to ``limit`` claimable jobs of ``manifest`` (of ``keys``, if given) for
        ``holder`` for ``lease`` seconds; see ``Ledger.claim``."""
        now = self._store.now()
        # Leases in the server's time: hosts' clocks need not agree (see Store.server_clock).
        wheres = ["manifest = %s", "status = ANY(%s)", claimable_where("%s")]
        params: list[Any] = [manifest, [s.value for s in CLAIMABLE], self._store.server_now()]
        if keys is not None:
            wheres.append("key = ANY(%s)")
            params.append(list(keys))
        query = f"SELECT * FROM jobs WHERE {' AND '.join(wheres)} ORDER BY {CLAIM_ORDER}"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        until = lease_end(self._store.server_clock, lease)
        with self._store.write() as conn:
            found = conn.execute(query + " FOR UPDATE SKIP LOCKED", params).fetchall()
            conn.execute(
                "UPDATE jobs SET claimed_by = %s, lease_until = %s WHERE key = ANY(%s)",
                [holder, until, [r["key"] for r in found]],
            )
            rows = []
            for raw in found:
                row = JobRow.from_row(raw)
                detail = takeover_note(row, raw["claimed_by"], raw["lease_until"], holder)
                if detail is not None:
                    event = note_event(row, detail, now)
                    conn.execute(
                        "INSERT INTO events (job_key, at, from_status, to_status, detail)"
                        " VALUES (%(job_key)s, %(at)s, %(from_status)s, %(to_status)s,"
                        " %(detail)s)",
                        event,
                    )
                rows.append(row)
        return rows

    def renew(self, holder: str, keys: Collection[str], *, lease: float) -> set[str]:
        """Extend ``holder``'s lease on ``keys``; return those it still holds."""
        if not keys:
            return set()
        until = lease_end(self._store.server_clock, lease)
        with self._store.write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET lease_until = %s WHERE claimed_by = %s AND key = ANY(%s)"
                " RETURNING key",
                [until, holder, list(keys)],
            ).fetchall()
        return {str(r["key"]) for r in rows}

    def release(self, holder: str, keys: Collection[str]) -> None:
        """Give up ``holder``'s claims on ``keys`` (a claim another holder took is left)."""
        if not keys:
            return
        with self._store.write() as conn:
            conn.execute(
                "UPDATE jobs SET claimed_by = NULL, lease_until = NULL"
                " WHERE claimed_by = %s AND key = ANY(%s)",
                [holder, list(keys)],
            )

    def shared_limits(self) -> AccountLimits:
        """The per-account limits every process on this database shares."""
        return AccountLimits(self._store)

    def record_manifest(
        self, path: str, *, source: str, output: str, resolved: Resolved | None = None
    ) -> None:
        """Record (or replace) what workers need of a manifest; see ``ManifestRecord``."""
        now = self._store.now()
        with self._store.write() as conn:
            conn.execute(
                "INSERT INTO manifests (path, source, output, scope, recorded_at, resolved)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET"
                " source = EXCLUDED.source, output = EXCLUDED.output, scope = EXCLUDED.scope,"
                " recorded_at = EXCLUDED.recorded_at, resolved = EXCLUDED.resolved",
                [path, source, output, f"{path}@{now}", now, (resolved or Resolved()).to_json()],
            )

    def recorded_manifests(self) -> list[ManifestRecord]:
        """Every manifest `run` or `enqueue` recorded, by path."""
        with self._store.read() as conn:
            rows = conn.execute("SELECT * FROM manifests ORDER BY path").fetchall()
        return [ManifestRecord.from_row(dict(row)) for row in rows]

    def unclaimed(self, manifest: str, statuses: Collection[JobStatus]) -> list[str]:
        """Keys of ``manifest``'s jobs in ``statuses`` that nobody holds; see ``Ledger``."""
        query = (
            "SELECT key FROM jobs WHERE manifest = %s AND status = ANY(%s)"
            f" AND {claimable_where('%s')} ORDER BY {CLAIM_ORDER}"
        )
        params = [manifest, [s.value for s in statuses], self._store.server_now()]
        with self._store.read() as conn:
            return [str(r["key"]) for r in conn.execute(query, params).fetchall()]

    def claim_of(self, key: str) -> Claim | None:
        """Who holds the job ``key`` and until when, or ``None`` if nobody does."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT claimed_by, lease_until FROM jobs WHERE key = %s", [key]
            ).fetchone()
        if row is None or row["claimed_by"] is None:
            return None
        return Claim(str(row["claimed_by"]), str(row["lease_until"]))

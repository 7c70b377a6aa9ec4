"""Job claims in the SQLite ledger (see ``runner.ledger.claims``).

One process executes against a SQLite ledger (the flock of ``executor_lock``), so a claim is a
plain UPDATE inside one write transaction; it still records who works on what, like
PostgreSQL, so the executor is the same whatever the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Collection

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
from runner.ledger.rows import note_event
from runner.ledger.sqlite.souls import SoulsAndUploads
from runner.ledger.status import JobStatus


def _in(keys: Collection[str]) -> tuple[str, str]:
    # One JSON parameter instead of one "?" per key: no limit on how many keys are given.
    return "key IN (SELECT value FROM json_each(?))", json.dumps(list(keys))


class JobClaims(SoulsAndUploads):
    """``claim``, ``renew``, ``release`` and ``claim_of``; ``SqliteLedger`` builds on this."""

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
        statuses = json.dumps([s.value for s in CLAIMABLE])
        # With keys, "+manifest" keeps SQLite on the key index: by the manifest's it would
        # read every job of the manifest for each claim (O(jobs) each; 20 ms at 20,000).
        by = "+manifest" if keys is not None else "manifest"
        wheres = [f"{by} = ?", "status IN (SELECT value FROM json_each(?))"]
        params: list[object] = [manifest, statuses]
        wheres.append(claimable_where("?"))
        params.append(now)
        if keys is not None:
            where, value = _in(keys)
            wheres.append(where)
            params.append(value)
        query = f"SELECT * FROM jobs WHERE {' AND '.join(wheres)} ORDER BY {CLAIM_ORDER}"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        until = lease_end(self._store.clock, lease)
        with self._store.write() as db:
            found = list(db.query(query, params))
            picked = [str(r["key"]) for r in found]
            where, value = _in(picked)
            self._store.conn.execute(
                f"UPDATE jobs SET claimed_by = ?, lease_until = ? WHERE {where}",
                [holder, until, value],
            )
            rows = []
            for raw in found:
                row = JobRow.from_row(raw)
                detail = takeover_note(row, raw["claimed_by"], raw["lease_until"], holder)
                if detail is not None:
                    db.table("events").insert(note_event(row, detail, now))
                rows.append(row)
        return rows

    def renew(self, holder: str, keys: Collection[str], *, lease: float) -> set[str]:
        """Extend ``holder``'s lease on ``keys``; return those it still holds."""
        if not keys:
            return set()
        until = lease_end(self._store.clock, lease)
        where, value = _in(keys)
        conn = self._store.conn
        with self._store.write():
            conn.execute(
                f"UPDATE jobs SET lease_until = ? WHERE claimed_by = ? AND {where}",
                [until, holder, value],
            )
            held = conn.execute(
                f"SELECT key FROM jobs WHERE claimed_by = ? AND {where}", [holder, value]
            )
            return {str(r[0]) for r in held}

    def release(self, holder: str, keys: Collection[str]) -> None:
        """Give up ``holder``'s claims on ``keys`` (a claim another holder took is left)."""
        if not keys:
            return
        where, value = _in(keys)
        with self._store.write():
            self._store.conn.execute(
                f"UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?"
                f" AND {where}",
                [holder, value],
            )

    def release_all(self) -> None:
        """Void every claim: called with the executor lock just taken, when no other process
        can be executing, so a claim left behind is a dead process's (no lease to wait out)."""
        with self._store.write() as db:
            if "claimed_by" in db.table("jobs").columns_dict:  # not before m009
                self._store.conn.execute(
                    "UPDATE jobs SET claimed_by = NULL, lease_until = NULL"
                    " WHERE claimed_by IS NOT NULL"
                )

    def shared_limits(self) -> None:
        """None: one process executes, and its own throttle and slots are the account's."""
        return None

    def record_manifest(
        self, path: str, *, source: str, output: str, resolved: Resolved | None = None
    ) -> None:
        """Record (or replace) what workers need of a manifest; see ``ManifestRecord``."""
        now = self._store.now()
        with self._store.write():
            self._store.conn.execute(
                "INSERT INTO manifests (path, source, output, scope, recorded_at, resolved)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
                " source = excluded.source,"
                " output = excluded.output, scope = excluded.scope,"
                " recorded_at = excluded.recorded_at, resolved = excluded.resolved",
                [path, source, output, f"{path}@{now}", now, (resolved or Resolved()).to_json()],
            )

    def recorded_manifests(self) -> list[ManifestRecord]:
        """Every manifest `run` or `enqueue` recorded, by path."""
        with self._store.read() as db:
            rows = list(db.query("SELECT * FROM manifests ORDER BY path"))
        return [ManifestRecord.from_row(dict(row)) for row in rows]

    def unclaimed(self, manifest: str, statuses: Collection[JobStatus]) -> list[str]:
        """Keys of ``manifest``'s jobs in ``statuses`` that nobody holds; see ``Ledger``."""
        query = (
            "SELECT key FROM jobs WHERE manifest = ? AND status IN (SELECT value FROM"
            f" json_each(?)) AND {claimable_where('?')} ORDER BY {CLAIM_ORDER}"
        )
        params = [manifest, json.dumps([s.value for s in statuses]), self._store.now()]
        with self._store.read() as db:
            return [str(r["key"]) for r in db.query(query, params)]

    def claim_of(self, key: str) -> Claim | None:
        """Who holds the job ``key`` and until when, or ``None`` if nobody does."""
        with self._store.read() as db:
            rows = list(db.query("SELECT claimed_by, lease_until FROM jobs WHERE key = ?", [key]))
        if not rows or rows[0]["claimed_by"] is None:
            return None
        return Claim(str(rows[0]["claimed_by"]), str(rows[0]["lease_until"]))

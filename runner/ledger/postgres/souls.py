"""Soul models and uploads in the PostgreSQL ledger: small tables beside the jobs."""

from __future__ import annotations

from runner.ledger.models import SoulRow
from runner.ledger.postgres.store import Store
from runner.ledger.shell import LedgerShell


class SoulsAndUploads(LedgerShell[Store]):
    """The ``souls`` and ``uploads`` tables; ``PostgresLedger`` builds on this."""

    def get_soul(self, name: str, manifest: str) -> SoulRow | None:
        """The soul model recorded for ``souls.<name>`` of this manifest, or ``None``."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT * FROM souls WHERE manifest = %s AND name = %s", [manifest, name]
            ).fetchone()
        return SoulRow.from_row(row) if row is not None else None

    def souls(self, manifest: str | None = None) -> list[SoulRow]:
        """Every soul record (of one manifest, if given), by manifest and name."""
        where, params = ("WHERE manifest = %s", [manifest]) if manifest is not None else ("", [])
        with self._store.read() as conn:
            rows = conn.execute(f"SELECT * FROM souls {where} ORDER BY manifest, name", params)
            return [SoulRow.from_row(row) for row in rows]

    def set_soul(
        self,
        name: str,
        manifest: str,
        *,
        status: str,
        model_id: str | None = None,
        error: str | None = None,
        images_hash: str | None = None,
        idempotency_key: str | None = None,
    ) -> SoulRow:
        """Record a soul model's state, replacing every field but ``created_at``."""
        now = self._store.now()
        with self._store.write() as conn:
            row = conn.execute(
                "INSERT INTO souls (name, manifest, model_id, status, error, images_hash,"
                " idempotency_key, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (manifest, name) DO UPDATE SET model_id = EXCLUDED.model_id,"
                " status = EXCLUDED.status, error = EXCLUDED.error,"
                " images_hash = EXCLUDED.images_hash, idempotency_key = EXCLUDED.idempotency_key,"
                " updated_at = EXCLUDED.updated_at RETURNING *",
                [name, manifest, model_id, status, error, images_hash, idempotency_key, now, now],
            ).fetchone()
        assert row is not None
        return SoulRow.from_row(row)

    def get_upload(self, sha256: str) -> str | None:
        """The public URL of a local file already uploaded, by the sha256 of its content."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT public_url FROM uploads WHERE sha256 = %s", [sha256]
            ).fetchone()
        return str(row["public_url"]) if row is not None else None

    def record_upload(self, sha256: str, url: str) -> str:
        """Remember where a local file's content was uploaded, unless recorded before; return
        the URL in effect (the first one)."""
        with self._store.write() as conn:
            conn.execute(
                "INSERT INTO uploads (sha256, public_url, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                [sha256, url, self._store.now()],
            )
        return self.get_upload(sha256) or url

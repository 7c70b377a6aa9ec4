"""Soul models and uploads in the SQLite ledger: small tables beside the jobs."""

from __future__ import annotations

from runner.ledger.models import SoulRow
from runner.ledger.shell import LedgerShell
from runner.ledger.sqlite.store import Store


class SoulsAndUploads(LedgerShell[Store]):
    """The ``souls`` and ``uploads`` tables; ``SqliteLedger`` builds on this."""

    def get_soul(self, name: str, manifest: str) -> SoulRow | None:
        """The soul model recorded for ``souls.<name>`` of this manifest, or ``None``."""
        with self._store.read() as db:
            rows = list(db.table("souls").rows_where("manifest = ? AND name = ?", [manifest, name]))
        return SoulRow.from_row(rows[0]) if rows else None

    def souls(self, manifest: str | None = None) -> list[SoulRow]:
        """Every soul record (of one manifest, if given), by manifest and name."""
        where, params = ("manifest = ?", [manifest]) if manifest is not None else (None, [])
        with self._store.read() as db:
            rows = db.table("souls").rows_where(where, params, order_by="manifest, name")
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
        with self._store.write() as db:
            old = self.get_soul(name, manifest)
            now = self._store.now()
            db.table("souls").upsert(
                {
                    "name": name,
                    "manifest": manifest,
                    "model_id": model_id,
                    "status": status,
                    "error": error,
                    "images_hash": images_hash,
                    "idempotency_key": idempotency_key,
                    "created_at": old.created_at if old else now,
                    "updated_at": now,
                },
                pk=("manifest", "name"),
            )
            soul = self.get_soul(name, manifest)
        assert soul is not None
        return soul

    def get_upload(self, sha256: str) -> str | None:
        """The public URL of a local file already uploaded, by the sha256 of its content."""
        with self._store.read() as db:
            rows = list(db.table("uploads").rows_where("sha256 = ?", [sha256]))
        return str(rows[0]["public_url"]) if rows else None

    def record_upload(self, sha256: str, url: str) -> str:
        """Remember where a local file's content was uploaded, unless recorded before; return
        the URL in effect (the first one)."""
        with self._store.write() as db:
            db.table("uploads").insert(
                {"sha256": sha256, "public_url": url, "created_at": self._store.now()},
                pk="sha256",
                ignore=True,
            )
        return self.get_upload(sha256) or url

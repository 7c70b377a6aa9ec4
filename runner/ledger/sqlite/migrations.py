"""The SQLite ledger's schema, as an append-only list of named migrations.

Never edit or reorder a migration that has shipped: add a new one at the end. Each applied
migration's name is recorded in ``_migrations``, so opening a ledger applies only what it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlite_utils import Database

from runner.ledger.rows import LEDGER_ID, new_ledger_id

Migration = Callable[[Database], None]

MIGRATIONS_TABLE = "_migrations"
#: Migrations that only add or replace indexes: a ledger lacking them gives a reader the same
#: rows (a little more slowly), so a read-only open does not refuse it; the next run applies
#: them.
INDEXES_ONLY = frozenset({"m016_jobs_order_index"})
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its ``__name__`` is what gets recorded."""
    MIGRATIONS.append(fn)
    return fn


def applied_migrations(db: Database) -> set[str]:
    """Names of the migrations already applied to ``db`` (empty for a fresh database)."""
    if not db.table(MIGRATIONS_TABLE).exists():
        return set()
    return {row["name"] for row in db.table(MIGRATIONS_TABLE).rows}


def pending_migrations(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Names of ``migrations`` that ``db`` has not had yet, in order."""
    done = applied_migrations(db)
    return [fn.__name__ for fn in migrations if fn.__name__ not in done]


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations ``db`` lacks, in order; return their names.

    The caller holds the write transaction, so two processes opening a fresh ledger at once
    cannot both apply the same migration.
    """
    table = db.table(MIGRATIONS_TABLE)
    if not table.exists():
        table.create({"name": str, "applied_at": str}, pk="name")
    done = applied_migrations(db)
    applied = []
    for fn in migrations:
        if fn.__name__ in done:
            continue
        fn(db)
        table.insert({"name": fn.__name__, "applied_at": datetime.now(UTC).isoformat()})
        applied.append(fn.__name__)
    return applied


@migration
def m001_jobs(db: Database) -> None:
    db.table("jobs").create(
        {
            "key": str,
            "campaign": str,
            "manifest": str,
            "job_index": int,
            "request": str,  # JSON
            "vars": str,  # JSON: the matrix row
            "path": str,
            "status": str,
            "generation_id": str,
            "idempotency_key": str,
            "attempts": int,
            "error": str,
            "video_url": str,
            "bytes": int,
            "sha256": str,
            "credits": float,
            "soul": str,
            "tags": str,  # JSON list
            "variant": int,
            "created_at": str,
            "updated_at": str,
        },
        pk="key",
        not_null={
            "campaign",
            "manifest",
            "job_index",
            "request",
            "vars",
            "path",
            "status",
            "idempotency_key",
            "attempts",
            "credits",
            "tags",
            "created_at",
            "updated_at",
        },
        defaults={"attempts": 0, "credits": 0.0, "tags": "[]"},
    )


@migration
def m002_events(db: Database) -> None:
    db.table("events").create(
        {
            "id": int,
            "job_key": str,
            "at": str,
            "from_status": str,
            "to_status": str,
            "detail": str,
        },
        pk="id",
        not_null={"job_key", "at", "to_status"},
    )


@migration
def m003_souls(db: Database) -> None:
    db.table("souls").create(
        {
            "name": str,
            "manifest": str,
            "model_id": str,
            "status": str,
            "error": str,
            "images_hash": str,
            "created_at": str,
            "updated_at": str,
        },
        pk=("manifest", "name"),
        not_null={"name", "manifest", "status", "created_at", "updated_at"},
    )


@migration
def m004_uploads(db: Database) -> None:
    db.table("uploads").create(
        {"sha256": str, "public_url": str, "created_at": str},
        pk="sha256",
        not_null={"public_url", "created_at"},
    )


@migration
def m005_indexes(db: Database) -> None:
    db.table("jobs").create_index(["manifest", "job_index"])
    db.table("jobs").create_index(["status"])
    db.table("jobs").create_index(["campaign"])
    db.table("events").create_index(["job_key", "id"])


@migration
def m006_jobs_location(db: Database) -> None:
    # Where a downloaded video is (an absolute path or an s3:// URI); NULL on older rows.
    db.table("jobs").add_column("location", str)


@migration
def m007_ledger_id(db: Database) -> None:
    # The ledger's own random id, in every new idempotency key; keys already committed (a
    # job in `submitting` may be paid for under its key) are left as they are.
    db.table("meta").create({"name": str, "value": str}, pk="name", not_null={"value"})
    db.table("meta").insert({"name": LEDGER_ID, "value": new_ledger_id()})


@migration
def m008_jobs_expires_at(db: Database) -> None:
    # When the provider drops a finished result (ISO 8601), where it says; NULL otherwise.
    db.table("jobs").add_column("expires_at", str)


@migration
def m009_prior_generations_pricing_soul_keys(db: Database) -> None:
    # A retried job remembers its failed attempt's generation (asked for before paying again);
    # every job says which source priced its credits (SPEC v2 §6); a soul is committed with
    # its training's idempotency key before the POST (SPEC v2 §4).
    db.table("jobs").add_column("prior_generation_id", str)
    db.table("jobs").add_column("priced_by", str)
    db.table("souls").add_column("idempotency_key", str)


@migration
def m010_job_claims(db: Database) -> None:
    # Which process works on a job now and until when its lease runs (ISO 8601): see
    # runner/ledger/claims.py. NULL when nobody does.
    db.table("jobs").add_column("claimed_by", str)
    db.table("jobs").add_column("lease_until", str)


@migration
def m011_account_limits(db: Database) -> None:
    # The tables PostgreSQL's processes share per account (runner/ledger/postgres/limits.py),
    # kept here so both schemas stay the same; one SQLite executor keeps them in memory.
    db.table("account_slots").create(
        {"job_key": str, "account": str, "taken_at": str},
        pk="job_key",
        not_null={"account", "taken_at"},
    )
    db.table("account_slots").create_index(["account"])
    db.table("account_rates").create({"account": str, "next_call": float}, pk="account")
    db.table("budgets").create({"scope": str, "reserved": float}, pk="scope")


@migration
def m012_manifests(db: Database) -> None:
    # What `run` and `enqueue` recorded of each manifest, so that `runner worker` needs only
    # the ledger: its YAML, where its videos go, its budget scope.
    db.table("manifests").create(
        {"path": str, "source": str, "output": str, "scope": str, "recorded_at": str},
        pk="path",
        not_null={"source", "output", "scope", "recorded_at"},
    )


@migration
def m013_account_concurrency(db: Database) -> None:
    # Each manifest's limits.concurrency on each account it runs on (PostgreSQL uses it).
    db.table("account_concurrency").create(
        {"account": str, "manifest": str, "concurrency": int},
        pk=("account", "manifest"),
        not_null={"concurrency"},
    )


@migration
def m014_manifest_resolved(db: Database) -> None:
    # What the recording host resolved of a manifest from its disk (runner/ledger/claims.py
    # ``Resolved``, as JSON): its local files' public URLs, its souls' images, its finishing
    # jobs; NULL on older records.
    db.table("manifests").add_column("resolved", str)


@migration
def m015_account_pauses(db: Database) -> None:
    # Until when an account's calls wait, from a Retry-After any process received
    # (PostgreSQL uses it: runner/ledger/postgres/limits.py); 0: no pause.
    db.table("account_rates").add_column("paused_until", float, not_null_default=0.0)


@migration
def m016_jobs_order_index(db: Database) -> None:
    # Reads of many jobs go in JOB_ORDER (manifest, job_index, key): with the key in the index
    # SQLite walks it in that order instead of sorting each job_index's rows again (about a
    # fifth of reading 100,000 briefs). It replaces the (manifest, job_index) index.
    db.execute("CREATE INDEX idx_jobs_manifest_order ON jobs (manifest, job_index, key)")
    db.execute("DROP INDEX IF EXISTS idx_jobs_manifest_job_index")

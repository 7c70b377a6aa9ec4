"""The PostgreSQL ledger's schema, as an append-only list of named migrations.

The same tables, columns and migration names as the SQLite ledger (``sqlite/migrations.py``),
in PostgreSQL's types:

- JSON columns (``request``, ``vars``, ``tags``) are ``json``, not ``jsonb``: ``json`` keeps the
  text as written, so key order (a matrix row's order) comes back exactly as SQLite gives it,
  and ``->``/``->>`` still query it. Times are ``timestamptz`` (written and read back as the
  same UTC ISO 8601 strings SQLite stores; see store.py).
- Keys, campaigns, manifests and soul names sort with ``COLLATE "C"`` (code point order),
  whatever the database's locale, so lists come out in the same order as from SQLite.

Never edit or reorder a migration that has shipped: add a new one at the end. Each applied
migration's name is recorded in ``_migrations``; :func:`migrate` applies what is missing in
one transaction, under an advisory lock, so processes starting together apply each once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from runner.ledger.rows import LEDGER_ID, new_ledger_id

Connection = psycopg.Connection[dict[str, Any]]
Migration = Callable[[Connection], None]

MIGRATIONS_TABLE = "_migrations"
#: Migrations that only add or replace indexes: a ledger lacking them gives a reader the same
#: rows (a little more slowly), so a read-only open does not refuse it; the next run applies
#: them.
INDEXES_ONLY = frozenset({"m016_jobs_order_index"})
MIGRATIONS: list[Migration] = []

#: The advisory lock (of the ledger's database only) held while migrating: "runner", then 1.
MIGRATION_LOCK = 0x72756E6E65720001


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its ``__name__`` is what gets recorded."""
    MIGRATIONS.append(fn)
    return fn


def applied_migrations(conn: Connection) -> set[str]:
    """Names of the migrations already applied (empty for a database without a ledger)."""
    found = conn.execute("SELECT to_regclass(%s) AS t", [MIGRATIONS_TABLE]).fetchone()
    if found is None or found["t"] is None:
        return set()
    return {row["name"] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}


def pending_migrations(conn: Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Names of ``migrations`` the database has not had yet, in order."""
    done = applied_migrations(conn)
    return [fn.__name__ for fn in migrations if fn.__name__ not in done]


def migrate(conn: Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations the database lacks, in order; return their names.

    The caller holds a transaction (DDL is transactional in PostgreSQL: all or nothing).
    The advisory lock makes a second process wait here and then find nothing left to do.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = applied_migrations(conn)
    applied = []
    for fn in migrations:
        if fn.__name__ in done:
            continue
        fn(conn)
        conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES (%s)", [fn.__name__])
        applied.append(fn.__name__)
    return applied


@migration
def m001_jobs(conn: Connection) -> None:
    conn.execute(
        """
        CREATE TABLE jobs (
            key text COLLATE "C" PRIMARY KEY,
            campaign text COLLATE "C" NOT NULL,
            manifest text COLLATE "C" NOT NULL,
            job_index integer NOT NULL,
            request json NOT NULL,
            vars json NOT NULL,
            path text NOT NULL,
            status text NOT NULL,
            generation_id text,
            idempotency_key text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            error text,
            video_url text,
            bytes bigint,
            sha256 text,
            credits double precision NOT NULL DEFAULT 0,
            soul text,
            tags json NOT NULL DEFAULT '[]',
            variant integer,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )
        """
    )


@migration
def m002_events(conn: Connection) -> None:
    conn.execute(
        """
        CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job_key text COLLATE "C" NOT NULL,
            at timestamptz NOT NULL,
            from_status text,
            to_status text NOT NULL,
            detail text
        )
        """
    )


@migration
def m003_souls(conn: Connection) -> None:
    conn.execute(
        """
        CREATE TABLE souls (
            name text COLLATE "C" NOT NULL,
            manifest text COLLATE "C" NOT NULL,
            model_id text,
            status text NOT NULL,
            error text,
            images_hash text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (manifest, name)
        )
        """
    )


@migration
def m004_uploads(conn: Connection) -> None:
    conn.execute(
        """
        CREATE TABLE uploads (
            sha256 text PRIMARY KEY,
            public_url text NOT NULL,
            created_at timestamptz NOT NULL
        )
        """
    )


@migration
def m005_indexes(conn: Connection) -> None:
    conn.execute("CREATE INDEX idx_jobs_manifest_job_index ON jobs (manifest, job_index)")
    conn.execute("CREATE INDEX idx_jobs_status ON jobs (status)")
    conn.execute("CREATE INDEX idx_jobs_campaign ON jobs (campaign)")
    conn.execute("CREATE INDEX idx_events_job_key_id ON events (job_key, id)")


@migration
def m006_jobs_location(conn: Connection) -> None:
    # Where a downloaded video is (an absolute path or an s3:// URI); NULL on older rows.
    conn.execute("ALTER TABLE jobs ADD COLUMN location text")


@migration
def m007_ledger_id(conn: Connection) -> None:
    # The ledger's own random id, in every new idempotency key; keys already committed (a
    # job in `submitting` may be paid for under its key) are left as they are.
    conn.execute('CREATE TABLE meta (name text COLLATE "C" PRIMARY KEY, value text NOT NULL)')
    conn.execute("INSERT INTO meta (name, value) VALUES (%s, %s)", [LEDGER_ID, new_ledger_id()])


@migration
def m008_jobs_expires_at(conn: Connection) -> None:
    # When the provider drops a finished result (ISO 8601), where it says; NULL otherwise.
    conn.execute("ALTER TABLE jobs ADD COLUMN expires_at text")


@migration
def m009_prior_generations_pricing_soul_keys(conn: Connection) -> None:
    # A retried job remembers its failed attempt's generation (asked for before paying again);
    # every job says which source priced its credits (SPEC v2 §6); a soul is committed with
    # its training's idempotency key before the POST (SPEC v2 §4).
    conn.execute("ALTER TABLE jobs ADD COLUMN prior_generation_id text")
    conn.execute("ALTER TABLE jobs ADD COLUMN priced_by text")
    conn.execute("ALTER TABLE souls ADD COLUMN idempotency_key text")


@migration
def m010_job_claims(conn: Connection) -> None:
    # Which process works on a job now and until when its lease runs: see
    # runner/ledger/claims.py. NULL when nobody does.
    conn.execute("ALTER TABLE jobs ADD COLUMN claimed_by text")
    conn.execute("ALTER TABLE jobs ADD COLUMN lease_until timestamptz")


@migration
def m011_account_limits(conn: Connection) -> None:
    # What many processes share per provider account (runner/ledger/postgres/limits.py): a
    # slot per generation in flight, the moment the next call may go, and credits reserved.
    conn.execute(
        'CREATE TABLE account_slots (job_key text COLLATE "C" PRIMARY KEY,'
        " account text NOT NULL, taken_at timestamptz NOT NULL)"
    )
    conn.execute("CREATE INDEX idx_account_slots_account ON account_slots (account)")
    conn.execute(
        "CREATE TABLE account_rates (account text PRIMARY KEY, next_call double precision NOT NULL)"
    )
    conn.execute(
        'CREATE TABLE budgets (scope text COLLATE "C" PRIMARY KEY,'
        " reserved double precision NOT NULL DEFAULT 0)"
    )


@migration
def m012_manifests(conn: Connection) -> None:
    # What `run` and `enqueue` recorded of each manifest, so that `runner worker` needs only
    # the ledger (runner/ledger/claims.py): its YAML, where its videos go, its budget scope.
    conn.execute(
        'CREATE TABLE manifests (path text COLLATE "C" PRIMARY KEY, source text NOT NULL,'
        " output text NOT NULL, scope text NOT NULL, recorded_at timestamptz NOT NULL)"
    )


@migration
def m013_account_concurrency(conn: Connection) -> None:
    # Each manifest's limits.concurrency on each account it runs on: an account's slots are
    # the smallest of those of its manifests with work left (runner/ledger/postgres/limits.py).
    conn.execute(
        'CREATE TABLE account_concurrency (account text NOT NULL, manifest text COLLATE "C"'
        " NOT NULL, concurrency integer NOT NULL, PRIMARY KEY (account, manifest))"
    )


@migration
def m014_manifest_resolved(conn: Connection) -> None:
    # What the recording host resolved of a manifest from its disk (runner/ledger/claims.py
    # ``Resolved``, as JSON): its local files' public URLs, its souls' images, its finishing
    # jobs; NULL on older records.
    conn.execute("ALTER TABLE manifests ADD COLUMN resolved text")


@migration
def m015_account_pauses(conn: Connection) -> None:
    # Until when an account's calls wait (the server's epoch seconds), from a Retry-After any
    # process received (runner/ledger/postgres/limits.py); 0: no pause.
    conn.execute(
        "ALTER TABLE account_rates ADD COLUMN paused_until double precision NOT NULL DEFAULT 0"
    )


@migration
def m016_jobs_order_index(conn: Connection) -> None:
    # Reads of many jobs go in JOB_ORDER (manifest, job_index, key): an index in that order
    # (as SQLite's) replaces the (manifest, job_index) one.
    conn.execute("CREATE INDEX idx_jobs_manifest_order ON jobs (manifest, job_index, key)")
    conn.execute("DROP INDEX IF EXISTS idx_jobs_manifest_job_index")

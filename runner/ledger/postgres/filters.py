"""The WHERE clauses of the PostgreSQL ledger's job queries."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from runner.ledger.base import StatusFilter
from runner.ledger.rows import name_values, status_values

JOB_ORDER = "ORDER BY manifest, job_index, key"


def job_filter(
    status: StatusFilter | None,
    campaign: str | Iterable[str] | None,
    manifest: str | None,
    keys: Collection[str] | None,
) -> tuple[str | None, list[Any]]:
    """The WHERE clause (``None``: every job) and its parameters of a ``jobs()`` filter."""
    wheres: list[str] = []
    params: list[Any] = []
    if status is not None:
        wheres.append("status = ANY(%s)")
        params.append(status_values(status))
    if campaign is not None:
        wheres.append("campaign = ANY(%s)")
        params.append(name_values(campaign))
    if manifest is not None:
        wheres.append("manifest = %s")
        params.append(manifest)
    if keys is not None:
        wheres.append("key = ANY(%s)")
        params.append(list(keys))
    return " AND ".join(wheres) or None, params

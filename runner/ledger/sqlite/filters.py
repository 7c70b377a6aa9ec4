"""The WHERE clauses of the SQLite ledger's job queries."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from typing import Any

from runner.ledger.base import StatusFilter
from runner.ledger.rows import name_values, status_values

JOB_ORDER = "ORDER BY manifest, job_index, key"
KEYS_IN_SQL = 1000  # a keys filter longer than this is applied to the rows read


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def in_json(column: str) -> str:
    # One JSON parameter instead of one "?" per value: no limit on how many keys a filter holds.
    return f"{column} IN (SELECT value FROM json_each(?))"


def job_filter(
    status: StatusFilter | None,
    campaign: str | Iterable[str] | None,
    manifest: str | None,
    keys: Collection[str] | None,
) -> tuple[str | None, list[Any], Callable[[Any], bool] | None]:
    """The WHERE clause (``None``: every job), its parameters, and what to keep of the rows it
    gives, of a ``jobs()`` filter. Many keys are looked up in Python, not in the query: SQLite
    then reads the rows in index order instead of sorting them all again."""
    wheres: list[str] = []
    params: list[Any] = []
    if status is not None:
        wheres.append(in_json("status"))
        params.append(json_text(status_values(status)))
    if campaign is not None:
        wheres.append(in_json("campaign"))
        params.append(json_text(name_values(campaign)))
    if manifest is not None:
        wheres.append("manifest = ?")
        params.append(manifest)
    keep = None
    if keys is not None and len(keys) > KEYS_IN_SQL:
        wanted = set(keys)
        keep = lambda values: values[0] in wanted  # noqa: E731  (values[0] is the key)
    elif keys is not None:
        wheres.append(in_json("key"))
        params.append(json_text(list(keys)))
    return " AND ".join(wheres) or None, params, keep

"""Matrix rows with GitHub Actions ``strategy.matrix`` semantics.

1. The cartesian product of the plain keys, first key outermost, in declaration order.
2. ``exclude`` drops every combination that matches all keys of an entry (partial match).
3. Each ``include`` entry extends every remaining combination whose *original* values it does
   not overwrite; values added by an earlier include may be overwritten. An entry that fits no
   combination becomes a row of its own, which later includes never extend.

Both run in time linear in rows plus entries: exclude entries and include lookups are grouped
by the keys they name and matched through hash tables of canonical values, never compared
entry by entry with every row (200,000 exclude entries cost seconds, not hours).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.manifest.positions import FieldPath, Where


@dataclass
class Row:
    """One matrix row: its values, and where each value was written."""

    values: dict[str, Any]
    sources: dict[str, Where] = field(default_factory=dict)
    origin: Where | None = None  # the row as a whole: an include entry, a CSV line


def same(a: Any, b: Any) -> bool:
    """Equality that tells ``1`` from ``true`` and ``1.0`` (as the job key does)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def row_bound(axes: Mapping[str, Sequence[Any]], include: Sequence[Any]) -> int:
    """Most rows a matrix can make, computed without building any (exclude only removes)."""
    product = math.prod(len(values) for values in axes.values()) if axes else 0
    return product + len(include)


def canonical(value: Any) -> str:
    """The value as ``same`` compares it: canonical JSON."""
    return json.dumps(value, sort_keys=True)


def expand_matrix(
    axes: Mapping[str, Sequence[Any]],
    include: Sequence[Mapping[str, Any]],
    exclude: Sequence[Mapping[str, Any]],
    *,
    where: Callable[[FieldPath], Where],
    base: FieldPath,
) -> list[Row]:
    """The rows of one matrix; ``where(base + (...))`` locates each value for errors."""
    rows: list[Row] = []
    canon_rows: list[dict[str, str]] = []  # each row's original values, canonical
    keys = list(axes)
    if keys:
        columns = [axes[k] for k in keys]
        excluded = _group(exclude)
        # canonical values only where something compares them: exclude, include
        compared = bool(excluded or include)
        canonicals = [[canonical(v) for v in column] for column in columns] if compared else []
        whole = where(base)
        # the same product three times, in step: values, where each is written, canonical
        for values, written, canon_values in zip(
            itertools.product(*columns),
            itertools.product(*[[where((*base, k, j)) for j in range(len(axes[k]))] for k in keys]),
            itertools.product(*canonicals) if compared else itertools.repeat(()),
            strict=False,  # repeat() has no end
        ):
            if compared:
                canon = dict(zip(keys, canon_values, strict=True))
                if excluded and any(
                    tuple(canon.get(k, "\0") for k in group) in matched
                    for group, matched in excluded.items()
                ):
                    continue
                canon_rows.append(canon)
            rows.append(
                Row(
                    dict(zip(keys, values, strict=True)),
                    dict(zip(keys, written, strict=True)),
                    whole,
                )
            )
    extra: list[Row] = []
    fits = _FitIndex(canon_rows)
    for i, entry in enumerate(include):
        entry_path = (*base, "include", i)
        sources = {k: where((*entry_path, k)) for k in entry}
        fitted = fits.rows(entry, keys)
        for r in fitted:
            rows[r].values.update(entry)
            rows[r].sources.update(sources)
        if not fitted:
            extra.append(Row(dict(entry), dict(sources), where(entry_path)))
    return rows + extra


def _group(entries: Sequence[Mapping[str, Any]]) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    """Entries grouped by the keys they name: key tuple → canonical value tuples."""
    groups: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for entry in entries:
        group = tuple(sorted(entry))
        groups.setdefault(group, set()).add(tuple(canonical(entry[k]) for k in group))
    return groups


class _FitIndex:
    """Which rows an include entry fits: rows whose original values agree with the entry on
    every matrix key the entry names, looked up by those keys' canonical values."""

    def __init__(self, canon_rows: list[dict[str, str]]) -> None:
        self.canon_rows = canon_rows
        self.indexes: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}

    def rows(self, entry: Mapping[str, Any], keys: Sequence[str]) -> list[int]:
        group = tuple(sorted(k for k in entry if k in keys))
        if not group:
            return list(range(len(self.canon_rows)))
        index = self.indexes.get(group)
        if index is None:
            index = self.indexes[group] = {}
            for r, canon in enumerate(self.canon_rows):
                index.setdefault(tuple(canon[k] for k in group), []).append(r)
        return index.get(tuple(canonical(entry[k]) for k in group), [])

"""Matrix rows with GitHub Actions ``strategy.matrix`` semantics.

1. The cartesian product of the plain keys, first key outermost, in declaration order.
2. ``exclude`` drops every combination that matches all keys of an entry (partial match).
3. Each ``include`` entry extends every remaining combination whose *original* values it does
   not overwrite; values added by an earlier include may be overwritten. An entry that fits no
   combination becomes a row of its own, which later includes never extend.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.manifest.yamlpos import FieldPath, Where


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
    originals: list[dict[str, Any]] = []
    keys = list(axes)
    if keys:
        located = [[(v, where((*base, k, j))) for j, v in enumerate(axes[k])] for k in keys]
        whole = where(base)
        for combo in itertools.product(*located):
            values = {k: v for k, (v, _) in zip(keys, combo, strict=True)}
            if any(_matches(values, entry) for entry in exclude):
                continue
            sources = {k: w for k, (_, w) in zip(keys, combo, strict=True)}
            rows.append(Row(values, sources, whole))
            originals.append(dict(values))
    extra: list[Row] = []
    for i, entry in enumerate(include):
        entry_path = (*base, "include", i)
        sources = {k: where((*entry_path, k)) for k in entry}
        fitted = False
        for original, row in zip(originals, rows, strict=True):
            if all(same(original[k], v) for k, v in entry.items() if k in original):
                fitted = True
                row.values.update(entry)
                row.sources.update(sources)
        if not fitted:
            extra.append(Row(dict(entry), dict(sources), where(entry_path)))
    return rows + extra


def _matches(values: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(k in values and same(values[k], v) for k, v in entry.items())

"""Where things are in a manifest: field paths, places an error can name, located documents.

A :data:`FieldPath` names a value by its keys and indexes (``("campaigns", 1, "matrix")``,
shown as ``campaigns[1].matrix``); a :class:`Where` is a file, line, column and field that a
:class:`~runner.errors.ManifestError` can point at; a :class:`Document` is the plain data
:func:`runner.manifest.yamlpos.load_document` built, with the line and column of every key and
value, and finds the nearest position for any path. The YAML loading itself is
:mod:`runner.manifest.yamlpos`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runner.errors import ManifestError

FieldPath = tuple[str | int, ...]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: FieldPath) -> str:
    """``("campaigns", 1, "matrix")`` → ``campaigns[1].matrix``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


@dataclass(frozen=True)
class Where:
    """A place in a manifest (or a CSV file it reads) that an error can name."""

    file: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def error(self, message: str) -> ManifestError:
        """A ManifestError located here."""
        return ManifestError(
            message, file=self.file, line=self.line, column=self.column, field=self.field
        )


@dataclass
class Document:
    """Plain data from a YAML file and where each value and mapping key starts (1-based)."""

    file: str
    data: Any
    values: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    collections: set[FieldPath] = field(default_factory=set)
    _memo: dict[tuple[FieldPath, bool], Where] = field(default_factory=dict, repr=False)

    def where(self, path: FieldPath, *, key: bool = False) -> Where:
        """The position of ``path``, or of its nearest ancestor that has one.

        ``key=True`` prefers the mapping key's position (for unknown or duplicate keys); so
        does a mapping or list value, which in block style starts on the line after its key.
        """
        found = self._memo.get((path, key))
        if found is None:
            found = self._memo[(path, key)] = self._where(path, key)
        return found

    def _where(self, path: FieldPath, key: bool) -> Where:
        shown = format_path(path) or None
        if path in self.keys and (key or path in self.collections):
            line, col = self.keys[path]
            return Where(self.file, line, col, shown)
        probe = path
        while True:
            if probe in self.values:
                line, col = self.values[probe]
                return Where(self.file, line, col, shown)
            if not probe:
                return Where(self.file, None, None, shown)
            probe = probe[:-1]

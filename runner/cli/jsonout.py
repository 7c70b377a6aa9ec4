"""JSON as ``json.dumps(doc, indent=2, ensure_ascii=False, default=str)`` writes it, byte for
byte, a piece at a time and mostly in C.

Python's indenting encoder is pure Python: a few microseconds for every value, which is most of
``plan --json`` on 100,000 jobs. Here a list or mapping whose items are all leaves (no list,
tuple or mapping inside: a job's ``vars`` and ``request``, usually) is written by the C encoder
in one call, its item separator carrying the newline and indent; only containers of containers
are walked in Python.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

INDENT = "  "
_CONTAINERS = (dict, list, tuple)
_leaf = json.JSONEncoder(ensure_ascii=False, default=str).encode


@functools.cache
def _flat(level: int) -> Any:
    """The C encoder of a container of leaves at nesting ``level`` (0: the document)."""
    return json.JSONEncoder(
        ensure_ascii=False, default=str, separators=("," + _newline(level + 1), ": ")
    ).encode


@functools.cache
def _newline(level: int) -> str:
    return "\n" + INDENT * level


def _key(key: Any) -> str:
    """A mapping key as the encoder writes it (non-string keys become strings, as there)."""
    if isinstance(key, str):
        return _leaf(key)
    if key is True or key is False or key is None or isinstance(key, int | float):
        return _leaf(_leaf(key))  # true, 1, 1.5 ... quoted
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def iter_indented(value: Any, level: int = 0) -> Iterator[str]:
    """The pieces of ``value`` as JSON indented by two spaces, starting at nesting ``level``."""
    if isinstance(value, dict):
        if not value:
            yield "{}"
        elif not any(isinstance(v, _CONTAINERS) for v in value.values()):
            yield _wrapped(_flat(level)(value), level)
        else:
            inner = _newline(level + 1)
            first = True
            for key, item in value.items():
                yield ("{" if first else ",") + inner + _key(key) + ": "
                first = False
                yield from iter_indented(item, level + 1)
            yield _newline(level) + "}"
    elif isinstance(value, list | tuple):
        if not value:
            yield "[]"
        elif not any(isinstance(v, _CONTAINERS) for v in value):
            yield _wrapped(_flat(level)(value), level)
        else:
            inner = _newline(level + 1)
            for i, item in enumerate(value):
                yield ("[" if i == 0 else ",") + inner
                yield from iter_indented(item, level + 1)
            yield _newline(level) + "]"
    else:
        yield _leaf(value)


def _wrapped(text: str, level: int) -> str:
    """``{a,<nl>b}`` (the C encoder's output) as ``{<nl>a,<nl>b<nl>}``."""
    return text[0] + _newline(level + 1) + text[1:-1] + _newline(level) + text[-1]

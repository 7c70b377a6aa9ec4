"""JSON as ``json.dumps(doc, indent=2, ensure_ascii=False, default=str)`` writes it, byte for
byte, a piece at a time and mostly in C.

Python's indenting encoder is pure Python: a few microseconds for every value, which is most of
``plan --json`` on 100,000 jobs. Here a list or mapping whose items are all leaves (no list,
tuple or mapping inside: a job's ``vars`` and ``request``, usually) is written by the C encoder
in one call, its item separator carrying the newline and indent; a container of containers is
put together in Python, and streamed (a piece per item) only when it is long.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

INDENT = "  "
STREAMED = 64  # a container of containers with more items than this is written item by item
_CONTAINERS = (dict, list, tuple)
_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})
_leaf = json.JSONEncoder(ensure_ascii=False, default=str).encode


@functools.cache
def _flat(level: int) -> Callable[[Any], str]:
    """The C encoder of a container of leaves at nesting ``level`` (0: the document)."""
    separator = "," + _newline(level + 1)
    if c_make_encoder is None:  # no C speedups: still the same bytes
        encoder = json.JSONEncoder(ensure_ascii=False, default=str, separators=(separator, ": "))
        return encoder.encode
    # what JSONEncoder.encode builds on every call (no circular check: leaves only)
    encode = c_make_encoder(None, str, encode_basestring, None, ": ", separator, False, False, True)
    return lambda value: "".join(encode(value, level))


def _leaves(values: Iterable[Any]) -> bool:
    """Whether every value is a plain leaf (its type exactly one the C encoder writes as is)."""
    return set(map(type, values)) <= _LEAF_TYPES


@functools.cache
def _newline(level: int) -> str:
    return "\n" + INDENT * level


@functools.lru_cache(maxsize=4096)
def _key(key: Any) -> str:
    """A mapping key and its separator as the encoder writes them (non-string keys become
    strings, as there)."""
    if isinstance(key, str):
        return encode_basestring(key) + ": "
    if key is True or key is False or key is None or isinstance(key, int | float):
        return encode_basestring(_leaf(key)) + ": "  # true, 1, 1.5 ... quoted
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


#: Flat containers recently written, by identity and nesting level (see :func:`_dumps`).
Recent = dict[tuple[int, int], tuple[Any, str]]
RECENT = 8


def _dumps(value: Any, level: int, recent: Recent | None = None) -> str:
    """``value`` as one indented string, starting at nesting ``level``.

    ``recent`` (while one document is written, which nothing changes meanwhile) remembers
    the last few containers of leaves written, by identity and level: the jobs of a matrix row share
    one ``vars`` mapping, written once instead of once per job."""
    if type(value) is str:
        return encode_basestring(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        if _leaves(value.values()):
            if recent is None:
                return _wrapped(_flat(level)(value), level)
            seen = recent.get((id(value), level))
            if seen is not None and seen[0] is value:
                return seen[1]
            text = _wrapped(_flat(level)(value), level)
            recent[(id(value), level)] = (value, text)  # holding it: its id stays its own
            if len(recent) > RECENT:
                del recent[next(iter(recent))]
            return text
        inner = "," + _newline(level + 1)
        items = inner.join(
            [
                _key(k) + (encode_basestring(v) if type(v) is str else _dumps(v, level + 1, recent))
                for k, v in value.items()
            ]
        )
        return "{" + inner[1:] + items + _newline(level) + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        if _leaves(value):
            return _wrapped(_flat(level)(value), level)
        inner = "," + _newline(level + 1)
        items = inner.join([_dumps(v, level + 1, recent) for v in value])
        return "[" + inner[1:] + items + _newline(level) + "]"
    return _leaf(value)


def iter_indented(value: Any, level: int = 0) -> Iterator[str]:
    """The pieces of ``value`` as JSON indented by two spaces, starting at nesting ``level``:
    a piece per item of a mapping of containers or of a long list of them."""
    if isinstance(value, dict) and any(isinstance(v, _CONTAINERS) for v in value.values()):
        inner = _newline(level + 1)
        for i, (key, item) in enumerate(value.items()):
            yield ("," if i else "{") + inner + _key(key)
            yield from iter_indented(item, level + 1)
        yield _newline(level) + "}"
    elif (
        isinstance(value, list | tuple)
        and len(value) > STREAMED
        and any(isinstance(v, _CONTAINERS) for v in value)
    ):
        inner = _newline(level + 1)
        recent: Recent = {}
        for i, item in enumerate(value):
            yield ("," if i else "[") + inner + _dumps(item, level + 1, recent)
        yield _newline(level) + "]"
    else:
        yield _dumps(value, level)


def _wrapped(text: str, level: int) -> str:
    """``{a,<nl>b}`` (the C encoder's output) as ``{<nl>a,<nl>b<nl>}``."""
    return text[0] + _newline(level + 1) + text[1:-1] + _newline(level) + text[-1]

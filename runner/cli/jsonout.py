"""JSON as ``json.dumps(doc, indent=2, ensure_ascii=False, default=str)`` writes it, byte for
byte, a piece at a time and mostly in C.

Python's indenting encoder is pure Python: a few microseconds for every value, which is most of
``plan --json`` on 100,000 jobs. Here a list or mapping whose items are all leaves (no list,
tuple or mapping inside: a job's ``vars`` and ``request``, usually) is written by the C encoder
in one call, its item separator carrying the newline and indent; a container of containers is
put together in Python, and streamed (a piece per item) only when it is long. A long list of
mappings with the same keys (the plan's jobs) is a table: written a column at a time, each
column of leaves or of containers of leaves by one C call split back into its values' texts,
and each item put together from them by one format; a column of one value throughout is
written once, into the format, and one of mappings of the same keys (each job's request) is
a table itself, its columns written into the format too. :class:`Columns` is such a list
given a column at a time (the plan's jobs, straight from the jobs).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from operator import itemgetter
from typing import Any

from runner.jsontext import one_per_line


class Columns:
    """A list of mappings with the same string keys, given a column at a time (``{key: each
    mapping's value}``, the columns of equal length): written as that list would be, without
    making its mappings (the plan's 100,000 jobs)."""

    __slots__ = ("columns",)

    def __init__(self, columns: Mapping[str, list[Any]]) -> None:
        self.columns = dict(columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def rows(self) -> list[dict[str, Any]]:
        """The list of mappings it stands for."""
        keys = tuple(self.columns)
        return [
            dict(zip(keys, values, strict=True))
            for values in zip(*self.columns.values(), strict=True)
        ]


INDENT = "  "
STREAMED = 64  # a container of containers with more items than this is written item by item
TABLE = 1024  # of a long list, the items looked at together (written a column at a time)
_CONTAINERS = (dict, list, tuple, Columns)
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


@functools.lru_cache(maxsize=4096, typed=True)  # True is not 1 here
def _key(key: Any) -> str:
    """A mapping key and its separator as the encoder writes them (non-string keys become
    strings, as there)."""
    if isinstance(key, str):
        return encode_basestring(key) + ": "
    if key is True or key is False or key is None or isinstance(key, int | float):
        return encode_basestring(_leaf(key)) + ": "  # true, 1, 1.5 ... quoted
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


#: The last container written at each place of a mapping (the heads of its shape, the
#: value's index), while one document is written (which nothing changes meanwhile): the jobs
#: of a matrix row share one ``vars`` mapping, written once instead of once per job.
Last = dict[tuple[tuple[str, ...], int], tuple[Any, str]]


def _dumps(value: Any, level: int, last: Last) -> str:
    """``value`` as one indented string, starting at nesting ``level``."""
    if type(value) is str:
        return encode_basestring(value)
    if isinstance(value, Columns):
        return "".join(iter_indented(value, level, last))
    if isinstance(value, dict):
        if not value:
            return "{}"
        if _leaves(value.values()):
            return _wrapped(_flat(level)(value), level)
        return _mapping(value, level, last)
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        if _leaves(value):
            return _wrapped(_flat(level)(value), level)
        inner = "," + _newline(level + 1)
        items = inner.join([_dumps(v, level + 1, last) for v in value])
        return "[" + inner[1:] + items + _newline(level) + "]"
    return _leaf(value)


def _mapping(value: dict[Any, Any], level: int, last: Last) -> str:
    """A non-empty mapping, an item at a time: each value after its head (:func:`_heads`); a
    container that is the one last written at its place is not written again (``last``)."""
    heads = _heads(tuple(value), level)
    parts = [
        head
        + (encode_basestring(item) if type(item) is str else _item(item, (heads, i), level, last))
        for i, head, item in zip(itertools.count(), heads, value.values())
    ]
    parts.append(_newline(level) + "}")
    return "".join(parts)


def _item(item: Any, place: tuple[tuple[str, ...], int], level: int, last: Last) -> str:
    """A mapping's value (at nesting ``level + 1``), not a string."""
    if not isinstance(item, _CONTAINERS):
        return _dumps(item, level + 1, last)
    seen = last.get(place)
    if seen is not None and seen[0] is item:
        return seen[1]
    text = _dumps(item, level + 1, last)
    last[place] = (item, text)  # holding it: its id stays its own
    return text


_HEADS: dict[tuple[tuple[Any, ...], int], tuple[str, ...]] = {}


def _heads(keys: tuple[Any, ...], level: int) -> tuple[str, ...]:
    """What comes before each value of a mapping with these keys at nesting ``level``: ``{``
    or ``,``, the newline and indent, the key and ``: ``. Kept for mappings of string keys
    (the many items of a long list have the same keys; ``1`` and ``True`` are one key to a
    dict, not to JSON)."""
    heads = _HEADS.get((keys, level))
    if heads is None:
        inner = _newline(level + 1)
        heads = tuple(("," if i else "{") + inner + _key(key) for i, key in enumerate(keys))
        if len(_HEADS) < 256 and all(type(key) is str for key in keys):
            _HEADS[(keys, level)] = heads
    return heads


def iter_indented(value: Any, level: int = 0, last: Last | None = None) -> Iterator[str]:
    """The pieces of ``value`` as JSON indented by two spaces, starting at nesting ``level``:
    a piece per item of a mapping of containers or of a long list of them."""
    if last is None:
        last = {}
    if isinstance(value, Columns):
        names = tuple(value.columns)
        if len(value) <= STREAMED or not names or not all(type(key) is str for key in names):
            value = value.rows()  # written as any list (a short one, one of odd keys)
        else:
            yield from _columns_table(value, names, level, last)
            return
    if isinstance(value, dict) and any(isinstance(v, _CONTAINERS) for v in value.values()):
        inner = _newline(level + 1)
        for i, (key, item) in enumerate(value.items()):
            yield ("," if i else "{") + inner + _key(key)
            yield from iter_indented(item, level + 1, last)
        yield _newline(level) + "}"
    elif (
        isinstance(value, list | tuple)
        and len(value) > STREAMED
        and any(isinstance(v, _CONTAINERS) for v in value)
    ):
        inner = _newline(level + 1)
        for start in range(0, len(value), TABLE):
            rows = value[start : start + TABLE]
            keys = _table_keys(rows)
            if keys is not None:  # a table: its items written a column at a time
                columns = [list(map(itemgetter(key), rows)) for key in keys]
                yield from _table(columns, keys, level + 1, start == 0, last)
                continue
            for i, item in enumerate(rows, start):
                # a mapping is written the same, a container in it or not
                text = (
                    _mapping(item, level + 1, last)
                    if type(item) is dict and item
                    else _dumps(item, level + 1, last)
                )
                yield ("," if i else "[") + inner + text
        yield _newline(level) + "]"
    else:
        yield _dumps(value, level, last)


def _table_keys(rows: Sequence[Any]) -> tuple[str, ...] | None:
    """The keys of every item, when all are mappings with the same string keys in the same
    order (a table: its items can be written a column at a time); else None."""
    first = rows[0]
    if type(first) is not dict or not first:
        return None
    keys = tuple(first)
    if not all(type(key) is str for key in keys):
        return None  # 1 and True are one key to a dict, not to JSON
    if set(map(type, rows)) == {dict} and all(map(keys.__eq__, map(tuple, rows))):
        return keys
    return None


def _columns_table(value: Columns, keys: tuple[str, ...], level: int, last: Last) -> Iterator[str]:
    """A long :class:`Columns` (of string keys) at nesting ``level``: as a table of its rows
    is written (:func:`iter_indented`), the same items looked at together."""
    for start in range(0, len(value), TABLE):
        columns = [column[start : start + TABLE] for column in value.columns.values()]
        yield from _table(columns, keys, level + 1, start == 0, last)
    yield _newline(level) + "]"


def _table(
    values: Sequence[list[Any]], keys: tuple[str, ...], level: int, first: bool, last: Last
) -> Iterator[str]:
    """The items of a long list at nesting ``level`` that are mappings of the same ``keys``,
    given a column each (``values``, in ``keys`` order): a piece per item, each the separator
    before it and the mapping, as :func:`_mapping` writes it. Each item is put together by
    one format (:func:`_fields`) from columns of texts, each encoded in one call where it can
    be."""
    body, columns = _fields(values, _heads(keys, level), level, last)
    inner = _newline(level)
    rest = zip(*columns, strict=True) if columns else itertools.repeat((), len(values[0]))
    if first:
        yield "[" + inner + body % next(rest)
    yield from map(("," + inner + body).__mod__, rest)


def _fields(
    values: Sequence[list[Any]], heads: tuple[str, ...], level: int, last: Last
) -> tuple[str, list[list[str]]]:
    """How mappings at nesting ``level`` whose values are given a column each (their keys'
    :func:`_heads`) are written: a format of each (text, and a ``%s`` for each varying part),
    and the columns of texts that fill its ``%s``, in order (see :func:`_layout`)."""
    body = ""
    columns: list[list[str]] = []
    for i, column in enumerate(values):
        fragment, texts = _layout(column, (heads, i), level, last)
        body += heads[i].replace("%", "%%") + fragment
        columns += texts
    return body + (_newline(level) + "}").replace("%", "%%"), columns


def _layout(
    values: list[Any], place: tuple[tuple[str, ...], int], level: int, last: Last
) -> tuple[str, list[list[str]]]:
    """How the values of one key of mappings at nesting ``level`` are written: a format
    fragment and the columns of texts filling its ``%s``. One value throughout (a campaign's
    name, a status) is written once, into the format; mappings of the same string keys that
    are not shared (each job's request) are themselves a table, a column per key, written
    into the format; else a column of texts (:func:`_column`)."""
    types = set(map(type, values))
    # equal values of one type are written alike, but for 0.0 and -0.0
    if (
        types <= _LEAF_TYPES
        and len(types) == 1
        and float not in types
        and values.count(values[0]) == len(values)
    ):
        return one_per_line(values[:1])[0].replace("%", "%%"), []
    if types == {dict} and values[0]:
        keys = tuple(values[0])
        if (
            all(type(key) is str for key in keys)
            and len(set(map(id, values))) * 2 > len(values)  # shared ones: each written once
            and list(map(tuple, values)).count(keys) == len(values)
        ):
            inner = [list(column) for column in zip(*map(dict.values, values), strict=True)]
            return _fields(inner, _heads(keys, level + 1), level + 1, last)
    texts, before, after = _column(values, types, place, level, last)
    return before.replace("%", "%%") + "%s" + after.replace("%", "%%"), [texts]


def _column(
    values: list[Any],
    types: set[type],
    place: tuple[tuple[str, ...], int],
    level: int,
    last: Last,
) -> tuple[list[str], str, str]:
    """The texts of the values (of ``types``) of one key of a table's mappings (at nesting
    ``level``), and what goes before and after each. All in one call of the C encoder when
    they are all leaves, or all non-empty mappings (or all non-empty lists) of leaves — JSON
    text has no raw newline, and no leaf's text ends with a bracket, so the one text splits
    back into the values' — else one at a time."""
    if types <= _LEAF_TYPES:
        return one_per_line(values), "", ""
    if c_make_encoder is not None and (types == {dict} or types == {list}) and all(values):
        opened, closed = "{}" if types == {dict} else "[]"
        # each container once (items often share one: a matrix row's vars)
        ids = list(map(id, values))
        by_id = dict(zip(ids, values, strict=True))
        distinct = list(by_id.values())
        items = map(dict.values, distinct) if opened == "{" else distinct
        if _LEAF_TYPES.issuperset(map(type, itertools.chain.from_iterable(items))):
            separator = "," + _newline(level + 2)
            text = _flat(level + 1)(distinct)[2:-2]  # [{a,<nl>b},<nl>{c}] less [{ and }]
            parts = text.split(closed + separator + opened)
            text_of = dict(zip(by_id, parts, strict=True))
            return (
                list(map(text_of.__getitem__, ids)),
                opened + _newline(level + 2),
                _newline(level + 1) + closed,
            )
    texts = [
        encode_basestring(value) if type(value) is str else _item(value, place, level, last)
        for value in values
    ]
    return texts, "", ""


def _wrapped(text: str, level: int) -> str:
    """``{a,<nl>b}`` (the C encoder's output) as ``{<nl>a,<nl>b<nl>}``."""
    return f"{text[0]}{_newline(level + 1)}{text[1:-1]}{_newline(level)}{text[-1]}"

"""The CLI's indented JSON (``plan --json``, ``export --format json``, every ``--json``) is
``json.dumps(doc, indent=2, ensure_ascii=False, default=str)``, byte for byte."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from runner.cli.jsonout import STREAMED, TABLE, Columns, iter_indented

JOBS = [
    {
        "key": f"k{i}",
        "status": "new",
        "vars": {"a": f"é{i}", "n": i},
        "request": {"prompt": 'say "hi"\n', "seed": i, "ratio": 1.5, "on": True, "x": None},
        "tags": [] if i % 2 else ["night", "v2"],
        "nested": {"list": [[1, 2], {"k": []}], "empty": {}},
    }
    for i in range(STREAMED + 5)
]
DOCS: list[Any] = [
    {}, [], (), "text", 1, 2.5, None, False, float("nan"), float("inf"),
    {"a": {}, "b": [], "c": [{}], "d": [[]]},
    {7: "int key", 2.5: "float key", True: "bool key", None: "null key"},
    {7: [1], False: {"x": 1}, "s": []},
    {"when": datetime.date(2026, 1, 2), "tuple": (1, ("a", "b"))},
    {"summary": {"total": 3}, "jobs": JOBS},
    JOBS,
    {str(i): {"x": [i]} for i in range(STREAMED + 3)},
]  # fmt: skip


@pytest.mark.parametrize("doc", DOCS, ids=range(len(DOCS)))
def test_same_bytes_as_the_indenting_encoder(doc: Any) -> None:
    expected = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    assert "".join(iter_indented(doc)) == expected


@pytest.mark.parametrize("doc", DOCS, ids=range(len(DOCS)))
def test_nested_as_if_inside_a_list(doc: Any) -> None:
    """At level 1 it is the same text indented once more (export writes rows that way)."""
    expected = json.dumps([doc], indent=2, ensure_ascii=False, default=str)
    assert "[\n  " + "".join(iter_indented(doc, 1)) + "\n]" == expected


def test_a_long_list_of_containers_comes_a_piece_per_item() -> None:
    pieces = list(iter_indented({"jobs": JOBS}))
    assert len(pieces) >= len(JOBS)


def test_keys_it_cannot_write_are_refused_as_json_refuses_them() -> None:
    with pytest.raises(TypeError):
        "".join(iter_indented({(1, 2): [{}]}))
    with pytest.raises(TypeError):
        json.dumps({(1, 2): [{}]}, indent=2)


def test_containers_shared_by_many_items_are_written_as_each_is_now() -> None:
    """Items of a long list that share a mapping (a matrix row's vars) get its text; one
    with an equal mapping that is another object, or of another nesting, gets its own."""
    shared = {"a": "x", "b": 1}
    items: list[Any] = [{"vars": shared, "request": {"seed": i}} for i in range(STREAMED * 2)]
    items[5] = {"vars": dict(shared), "deeper": [{"vars": shared}], "request": {"seed": 5}}
    items.append({"vars": {"a": "y", "b": 1}})
    doc = {"jobs": items}
    assert "".join(iter_indented(doc)) == json.dumps(doc, indent=2, ensure_ascii=False)


def test_keys_equal_to_python_but_not_to_json_keep_their_own_text() -> None:
    """``1``, ``True`` and ``1.0`` are one dict key but three JSON keys."""
    doc = [
        {1: [1]},
        {True: [1]},
        {1.0: [1]},
        {1: "a"},
        {True: "a"},
        {False: {}, "x": [0]},
        {0: {}, "x": [0]},
    ]
    assert "".join(iter_indented(doc)) == json.dumps(doc, indent=2, ensure_ascii=False)


def _table_doc() -> list[Any]:
    """A long list of mappings with the same keys, across several TABLE chunks, with every
    kind of column: leaves, mappings and lists of leaves (shared or not), empty ones, deeper
    ones, mixed ones, ``%`` and newlines in keys and values; and chunks that are no table."""
    shared = {"a": "x%s", "n": 1}
    rows: list[Any] = []
    for i in range(TABLE * 2 + 7):
        rows.append(
            {
                "k%s\n": f"k{i}\n%d",
                "n": [i, 1.5, None, True, float("nan")][i % 5],
                "vars": shared if i % 3 else {"a": f"é{i}", "b": f"}},\n      {{{i}"},
                "request": {"prompt": 'x"]\n', "seed": i, "on": False},
                "list": ["a]", i],
                "maybe_empty": {} if i == 3 else {"x": i},
                "deep": {"l": [i]} if i % 2 else {"m": {}},
                "mixed": [1] if i % 2 else {"x": 1},
                "when": datetime.date(2026, 1, 2) if i == 5 else "d",
                # mappings of the same keys, each its own: a table inside the table
                "table": {
                    "p%s": f"v{i}%d\n",
                    "same": "c%",
                    "inner": {"q": [i, "]"], "r": {"s": -0.0 if i % 2 else 0.0}},
                    "n": i,
                },
                "constant": {"a": 1, "b": "%s"},
            }
        )
    rows[TABLE + 1] = {"other": "keys"}  # the second chunk is no table
    return rows


def test_a_table_is_written_as_the_indenting_encoder_writes_it() -> None:
    doc = {"summary": {"total": 1}, "jobs": _table_doc()}
    expected = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    assert "".join(iter_indented(doc)) == expected
    assert "".join(iter_indented(doc["jobs"])) == json.dumps(
        doc["jobs"], indent=2, ensure_ascii=False, default=str
    )
    pieces = list(iter_indented(doc))
    assert len(pieces) >= len(doc["jobs"])  # still a piece per item


def test_a_table_of_non_string_keys_is_not_taken_as_one() -> None:
    """``{1: ..}`` and ``{True: ..}`` have equal keys to Python, not to JSON."""
    doc = [{1: "a", "x": [0]} if i % 2 else {True: "a", "x": [0]} for i in range(STREAMED * 3)]
    assert "".join(iter_indented(doc)) == json.dumps(doc, indent=2, ensure_ascii=False)


@pytest.mark.parametrize(
    "values",
    [["scale"], [-0.0, 0.0], [0.0, -0.0], [1, True], [True, 1], [None], [1.5], [2**70]],
    ids=["text", "minus-zero-first", "zero-first", "int-bool", "bool-int", "null", "float", "big"],
)
def test_a_column_of_one_value_throughout_is_each_value_s_own_text(values: list[Any]) -> None:
    """A column whose values are all one value is written once and repeated; values equal to
    Python but not to JSON (0.0 and -0.0, 1 and true) are still each written as they are."""
    doc = {"jobs": [{"v": values[i % len(values)], "i": i} for i in range(STREAMED * 3)]}
    assert "".join(iter_indented(doc)) == json.dumps(doc, indent=2, ensure_ascii=False)


def _as_columns(rows: list[dict[Any, Any]]) -> Columns:
    keys = list(rows[0]) if rows else []
    return Columns({key: [row[key] for row in rows] for key in keys})


@pytest.mark.parametrize(
    "count", [0, 1, STREAMED, STREAMED + 1, TABLE, TABLE * 2 + 7], ids=lambda n: f"{n} rows"
)
def test_columns_are_written_as_the_list_of_their_rows(count: int) -> None:
    """``Columns`` (the plan's jobs, a column each) is its rows' list, byte for byte: short or
    long, at the top or nested, across TABLE chunks, every kind of column."""
    rows = [{k: v for k, v in row.items() if k != "other"} for row in _table_doc()[:count]]
    rows = [row if "k%s\n" in row else _table_doc()[0] for row in rows]  # one set of keys
    columns = _as_columns(rows)
    assert columns.rows() == rows
    for doc, same in [(columns, rows), ({"summary": {"n": 1}, "jobs": columns}, None)]:
        as_list = {"summary": {"n": 1}, "jobs": rows} if same is None else same
        expected = json.dumps(as_list, indent=2, ensure_ascii=False, default=str)
        assert "".join(iter_indented(doc)) == expected
        nested = json.dumps([as_list], indent=2, ensure_ascii=False, default=str)
        assert "[\n  " + "".join(iter_indented(doc, 1)) + "\n]" == nested
    assert "".join(iter_indented({"only": columns})) == json.dumps(
        {"only": rows}, indent=2, ensure_ascii=False, default=str
    )


def test_columns_of_keys_json_tells_apart_are_written_as_their_rows() -> None:
    """No column names, or names that are no strings: written as the rows' list is."""
    empty = Columns({})
    assert len(empty) == 0 and "".join(iter_indented({"jobs": empty})) == '{\n  "jobs": []\n}'
    odd = Columns({1: list(range(STREAMED * 3)), "x": [[0]] * (STREAMED * 3)})  # type: ignore[dict-item]
    assert "".join(iter_indented(odd)) == json.dumps(odd.rows(), indent=2, ensure_ascii=False)

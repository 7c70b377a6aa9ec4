"""JSON text exactly as ``json.dumps(value, ensure_ascii=False)`` writes it, from a C encoder
built once: ``json.dumps`` builds one on every call, most of its cost for the small values
that the ledger, exports and ``plan --json`` encode 100,000 at a time. Without circular-
reference checks: the values are a manifest's data and a ledger's columns, never circular."""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder(item_separator: str) -> Callable[[Any], str]:
    if c_make_encoder is None:  # no C speedups: the same text, a little slower
        return json.JSONEncoder(ensure_ascii=False, separators=(item_separator, ": ")).encode
    encode = c_make_encoder(
        None, _no_default, encode_basestring, None, ": ", item_separator, False, False, True
    )
    return lambda value: "".join(encode(value, 0))


#: ``json.dumps(value, ensure_ascii=False)``.
dumps = _encoder(", ")
_lines = _encoder("\n")


def one_per_line(values: list[Any]) -> list[str]:
    """``[dumps(v) for v in values]`` for leaves (str, int, float, bool, None), in one call of
    the encoder: written a value a line and split (JSON text holds no raw newline)."""
    return _lines(values)[1:-1].split("\n")

"""``{name}`` templates (``{{`` and ``}}`` escape braces) and safe output paths."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from typing import Any

from runner.manifest.yamlpos import Where

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNSAFE_IN_SEGMENT = re.compile(r"[\x00-\x1f\x7f/\\]")
_SEPARATOR = re.compile(r"[/\\]")
MAX_SEGMENT_BYTES = 200


class TemplateSyntaxError(ValueError):
    """A template that cannot be parsed."""


@functools.lru_cache(maxsize=4096)
def parse(template: str) -> tuple[tuple[str, str], ...]:
    """``(("text", ...), ("name", ...))`` pieces of a template."""
    pieces: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            pieces.append(("text", token[0]))
        elif match.group(1) is not None:
            name = match.group(1)
            if not _NAME.match(name):
                raise TemplateSyntaxError(
                    f"bad placeholder {token!r}: a name is letters, digits and _ "
                    "(write {{ and }} for literal braces)"
                )
            pieces.append(("name", name))
        elif token in ("{", "}"):
            raise TemplateSyntaxError(
                f"unmatched {token!r} at character {match.start() + 1} "
                "(write {{ and }} for literal braces)"
            )
        else:
            pieces.append(("text", token))
    return tuple(pieces)


def placeholders(template: str) -> list[str]:
    """The placeholder names of a template, in order (TemplateSyntaxError if malformed)."""
    return [value for kind, value in parse(template) if kind == "name"]


def render(template: str, context: Mapping[str, Any], where: Where) -> str:
    """Fill a template; an unknown placeholder is an error located at ``where``."""
    try:
        pieces = parse(template)
    except TemplateSyntaxError as err:
        raise where.error(str(err)) from None
    out: list[str] = []
    for kind, value in pieces:
        if kind == "text":
            out.append(value)
        elif value in context:
            out.append(_text(value, context[value], where))
        else:
            raise where.error(_unknown(value, context))
    return "".join(out)


def _unknown(name: str, context: Mapping[str, Any]) -> str:
    known = sorted(context)
    message = f"unknown placeholder {{{name}}}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        message += f" (did you mean {{{close[0]}}}?)"
    return message + f"; known here: {', '.join(known) or 'none'}"


def _text(name: str, value: Any, where: Where) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    kind = "null" if value is None else "a list" if isinstance(value, list) else "a mapping"
    raise where.error(f"placeholder {{{name}}} is {kind} here; only text and numbers fill one")


def check_path_template(template: str, where: Where) -> None:
    """A filename template must be relative, with no empty, ``.`` or ``..`` segments."""
    try:
        parse(template)
    except TemplateSyntaxError as err:
        raise where.error(str(err)) from None
    if template.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", template):
        raise where.error("the filename must be relative to output.dir")
    for segment in _SEPARATOR.split(template):
        if segment in ("", ".", ".."):
            raise where.error(f"the filename has an empty, '.' or '..' segment: {template!r}")


def sanitize_segment(text: str) -> str:
    """One path segment that cannot escape its folder: no separators, controls, or dots only."""
    cleaned = _UNSAFE_IN_SEGMENT.sub("_", text).strip()
    encoded = cleaned.encode("utf-8")
    if len(encoded) > MAX_SEGMENT_BYTES:
        cleaned = encoded[:MAX_SEGMENT_BYTES].decode("utf-8", errors="ignore")
    if not cleaned.strip("."):
        return "_"
    return cleaned


def render_path(template: str, context: Mapping[str, Any], where: Where) -> str:
    """A relative output path: each segment of the template rendered, then sanitized."""
    check_path_template(template, where)
    segments = [render(s, context, where) for s in _SEPARATOR.split(template)]
    return "/".join(sanitize_segment(s) for s in segments)

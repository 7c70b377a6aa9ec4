"""``{name}`` templates (``{{`` and ``}}`` escape braces) and safe, portable output paths.

Output paths follow SPEC v2 §3: every rendered segment is made portable — the characters
Windows, SMB shares, exFAT disks and sync folders refuse (``<>:"|?*``, control characters,
separators) become ``_``, trailing dots and spaces are replaced, reserved device names
(``CON``, ``NUL``, ``COM1``, ... with any extension) get a ``_`` prefix, and a segment is cut
to ``MAX_SEGMENT_BYTES`` bytes of UTF-8 keeping its extension. A null ``{seed}`` or
``{variant}`` renders as an empty string, so one ``filename`` serves every campaign.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from runner.manifest.positions import Where

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNSAFE_IN_SEGMENT = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')
_SEPARATOR = re.compile(r"[/\\]")
_TRAILING = re.compile(r"[. ]+$")
# A segment already portable: ASCII letters, digits, ``_-.`` (no dot at either end), and not
# a reserved device name with any extension (those of RESERVED_SEGMENTS made of these letters).
_PLAIN_SEGMENT = re.compile(
    r"(?!(?:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(?:\.|$))"
    r"[A-Za-z0-9_-](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?",
    re.ASCII | re.IGNORECASE,
)
MAX_SEGMENT_BYTES = 200
MAX_EXTENSION_BYTES = 16  # a longer "extension" is part of the name, cut like the rest
# Windows device names: reserved with any extension, in any case (CON.mp4 is the console).
RESERVED_SEGMENTS = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
# Placeholders a job may lack: in a filename they render empty (SPEC v2 §3).
OPTIONAL_IN_PATHS = frozenset({"seed", "variant"})
_MISSING = object()


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


def render(
    template: str,
    context: Mapping[str, Any],
    where: Where,
    *,
    empty_when_null: frozenset[str] = frozenset(),
) -> str:
    """Fill a template; an unknown placeholder is an error located at ``where``.

    A placeholder named in ``empty_when_null`` whose value is null renders as ``""``.
    """
    try:
        pieces = parse(template)
    except TemplateSyntaxError as err:
        raise where.error(str(err)) from None
    return _fill(pieces, context, where, empty_when_null)


def _fill(
    pieces: tuple[tuple[str, str], ...],
    context: Mapping[str, Any],
    where: Where,
    empty_when_null: frozenset[str],
) -> str:
    """:func:`render` of a parsed template."""
    out: list[str] = []
    for kind, value in pieces:
        if kind == "text":
            out.append(value)
            continue
        filled = context.get(value, _MISSING)
        if type(filled) is str:  # the usual cases, first
            out.append(filled)
        elif type(filled) is int:  # not a bool
            out.append(str(filled))
        elif filled is _MISSING:
            raise where.error(_unknown(value, context))
        elif filled is not None or value not in empty_when_null:
            out.append(_text(value, filled, where))
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
    problem = _path_template_problem(template)
    if problem is not None:
        raise where.error(problem)


@functools.lru_cache(maxsize=256)
def _path_template_problem(template: str) -> str | None:
    try:
        parse(template)
    except TemplateSyntaxError as err:
        return str(err)
    if template.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", template):
        return "the filename must be relative to output.dir"
    for segment in _SEPARATOR.split(template):
        if segment in ("", ".", ".."):
            return f"the filename has an empty, '.' or '..' segment: {template!r}"
    return None


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def sanitize_segment(text: str) -> str:
    """One portable path segment that cannot escape its folder (see the module docstring)."""
    if len(text) <= MAX_SEGMENT_BYTES and _PLAIN_SEGMENT.fullmatch(text):
        return text  # already portable: what follows would not change it
    return _portable(text)


def _portable(text: str) -> str:
    """:func:`sanitize_segment` without its shortcut for a segment already portable."""
    cleaned = _UNSAFE_IN_SEGMENT.sub("_", text).strip()
    if not cleaned.strip("."):
        return "_"
    cleaned = _TRAILING.sub(lambda m: "_" * len(m.group()), cleaned)
    if cleaned.split(".", 1)[0].rstrip(" ").upper() in RESERVED_SEGMENTS:
        cleaned = "_" + cleaned
    if len(cleaned.encode("utf-8")) > MAX_SEGMENT_BYTES:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and stem and len(ext.encode("utf-8")) + 1 <= MAX_EXTENSION_BYTES:
            keep = MAX_SEGMENT_BYTES - len(ext.encode("utf-8")) - 1
            cleaned = _TRAILING.sub("_", _cut(stem, keep)) + "." + ext
        else:
            cleaned = _TRAILING.sub("_", _cut(cleaned, MAX_SEGMENT_BYTES))
    return cleaned


def render_path(template: str, context: Mapping[str, Any], where: Where) -> str:
    """A relative output path: each segment of the template rendered, then made portable."""
    return path_renderer(template, where)(context)


def path_renderer(template: str, where: Where) -> Callable[[Mapping[str, Any]], str]:
    """:func:`render_path` of one template, checked and parsed once (for the many jobs of a
    campaign)."""
    check_path_template(template, where)
    segments = [parse(segment) for segment in _segments(template)]

    def render_one(context: Mapping[str, Any]) -> str:
        return "/".join(
            [sanitize_segment(_fill(s, context, where, OPTIONAL_IN_PATHS)) for s in segments]
        )

    return render_one


# A segment filled per job: its index, its one per-job name ("" when more), the texts around
# that name, and its pieces (texts filled for the row, per-job names).
_PerJob = tuple[int, str, str, str, tuple[tuple[str, str], ...]]


def row_path_renderer(
    template: str, where: Where, per_job: frozenset[str]
) -> Callable[[Mapping[str, Any]], Callable[[Mapping[str, Any]], str]]:
    """:func:`path_renderer` in two steps, for the jobs of one row: ``bind(row_context)``
    fills what does not name one of ``per_job`` once (a segment naming none of them is also
    made portable once), and gives ``render(context)`` for each job, which fills the rest.
    ``render(context)`` is what ``path_renderer(template, where)(context)`` gives when
    ``context`` agrees with ``row_context`` outside ``per_job``; errors are the same too
    (``row_context`` holds every name a job's context does, so messages list the same)."""
    check_path_template(template, where)
    # each segment as runs of pieces filled together by bind, between the per-job names
    layouts: list[tuple[tuple[str, Any], ...]] = []
    for pieces in (parse(segment) for segment in _segments(template)):
        layout: list[tuple[str, Any]] = []
        for kind, value in pieces:
            if kind == "name" and value in per_job:
                layout.append(("name", value))
            elif layout and layout[-1][0] == "run":
                layout[-1] = ("run", (*layout[-1][1], (kind, value)))
            else:
                layout.append(("run", ((kind, value),)))
        layouts.append(tuple(layout))

    def bind(row: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], str]:
        parts: list[str] = []  # each segment; one naming a per-job name is filled per job
        per_segment: list[_PerJob] = []
        for i, layout in enumerate(layouts):
            if len(layout) == 1 and layout[0][0] == "run":
                parts.append(sanitize_segment(_fill(layout[0][1], row, where, OPTIONAL_IN_PATHS)))
                continue
            # the segment's per-job names between texts
            left = tuple(
                ("text", _fill(value, row, where, OPTIONAL_IN_PATHS))
                if kind == "run"
                else (kind, value)
                for kind, value in layout
            )
            parts.append("")
            names = [value for kind, value in left if kind == "name"]
            # one name between texts: ``before + str(value) + after`` when it is an int
            before = left[0][1] if left[0][0] == "text" else ""
            after = left[-1][1] if left[-1][0] == "text" else ""
            one = names[0] if len(names) == 1 else ""
            per_segment.append((i, one, before, after, left))

        def filled(context: Mapping[str, Any], segment: _PerJob) -> str:
            _, one, before, after, left = segment
            value = context.get(one) if one else None
            if type(value) is int:  # a seed, a variant: not a bool
                return sanitize_segment(before + str(value) + after)
            return sanitize_segment(_fill(left, context, where, OPTIONAL_IN_PATHS))

        if len(per_segment) != 1:

            def render_one(context: Mapping[str, Any]) -> str:
                out = parts.copy()
                for segment in per_segment:
                    out[segment[0]] = filled(context, segment)
                return "/".join(out)

            return render_one
        # the usual case: one segment filled per job, between texts joined once
        only = per_segment[0]
        start = "".join(part + "/" for part in parts[: only[0]])
        end = "".join("/" + part for part in parts[only[0] + 1 :])

        def render_only(context: Mapping[str, Any]) -> str:
            return start + filled(context, only) + end

        return render_only

    return bind


@functools.lru_cache(maxsize=256)
def _segments(template: str) -> tuple[str, ...]:
    return tuple(_SEPARATOR.split(template))

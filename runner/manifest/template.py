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
from collections.abc import Callable, Mapping, Sequence
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
    if "{" not in template and "}" not in template:
        return template  # text alone: what its one piece fills
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


class RowPaths:
    """:func:`path_renderer` for the jobs of one row at once: ``paths(row, columns)`` fills
    what does not name one of ``per_job`` once for the row (``row``: the row's context, which
    holds every name a job's does, so error messages list the same), and the rest per job
    from ``columns`` (each per-job name → its value for each job, in order). Each path is what
    ``path_renderer(template, where)(context)`` gives of that job's whole context."""

    def __init__(self, template: str, where: Where, per_job: frozenset[str]) -> None:
        check_path_template(template, where)
        self.where = where
        # each segment as runs of pieces filled together for the row, between per-job names
        self.layouts: list[tuple[tuple[str, Any], ...]] = []
        for pieces in (parse(segment) for segment in _segments(template)):
            layout: list[tuple[str, Any]] = []
            for kind, value in pieces:
                if kind == "name" and value in per_job:
                    layout.append(("name", value))
                elif layout and layout[-1][0] == "run":
                    layout[-1] = ("run", (*layout[-1][1], (kind, value)))
                else:
                    layout.append(("run", ((kind, value),)))
            self.layouts.append(tuple(layout))
        self._portable: dict[str, str] = {}  # sanitize_segment of a row's whole segments
        # the usual case: one per-job name, once, in one segment: its index, the name, and
        # the runs around it (None: no run; a str: a run without names)
        self.one: tuple[int, str, Any, Any] | None = None
        varying = [i for i, lay in enumerate(self.layouts) if len(lay) > 1 or lay[0][0] == "name"]
        if len(varying) == 1:
            first, last = self.layouts[varying[0]][0], self.layouts[varying[0]][-1]
            names = [value for kind, value in self.layouts[varying[0]] if kind == "name"]
            if len(names) == 1:
                around = [
                    _constant(first[1]) if first[0] == "run" else None,
                    _constant(last[1]) if last[0] == "run" else None,
                ]
                self.one = (varying[0], names[0], *around)
        # the last column of values shortcut (a campaign's seeds, the same for every row):
        # the values, the length of the longest's text, their texts
        self._column: tuple[Any, int, Sequence[str]] = ((), 0, ())

    def __call__(self, row: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]) -> list[str]:
        if self.one is None:
            return self._each(row, columns)
        where = self.where
        index, name, before_run, after_run = self.one
        parts: list[str] = []  # each segment; the one naming the per-job name filled per job
        before = after = ""  # the texts around that name
        for i, layout in enumerate(self.layouts):
            if i == index:
                if before_run is not None:
                    before = (
                        before_run
                        if type(before_run) is str
                        else _fill(before_run, row, where, OPTIONAL_IN_PATHS)
                    )
                if after_run is not None:
                    after = (
                        after_run
                        if type(after_run) is str
                        else _fill(after_run, row, where, OPTIONAL_IN_PATHS)
                    )
                parts.append("")
                continue
            text = _fill(layout[0][1], row, where, OPTIONAL_IN_PATHS)
            portable = self._portable.get(text)
            if portable is None:
                portable = self._portable[text] = sanitize_segment(text)
            parts.append(portable)
        # the segment stays portable with a digit in the value's place (and with a 1 after
        # COM or LPT: a device) and with any such value there (_plain_texts)
        longest, texts = self._plain(columns[name])
        if (
            _PLAIN_SEGMENT.fullmatch(before + "0" + after)
            and (len(before) != 3 or _PLAIN_SEGMENT.fullmatch(before + "1" + after))
            and longest <= MAX_SEGMENT_BYTES - len(before) - len(after)
        ):
            head = "/".join([*parts[:index], before])
            tail = "/".join([after, *parts[index + 1 :]])
            return [head + text + tail for text in texts]  # (twice as fast as a format)
        return self._each(row, columns)

    def _plain(self, values: Sequence[Any]) -> tuple[int, Sequence[str]]:
        """The length of the longest of the values' texts, when they are all such that a
        segment portable with a digit in their place stays so with each of them
        (:func:`_plain_texts`), else more than any segment holds; and their texts (``str``
        of ints or texts)."""
        if type(values) is tuple and values is self._column[0]:
            return self._column[1], self._column[2]
        longest = _plain_texts(values)
        texts = list(map(str, values)) if longest < _UNFIT else ()
        if type(values) is tuple:  # the same tuple again is the same values
            self._column = (values, longest, texts)
        return longest, texts

    def _each(self, row: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]) -> list[str]:
        """Each job's path from its whole context: what no shortcut covers. The row's runs are
        filled once, in order (the same errors first)."""
        where = self.where
        parts: list[str] = []  # each segment; one naming a per-job name: its pieces
        lefts: dict[int, tuple[tuple[str, str], ...]] = {}
        for i, layout in enumerate(self.layouts):
            if len(layout) == 1 and layout[0][0] == "run":
                parts.append(sanitize_segment(_fill(layout[0][1], row, where, OPTIONAL_IN_PATHS)))
                continue
            parts.append("")
            lefts[i] = tuple(
                ("text", _fill(value, row, where, OPTIONAL_IN_PATHS))
                if kind == "run"
                else (kind, value)
                for kind, value in layout
            )
        if not lefts:
            return ["/".join(parts)] * len(next(iter(columns.values())))
        paths = []
        for values in zip(*columns.values(), strict=True):
            context = dict(zip(columns, values, strict=True))
            out = parts.copy()
            for i, left in lefts.items():
                out[i] = sanitize_segment(_fill(left, context, where, OPTIONAL_IN_PATHS))
            paths.append("/".join(out))
        return paths


def _constant(run: tuple[tuple[str, str], ...]) -> Any:
    """A run of pieces as its text when it names nothing (else the run itself)."""
    if all(kind == "text" for kind, _ in run):
        return "".join(value for _, value in run)
    return run


_UNFIT = MAX_SEGMENT_BYTES + 1  # a text length that fits no segment


def _plain_texts(values: Sequence[Any]) -> int:
    """The length of the longest of the values' texts, if a segment that is portable with a
    digit in a value's place stays so (and unchanged) with each of the values there, however
    short; else more than a segment holds. Such values are ints (``-?[0-9]+``: digits and a
    dash, which a portable segment may hold anywhere, and which make no device name but
    ``COM`` or ``LPT`` + one digit, which a 1 in their place finds), and texts of five ASCII
    letters and digits or more (keys: too long to make a device name)."""
    kinds = set(map(type, values))
    if kinds == {int}:  # not bools
        return max(len(str(min(values))), len(str(max(values))))
    if kinds == {str}:
        joined = "".join(values)
        if joined.isascii() and joined.isalnum() and min(map(len, values)) >= 5:
            return max(map(len, values))
    return _UNFIT


@functools.lru_cache(maxsize=256)
def _segments(template: str) -> tuple[str, ...]:
    return tuple(_SEPARATOR.split(template))

"""The report's HTML: the page (``templates/report.html.j2``) and its cards
(``templates/report_card.html.j2``), both jinja2 with autoescaping on.

A page may hold 100,000 cards, and jinja2 would spend ~90 pieces and 35 escaped values on
each. So the card template is rendered once per shape of card (which parts it has, how many
fields and ids), with a numbered placeholder for each value: a :class:`Frame`, the markup of
every card of that shape, filled with a card's escaped values. :func:`frame` makes the
markup of cards that share some values (twins, see ``cards.Cards``): those values escaped
in their places once, the rest left to fill. The template stays the one place of the
markup, and the page comes out byte for byte as jinja2 would write it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import operator
import re
from collections.abc import Callable, Sequence
from importlib import resources
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from jinja2 import Environment

_CSP = "script-src '{hash}'; object-src 'none'; base-uri 'none'; form-action 'none'"
_SLOT = re.compile("\x00([0-9]+)\x00")  # a placeholder (values never pass through jinja2)
_JOIN = "\x00"  # between a card's values while they are escaped (no escape touches it)


class Card(NamedTuple):
    """What one job's card shows, as text (escaped when it is written)."""

    status: str
    key: str
    campaign: str
    tags: str  # space-separated
    src: str | None  # the player's URL, if it has one
    file: str  # the video's name as the page refers to it (with a player)
    missing: str | None  # where a downloaded video was expected but is not
    variant_label: str | None
    soul: str | None
    prompt: str | None
    error: str | None
    fields: list[tuple[str, str]]
    ids: list[tuple[str, str]]


def escape(text: str) -> str:
    """``markupsafe.escape(text)`` as a plain ``str``: the same five replacements, without a
    ``Markup`` made per value (a page has millions of values)."""
    return (
        text.replace("&", "&amp;")
        .replace(">", "&gt;")
        .replace("<", "&lt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


class Slot(str):
    """In a card given to :func:`frame`, a value each card fills in: its text is ``n``, the
    value's place in the values :meth:`Frame.fill` is given."""

    __slots__ = ()


class Frame:
    """The markup of cards that differ only in some of their values: markup, a value's
    place, markup, ... Filled by C-level steps only (copy, pick, slice assignment, join)."""

    def __init__(self, parts: list[str], numbers: list[int]) -> None:
        self.parts = parts  # markup at even places; the odd ones are filled by place()
        self.numbers = numbers  # the place in the values of each odd part's value
        if len(numbers) > 1:
            self.pick: Callable[[Sequence[str]], tuple[str, ...]] = operator.itemgetter(*numbers)
        else:  # itemgetter of one index gives the value, not a tuple
            self.pick = lambda values: tuple(values[n] for n in numbers)

    def fill(self, values: list[str], escaped: list[str] | None = None) -> str:
        """The card's HTML: ``values`` escaped, followed by the ``escaped`` ones, in their
        places."""
        values = escape_all(values)
        return self.place(values if escaped is None else values + escaped)

    def place(self, values: Sequence[str]) -> str:
        """The card's HTML, ``values`` (escaped) in their places."""
        parts = self.parts.copy()
        parts[1::2] = self.pick(values)
        return "".join(parts)


def escape_all(values: list[str]) -> list[str]:
    """``[escape(value) for value in values]``, the values escaped together: five
    replacements over one string, not five per value; split again only if one was made (an
    escape lengthens the text; most cards need none)."""
    joined = _JOIN.join(values)
    text = escape(joined)
    if len(text) == len(joined):
        return values
    parts = text.split(_JOIN)
    return parts if len(parts) == len(values) else [escape(value) for value in values]


def card_html(card: Card) -> str:
    """The card's HTML: its shape's markup filled with its escaped values."""
    values, shape = _values(card)
    return _shape(shape).fill(values)


def frame(card: Card) -> Frame:
    """The markup of every card that is ``card`` but for the values where it holds a
    :class:`Slot`: its other values escaped in their places once."""
    values, shape = _values(card)
    markup = _shape(shape)
    parts, numbers = [markup.parts[0]], []
    for n, after in zip(markup.numbers, markup.parts[2::2], strict=True):
        value = values[n]
        if type(value) is Slot:
            numbers.append(int(value))
            parts += ["", after]
        else:
            parts[-1] += escape(value) + after
    return Frame(parts, numbers)


def _values(card: Card) -> tuple[list[str], tuple[Any, ...]]:
    """The card's values in the order of its shape's placeholders, and its shape."""
    status, key, campaign, tags, src, file, missing, variant, soul, prompt, error, fields, ids = (
        card
    )
    if src:
        player, values = "video", [status, key, campaign, tags, src, file]
    elif missing:
        player, values = "missing", [status, key, campaign, tags, missing]
    else:
        player, values = "status", [status, key, campaign, tags]
    if variant:
        values.append(variant)
    if soul:
        values.append(soul)
    if prompt:
        values.append(prompt)
    if error:
        values.append(error)
    values.extend(itertools.chain.from_iterable(fields))
    values.extend(itertools.chain.from_iterable(ids))
    return values, (
        player, bool(variant), bool(soul), bool(prompt), bool(error), len(fields), len(ids)
    )  # fmt: skip


def _shape(shape: tuple[Any, ...]) -> Frame:
    """The markup of every card of ``shape``: the card template rendered once, with numbered
    placeholders in the order ``_values`` lists the values."""
    markup = _shapes.get(shape)
    if markup is None:
        pieces = _SLOT.split(_render(*shape))  # markup, a placeholder's number, markup, ...
        markup = _shapes[shape] = Frame(pieces, [int(n) for n in pieces[1::2]])
    return markup


def _render(
    player: str, variant: bool, soul: bool, prompt: bool, error: bool, fields: int, ids: int
) -> str:
    from markupsafe import Markup

    count = itertools.count()

    def slot() -> Markup:
        return Markup(f"\x00{next(count)}\x00")

    card = SimpleNamespace(status=slot(), key=slot(), campaign=slot(), tags=slot())
    card.src = slot() if player == "video" else None
    card.file = slot() if player == "video" else ""
    card.missing = slot() if player == "missing" else None
    card.variant_label = slot() if variant else None
    card.soul = slot() if soul else None
    card.prompt = slot() if prompt else None
    card.error = slot() if error else None
    card.fields = [(slot(), slot()) for _ in range(fields)]
    card.ids = [(slot(), slot()) for _ in range(ids)]
    return templates().get_template("report_card.html.j2").render(card=card)


# A card's shape → its markup (a few dozen shapes in a large report).
_shapes: dict[tuple[Any, ...], Frame] = {}


def page_html(**context: Any) -> str:
    """The page without its cards (each section's are written where its ``cards`` value is),
    its CSS inline and its script allowed by its hash."""
    script = asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return (
        templates()
        .get_template("report.html.j2")
        .render(
            csp=_CSP.format(hash=f"sha256-{digest}"),
            css=asset("report.css"),
            script=script,
            **context,
        )
    )


@functools.cache
def templates() -> Environment:
    """The report's templates, autoescaped (jinja2 is imported when a report is made)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("runner", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def asset(name: str) -> str:
    """A file of ``runner/templates`` as text."""
    return resources.files("runner").joinpath("templates", name).read_text(encoding="utf-8")

"""The report's cards: each shape's markup filled with escaped values is exactly what jinja2
writes from the card template, whatever the values hold."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import markupsafe
import pytest

from runner.report.markup import Card, Slot, card_html, escape, frame, templates

# Text that markup, format strings, %-formatting or the values' joiner could trip on.
NASTY = ["<b>x</b> & 'y' \"z\"", "{0} {key} {{}} %s %%", "nul\x00inside", "é ✓ \u2028", ""]


def jinja_card(card: Card) -> str:
    """The card as jinja2 renders its template, value by value (the reference)."""
    return (
        templates()
        .get_template("report_card.html.j2")
        .render(card=SimpleNamespace(**card._asdict()))
    )


@pytest.mark.parametrize("text", [*NASTY, "plain", "&amp;", "<<>>''\"\"&&"])
def test_escape_is_markupsafe(text: str) -> None:
    """escape() gives markupsafe's bytes (what the page's autoescape writes)."""
    assert escape(text) == str(markupsafe.escape(text))


def cards() -> list[Card]:
    """Cards of every shape: each player, each optional part there or not, 0-3 fields and
    ids, with ordinary and nasty values."""
    found = []
    players = [("../v/a b.mp4", "v/a b.mp4", None), (None, "", "/gone/x.mp4"), (None, "", None)]
    parts = itertools.product([None, "seed 7"], [None, "ava"], [None, "a fox"], [None, "nsfw"])
    for i, (link, (variant, soul, prompt, error)) in enumerate(itertools.product(players, parts)):
        nasty = NASTY[i % len(NASTY)] or "x"
        fields = [(f"f{n}", f"{nasty} {n}") for n in range(i % 4)]
        ids = [("generation", f"g-{nasty}"), ("file", "a/b.mp4"), ("updated", "2024")][: i % 4]
        found.append(
            Card(
                status="downloaded" if link[0] else "failed",
                key=f"k{i}",
                campaign=nasty if i % 3 else "walk",
                tags="weekly <x>" if i % 2 else "",
                src=link[0],
                file=link[1],
                missing=link[2],
                variant_label=variant and f"{variant} {nasty}",
                soul=soul,
                prompt=prompt and f"{prompt} {nasty}",
                error=error and f"{error}: {nasty}",
                fields=fields,
                ids=ids,
            )
        )
    return found


def test_every_shape_is_what_jinja_writes() -> None:
    """For cards of every shape, with values holding markup, braces, percent signs, NUL
    and non-ASCII, card_html() is byte for byte the card template rendered by jinja2."""
    shown = cards()
    assert len(shown) == 48
    for card in shown:
        assert card_html(card) == jinja_card(card), card


def test_a_value_like_a_placeholder_stays_text() -> None:
    """A value that looks like the placeholders or the joiner is written as itself."""
    card = cards()[5]._replace(prompt="\x001\x00 {1} \x00", key="\x00")
    html = card_html(card)
    assert html == jinja_card(card)
    assert "\x001\x00 {1} \x00" in html


def test_a_frame_filled_is_the_card() -> None:
    """A frame of a card with some values left as slots (the key, the player's, the error,
    the last field's value and every id's), filled with those values (escaped, or given
    escaped after them), is the card jinja2 writes; the values it keeps hold NULs and
    markup too."""
    for card in cards():
        own = [card.key, card.error or "", *(value for _, value in card.ids)]
        given = card.fields[-1][1] if card.fields else ""
        slots = iter(map(Slot, map(str, range(len(own) + 1))))
        key, error = next(slots), next(slots)
        ids = [(name, next(slots)) for name, _ in card.ids]
        fields = [*card.fields[:-1], (card.fields[-1][0], next(slots))] if card.fields else []
        shaped = card._replace(key=key, error=error if card.error else None, fields=fields, ids=ids)
        made = frame(shaped)
        assert made.fill(own, [escape(given)]) == jinja_card(card), card
        assert made.fill(own, [escape(given)]) == card_html(card)

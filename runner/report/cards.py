"""What one job's card shows: the seed or variant that tells twins apart, the soul, the
source image by file name, the request's shape, credits; ids and hashes apart; the error as
people should read it. Provider URLs never show: error texts lose their query strings."""

from __future__ import annotations

import functools
import itertools
import json
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from runner.engine.budget import charged
from runner.jsontext import dumps
from runner.ledger import JobStatus, ReportRow
from runner.report.links import Link
from runner.report.markup import Card, Frame, Slot, escape_all, frame

REQUEST_SHOWN = (("duration", "duration"), ("aspect_ratio", "aspect ratio"),
                 ("resolution", "resolution"), ("model", "model"))  # fmt: skip
# Query strings and fragments of URLs quoted in error texts may hold signed tokens.
_URL_SECRETS = re.compile(r"(https?://[^\s?#\"'<>]*)[?#][^\s\"'<>]*", re.IGNORECASE)
_RAW_DECODE = json.JSONDecoder().raw_decode


# The values of a card that it does not share with its twins, in the order Cards.html lists
# them (a frame's own values, the twins' shared ones after them).
_OWN = tuple(map(Slot, map(str, range(13))))
(KEY, SRC, FILE, MISSING, LABEL, ERROR, CREDITS, ATTEMPTS,
 GENERATION, SHA256, BYTES, PATH, UPDATED) = _OWN  # fmt: skip


class Cards:
    """The cards of a page's rows, in the ledger's order (a page may hold 100,000).

    Twins (the seeds and variants of one matrix row: one campaign, tags, soul, matrix row and
    request but for its seed) come one after another and share most of their card: the
    prompt, the matrix row, the request's shape. That part is worked out and escaped once
    for a run of twins; each card escapes only its own values (key, video, seed or variant,
    error, credits, attempts, ids) and fills them with the shared ones into the markup of
    its frame: one per status, parts a card has and shape of what twins share.
    """

    def __init__(self) -> None:
        self._twins: _Twins | None = None  # the last row's
        self._frames: dict[tuple[Any, ...], Frame] = {}

    def html(self, row: ReportRow, link: Link, tags: tuple[str, ...]) -> str:
        """The card of ``row`` (its ``tags``, the error already masked), its video shown as
        ``link`` says. ``tags`` are read for the first of a run of twins only: twins have
        the same ``row.tags`` (``_Twins.seed`` checks), so the same tags."""
        twins = self._twins
        seed = None if twins is None else twins.seed(row)
        if twins is None or seed is None:  # the first of its twins
            twins = self._twins = _Twins(row, tags)
            seed = twins.seed(row)
        (key, status, _, _, _, _, _, _, variant, credits, attempts, generation_id, error,
         size, sha256, location, path, _, updated) = row  # fmt: skip
        src, file, missing = link
        if not twins.seeded:
            label = None if variant is None else f"variant {variant}"
        else:
            label = f"seed {seed}" if variant is None else f"variant {variant} · seed {seed}"
        cost = credits_text(credits)
        if status is _FAILED and generation_id and not charged(row):
            cost += " (refunded)"
        error = tidy_error(error) if error else None
        file_id = location or path
        values = [
            key, src or "", file, missing or "", label or "", error or "", cost,
            str(attempts), generation_id or "", sha256 or "",
            "" if size is None else f"{size:,}", file_id, updated or "",
        ]  # fmt: skip
        parts = (
            status,
            0 if src else 1 if missing else 2,
            label is not None,
            bool(error),
            attempts > 1,
            bool(generation_id),
            bool(sha256),
            size is not None,
            bool(file_id),
            bool(updated),
        )
        made = twins.frames.get(parts)
        if made is None:
            made = self._frames.get((parts, twins.form))
            if made is None:
                made = self._frames[parts, twins.form] = frame(twins.card(parts))
            twins.frames[parts] = made
        return made.fill(values, twins.escaped)


class _Twins:
    """What the cards of a row's twins share, and how the rows of its twins look: one
    manifest, campaign, tags, soul and matrix row, and the same request but for its seed (its
    text the row's with other digits where the seed is, or the very same text)."""

    def __init__(self, row: ReportRow, tags: tuple[str, ...]) -> None:
        self.same = row[_SAME]  # manifest, campaign, tags, soul, vars
        request = {} if row.request is None else _decode(row.request)
        matrix, matrix_fields = ({}, ()) if row.vars is None else _matrix_of_text(row.vars)
        seed = request.get("seed")
        self.seeded = seed is not None
        self.seed_text = f"{seed}" if self.seeded else ""
        self.request = row.request
        self.around: tuple[str, str] | None = None  # the request's text before and after
        if type(seed) is int and seed >= 0 and row.request is not None:
            around = dumps({**request, "seed": _MARK}).split(dumps(_MARK))
            if len(around) == 2 and around[0] + self.seed_text + around[1] == row.request:
                self.around = around[0], around[1]
        prompt = request.get("prompt")
        prompt = None if prompt is None else _text(prompt)
        fields = _fields(row.soul, request, matrix, matrix_fields)
        # what its cards share, in the order card() places them; and their shape
        shared = [row.campaign, " ".join(tags)]
        if row.soul:
            shared.append(row.soul)
        if prompt:
            shared.append(prompt)
        shared.extend(itertools.chain.from_iterable(fields))
        if row.manifest:
            shared.append(row.manifest)
        self.escaped = escape_all(shared)
        self.form = (bool(row.soul), bool(prompt), len(fields), bool(row.manifest))
        self.frames: dict[tuple[Any, ...], Frame] = {}  # by the parts of a card

    def seed(self, row: ReportRow) -> str | None:
        """The text of the seed of ``row`` if it is a twin (``""`` if its request has none),
        else ``None``."""
        if row[_SAME] != self.same:
            return None
        text = row.request
        if self.around is None:
            return self.seed_text if text == self.request else None
        before, after = self.around
        if text is None or not text.startswith(before) or not text.endswith(after):
            return None
        seed = text[len(before) : len(text) - len(after)]
        # the same request but for its seed if these are the digits of a JSON number
        if seed.isdigit() and seed.isascii() and (seed[0] != "0" or len(seed) == 1):
            return seed
        return None

    def card(self, parts: tuple[Any, ...]) -> Card:
        """The card of these twins with these ``parts`` (as ``Cards.html`` lists them), each
        value a :class:`Slot`: its own values first, then what the twins share."""
        status, player, labelled, error, attempts, *ids = parts
        soul, prompt, count, manifest = self.form
        share = map(Slot, map(str, itertools.count(len(_OWN))))  # in __init__'s order
        campaign, tags = next(share), next(share)
        soul_name = next(share) if soul else None
        prompt_text = next(share) if prompt else None
        fields: list[tuple[str, str]] = [(next(share), next(share)) for _ in range(count)]
        fields.append(("credits", CREDITS))
        if attempts:
            fields.append(("attempts", ATTEMPTS))
        generation, sha256, size, path, updated = ids
        shown: list[tuple[str, str]] = [("generation", GENERATION)] if generation else []
        if sha256:
            shown.append(("sha256", SHA256))
        if size:
            shown.append(("bytes", BYTES))
        if path:
            shown.append(("file", PATH))
        if manifest:
            shown.append(("manifest", next(share)))
        if updated:
            shown.append(("updated", UPDATED))
        return Card(
            status.value,
            KEY,
            campaign,
            tags,
            SRC if player == 0 else None,
            FILE if player == 0 else "",
            MISSING if player == 1 else None,
            LABEL if labelled else None,
            soul_name,
            prompt_text,
            ERROR if error else None,
            fields,
            shown,
        )


_FAILED = JobStatus.FAILED
_SAME = slice(ReportRow._fields.index("manifest"), ReportRow._fields.index("vars") + 1)
_MARK = "\x00seed\x00"  # where the seed is, to find its place in the request's text


def tidy_error(error: str | None) -> str | None:
    """An error as people should read it: a phrase said twice in a row once
    (``generation failed: generation failed``), signed URLs without their query."""
    if not error:
        return None
    parts: list[str] = []
    for part in error.split(": "):
        if not parts or part.strip().lower() != parts[-1].strip().lower():
            parts.append(part)
    return _URL_SECRETS.sub(r"\1?…", ": ".join(parts))


@functools.lru_cache(maxsize=1024)
def credits_text(value: float) -> str:
    """Credits as the page shows them: whole numbers without decimals, thousands separated."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


@functools.lru_cache(maxsize=256)
def tags_of(text: str | None) -> tuple[str, ...]:
    """The tags of a row from their JSON text, decoded once per set (most rows have none)."""
    return () if text is None or text == "[]" else tuple(_decode(text))


def _decode(text: str) -> Any:
    try:  # the ledger's JSON is compact: the decoder's own step, without json.loads' checks
        value, end = _RAW_DECODE(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


Fields = tuple[tuple[str, str], ...]


@functools.lru_cache(maxsize=64)
def _matrix_of_text(text: str) -> tuple[dict[str, Any], Fields]:
    return _matrix_fields(_decode(text))  # shared by cards that only read it


def _matrix_fields(matrix: dict[str, Any]) -> tuple[dict[str, Any], Fields]:
    return matrix, tuple((name, _text(value)) for name, value in matrix.items())


def _text(value: Any) -> str:
    """Strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _image_name(url: str) -> str:
    """A source image by its file name: no host, no query (they may be signed)."""
    path = urlsplit(url).path if "://" in url else url
    return PurePosixPath(path).name or "image"


def _fields(
    soul: str | None, request: dict[str, Any], matrix: dict[str, Any], matrix_fields: Fields
) -> list[tuple[str, str]]:
    """What a reviewer compares between cards, but for what each card has of its own
    (credits, attempts): the matrix row (``matrix_fields``), the request's shape, the soul
    and source image."""
    fields = list(matrix_fields)
    for name, label in REQUEST_SHOWN:
        value = request.get(name)
        if value is not None and name not in matrix:  # a matrix value shows once
            fields.append((label, f"{value} s" if name == "duration" else _text(value)))
    if soul:
        fields.append(("soul", soul))
    image = request.get("image_url")
    if isinstance(image, str) and image:
        fields.append(("source image", _image_name(image)))
    return fields

"""What one job's card shows: the seed or variant that tells twins apart, the soul, the
source image by file name, the request's shape, credits; ids and hashes apart; the error as
people should read it. Provider URLs never show: error texts lose their query strings."""

from __future__ import annotations

import functools
import json
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from runner.engine.budget import charged
from runner.ledger import JobRow, JobStatus
from runner.report.links import Link
from runner.report.markup import Card

REQUEST_SHOWN = (("duration", "duration"), ("aspect_ratio", "aspect ratio"),
                 ("resolution", "resolution"), ("model", "model"))  # fmt: skip
# Query strings and fragments of URLs quoted in error texts may hold signed tokens.
_URL_SECRETS = re.compile(r"(https?://[^\s?#\"'<>]*)[?#][^\s\"'<>]*", re.IGNORECASE)
_RAW_DECODE = json.JSONDecoder().raw_decode


def card(row: JobRow, link: Link, tags: tuple[str, ...]) -> Card:
    """The card of ``row`` (its ``tags``), its video shown as ``link`` says."""
    _, request_text, matrix_text = row.plan_texts()
    request = row.request if request_text is None else _decode(request_text)
    matrix, matrix_fields = (
        _matrix_fields(row.vars) if matrix_text is None else _matrix_of_text(matrix_text)
    )
    prompt = request.get("prompt")
    src, file, missing = link
    return Card(  # by position: a page makes 100,000
        row.status.value,
        row.key,
        row.campaign,
        " ".join(tags),
        src,
        file,
        missing,
        _variant_label(row, request),
        row.soul,
        None if prompt is None else _text(prompt),
        tidy_error(row.error) if row.error else None,
        _fields(row, request, matrix, matrix_fields),
        _ids(row),
    )


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


def tags_of(row: JobRow) -> tuple[str, ...]:
    """``row.tags``, without decoding the JSON of a row that has none (most have none)."""
    return () if row.stored_json("tags") == "[]" else row.tags


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


def _variant_label(row: JobRow, request: dict[str, Any]) -> str | None:
    """What tells a job from its seed or variant twins."""
    seed = request.get("seed")
    if row.variant is not None:
        return f"variant {row.variant}" + (f" · seed {seed}" if seed is not None else "")
    return None if seed is None else f"seed {seed}"


def _text(value: Any) -> str:
    """Strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _image_name(url: str) -> str:
    """A source image by its file name: no host, no query (they may be signed)."""
    path = urlsplit(url).path if "://" in url else url
    return PurePosixPath(path).name or "image"


def _fields(
    row: JobRow, request: dict[str, Any], matrix: dict[str, Any], matrix_fields: Fields
) -> list[tuple[str, str]]:
    """What a reviewer compares between cards: the matrix row (``matrix_fields``), the
    request's shape, the soul and source image, the credits."""
    fields = list(matrix_fields)
    for name, label in REQUEST_SHOWN:
        value = request.get(name)
        if value is not None and name not in matrix:  # a matrix value shows once
            fields.append((label, f"{value} s" if name == "duration" else _text(value)))
    if row.soul:
        fields.append(("soul", row.soul))
    image = request.get("image_url")
    if isinstance(image, str) and image:
        fields.append(("source image", _image_name(image)))
    refunded = row.status is JobStatus.FAILED and row.generation_id and not charged(row)
    credits = credits_text(row.credits)
    fields.append(("credits", f"{credits} (refunded)" if refunded else credits))
    if row.attempts > 1:
        fields.append(("attempts", str(row.attempts)))
    return fields


def _ids(row: JobRow) -> list[tuple[str, str]]:
    ids = [("generation", row.generation_id)] if row.generation_id else []
    if row.sha256:
        ids.append(("sha256", row.sha256))
    if row.bytes is not None:
        ids.append(("bytes", f"{row.bytes:,}"))
    if file := row.location or row.path:
        ids.append(("file", file))
    if row.manifest:
        ids.append(("manifest", row.manifest))
    if row.updated_at:
        ids.append(("updated", row.updated_at))
    return ids

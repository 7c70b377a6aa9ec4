"""What both dialects share in their bodies and answers: status words, ids, request bodies.

The dialect-neutral reading of what a provider answers (its status words mapped to
:class:`~runner.providers.types.GenerationStatus` and :class:`~runner.providers.types.SoulStatus`,
the id and string fields a JSON answer must carry) and the shaping of what is sent (the body
with ``params`` merged in, the idempotency key, soul image URLs). The HTTP side — the secret
holder and the guarded call — is :mod:`runner.providers.base`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runner.errors import PermanentError, UnsafeURLError
from runner.outputs.policy import parse_url
from runner.providers.classify import shorten
from runner.providers.types import GenerationStatus, SoulStatus

if TYPE_CHECKING:
    from runner.providers.secret import Secret

MAX_ID_CHARS = 512  # ids go into URLs and the ledger

COMPLETED_WORDS = frozenset({"completed", "succeeded", "success"})
FAILED_WORDS = frozenset({"failed", "error", "nsfw", "canceled", "cancelled"})
QUEUED_WORDS = frozenset({"queued", "pending", "not_ready"})
SOUL_READY_WORDS = frozenset({"ready", "completed", "succeeded", "success"})
SOUL_FAILED_WORDS = frozenset({"failed", "error", "canceled", "cancelled"})

# RFC 9110 visible ASCII, as the platform documents for Idempotency-Key (1–255 characters).
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def normalize_generation(
    word: str, *, video_url: Any, error: str | None, what: str, secret: Secret | None = None
) -> GenerationStatus:
    """SPEC §6 status words → GenerationStatus; a completed one must carry a video URL.

    The video URL must be a well-formed http(s) URL, and must not carry ``secret`` (a key the
    provider echoed into it would be stored in the ledger and sent to the video host): either
    is a PermanentError, so the job fails with the reason instead of the run crashing later.
    """
    key = word.strip().lower()
    if key in COMPLETED_WORDS:
        if not isinstance(video_url, str) or not video_url.strip():
            raise PermanentError(f"{what}: status {word!r} without a video URL")
        url = video_url.strip()
        if secret is not None and secret.leaks(url):
            raise PermanentError(
                f"{what}: the video URL carries the API key; refused so that the key is "
                "neither stored nor sent to the video host"
            )
        try:
            parse_url(url, what="video URL")
        except UnsafeURLError as err:
            detail = secret.redact(str(err)) if secret is not None else str(err)
            raise PermanentError(f"{what}: malformed response: {detail}") from None
        return GenerationStatus("completed", url, None, word)
    if key in FAILED_WORDS:
        detail = f"{key}: {error}" if error and error.strip().lower() != key else key
        return GenerationStatus("failed", None, shorten(detail), word)
    if key in QUEUED_WORDS:
        return GenerationStatus("queued", None, None, word)
    return GenerationStatus("running", None, None, word)


def normalize_soul(model_id: str, word: str, *, error: str | None) -> SoulStatus:
    """Soul training words → SoulStatus (anything not ready or failed is still training)."""
    key = word.strip().lower()
    if key in SOUL_READY_WORDS:
        return SoulStatus(model_id, "ready", None)
    if key in SOUL_FAILED_WORDS:
        detail = f"{key}: {error}" if error and error.strip().lower() != key else key
        return SoulStatus(model_id, "failed", shorten(detail))
    return SoulStatus(model_id, "training", None)


def merge_params(request: Mapping[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request body: fields minus ``params`` and ``drop``, then ``params`` merged on top.

    ``params`` wins on a clash: it is the manifest's escape hatch for provider-specific fields.
    """
    body = {k: v for k, v in request.items() if k != "params" and k not in drop}
    params = request.get("params")
    if params is not None:
        if not isinstance(params, Mapping):
            raise PermanentError("request field 'params' must be a mapping")
        body.update(params)
    return body


def check_idempotency_key(key: str) -> None:
    """The key must be 1–255 visible ASCII characters (a programming error otherwise)."""
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ValueError(f"invalid idempotency key {key!r}: 1-255 visible ASCII characters")


def require_str(doc: Mapping[str, Any], field: str, *, what: str) -> str:
    """A non-empty string field of a JSON answer, else a malformed-response error."""
    value = doc.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PermanentError(f"{what}: malformed response: no {field!r} string")
    return value


def require_id(doc: Mapping[str, Any], field: str, *, what: str) -> str:
    """An id field: a non-empty string, or an integer taken as its decimal string; at most
    ``MAX_ID_CHARS`` printable characters (ids go into URLs and the ledger)."""
    value = doc.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or value.bit_length() > 128:
            raise PermanentError(f"{what}: malformed response: {field!r} is out of range")
        return str(value)
    text = require_str(doc, field, what=what)
    if len(text) > MAX_ID_CHARS or not text.isprintable():
        raise PermanentError(f"{what}: malformed response: {field!r} is not a usable id")
    return text


def check_image_urls(images: list[str], *, what: str) -> None:
    """Soul images must be URLs already (local files go through ``upload`` first)."""
    for image in images:
        if not image.startswith(("http://", "https://", "data:")):
            raise PermanentError(f"{what}: soul image is not a URL (upload it first): {image!r}")

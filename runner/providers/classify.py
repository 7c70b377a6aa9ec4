"""How both dialects turn HTTP answers and transport failures into :mod:`runner.errors`.

    HTTP 2xx                         fine (the body is checked by the dialect)
    HTTP 401 / 403                   FatalError (PermanentError for a presigned upload URL)
    HTTP 429                         ThrottledError, retry_after from Retry-After
    HTTP 400 "Maximum number of concurrent requests"   ThrottledError (the platform's limit)
    HTTP 408 / 5xx                   TransientError
    any other status                 PermanentError with the provider's own message
    connect error / connect timeout  TransientError (the request never left)
    other transport errors           UnknownOutcomeError for a non-idempotent POST (it may have
                                     been received), TransientError otherwise

Messages are built from the method, the URL path, the status code and the provider's text,
passed through a redactor so a key the provider echoes back never reaches an exception.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any, NoReturn

import httpx

from runner.errors import (
    FatalError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)

CONCURRENCY_LIMIT_TEXT = "Maximum number of concurrent requests"
MAX_MESSAGE_CHARS = 300  # provider text is quoted into errors and the ledger; keep it short
MESSAGE_FIELDS = ("detail", "message", "error", "error_message", "fail_reason")
MAX_DETAIL_DEPTH = 8  # nested error documents deeper than this are shown as "…"

Redactor = Callable[[str], str]


def _no_redaction(text: str) -> str:
    return text


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    An HTTP-date is measured from ``now`` (wall-clock epoch seconds, default ``time.time()``).
    Never negative; ``None`` when the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def render_detail(value: Any, _depth: int = 0) -> str:
    """A provider's error field as one readable line (FastAPI ``detail`` lists included).

    Whatever the shape (deep nesting, huge lists), the result is at most
    ``MAX_MESSAGE_CHARS`` long and building it never recurses past ``MAX_DETAIL_DEPTH``.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return shorten(value.strip())
    if _depth >= MAX_DETAIL_DEPTH:
        return "…"
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            part = render_detail(item, _depth + 1)
            if part:
                parts.append(part)
            if sum(len(p) for p in parts) > MAX_MESSAGE_CHARS:
                break
        return shorten("; ".join(parts))
    if isinstance(value, dict):
        if "msg" in value:
            raw_loc = value.get("loc")
            loc = raw_loc[:MAX_DETAIL_DEPTH] if isinstance(raw_loc, list) else []
            loc = [str(p)[:40] for p in loc if p != "body" and isinstance(p, str | int)]
            where = ".".join(loc)
            msg = render_detail(value["msg"], _depth + 1)
            return shorten(f"{where}: {msg}" if where else msg)
        for field in MESSAGE_FIELDS:
            if value.get(field):
                return render_detail(value[field], _depth + 1)
    try:
        return shorten(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    except (ValueError, TypeError, RecursionError):
        return "(unreadable)"


def provider_message(response: httpx.Response) -> str:
    """The provider's own explanation of an answer: a JSON error field, else the body text."""
    try:
        doc = response.json()
    except (ValueError, RecursionError):
        doc = None
    text = ""
    if isinstance(doc, dict):
        for field in MESSAGE_FIELDS:
            text = render_detail(doc.get(field))
            if text:
                break
    elif doc is not None:
        text = render_detail(doc)
    if not text:
        text = response.text.strip() or response.reason_phrase
    return shorten(text)


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def raise_for_status(
    response: httpx.Response,
    *,
    what: str,
    redact: Redactor = _no_redaction,
    credentials_apply: bool = True,
) -> None:
    """Raise the :mod:`runner.errors` class an HTTP status means; return on 2xx.

    ``credentials_apply=False`` is for URLs that never receive our key (a presigned upload
    URL): a 401/403 there says nothing about the account, so it is not fatal.
    """
    code = response.status_code
    if 200 <= code < 300:
        return
    message = redact(provider_message(response))
    text = f"{what}: HTTP {code}: {message}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if code == 429 or (code == 400 and CONCURRENCY_LIMIT_TEXT.lower() in message.lower()):
        raise ThrottledError(text, status_code=code, retry_after=retry_after)
    if code in (401, 403) and credentials_apply:
        raise FatalError(text, status_code=code)
    if code == 408 or code >= 500:
        raise TransientError(text, status_code=code, retry_after=retry_after)
    raise PermanentError(text, status_code=code)


def raise_for_transport(
    exc: httpx.RequestError,
    *,
    what: str,
    redact: Redactor = _no_redaction,
    non_idempotent: bool = False,
) -> NoReturn:
    """Raise the :mod:`runner.errors` class a failed exchange means.

    ``non_idempotent`` is set for POSTs that create something (submit, soul training): once
    the request may have left, only a retry with the same idempotency key is safe.
    """
    detail = shorten(redact(str(exc))) or "no detail"
    kind = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        raise TransientError(f"{what}: could not connect ({kind}: {detail})") from None
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        raise PermanentError(f"{what}: request could not be sent ({kind}: {detail})") from None
    if non_idempotent:
        raise UnknownOutcomeError(
            f"{what}: no answer, the request may have been received ({kind}: {detail})"
        ) from None
    raise TransientError(f"{what}: {kind}: {detail}") from None

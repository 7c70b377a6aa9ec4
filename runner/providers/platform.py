"""The ``higgsfield`` dialect: the official queue-style platform API.

See ``higgsfield-platform-api.md``:

    POST {base}/{model}                      body = the request minus ``model``/``type``,
                                             ``params`` merged in, a soul as
                                             ``custom_reference_id`` → {"request_id", ...}
    GET  {base}/requests/{id}/status         → {"status", "video": {"url"}, "error", ...}
    POST {base}/v1/custom-references         {"name", "input_images", "model_version"} → {"id"}
    GET  {base}/v1/custom-references/{id}    → {"id", "status", "fail_reason", ...}
    POST {base}/files/generate-upload-url    {"content_type"} → {"upload_url", "public_url",
                                             "upload_headers"}; then PUT the bytes there with
                                             every one of ``upload_headers``
    POST {base}/requests/{id}/cancel         202 while queued (refunded), 400 once processing
    POST {base}/estimate/{model}             the submit body → {"credits": "1.500", "usd"}
    GET  {base}/v1/custom-references/list    ?page=&page_size= → {"items": [...], ...}

A completed status carries ``expires_at`` (ISO 8601), kept in
:attr:`~runner.providers.types.GenerationStatus.expires_at`; one that says ``"expired": true``
(the result is gone) is reported ``failed`` with an error starting ``expired``.

Auth is ``Authorization: Key <id>:<secret>`` from ``$HF_KEY``, or ``$HF_API_KEY`` and
``$HF_API_SECRET`` (or the manifest's ``api_key_env`` holding ``id:secret``). The key never
goes to the presigned ``upload_url``. Status is read from URLs built on the base URL, not from
the ``status_url`` the platform returns, so the key only ever goes to the base URL's origin.

The model comes from the request's ``model`` field; without one, :data:`DEFAULT_MODELS` picks
by ``type``. The platform documents no text-to-video model id, so both types default to
``higgsfield-ai/dop/standard`` (DoP); set ``model:`` in the manifest to choose another.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runner.errors import PermanentError, UnsafeURLError, UsageError
from runner.outputs.policy import parse_url
from runner.providers.base import HttpProvider, env_value
from runner.providers.classify import shorten
from runner.providers.messages import (
    check_image_urls,
    merge_params,
    normalize_generation,
    normalize_soul,
    require_id,
    require_str,
)
from runner.providers.secret import Secret
from runner.providers.types import GenerationStatus, SoulStatus

DEFAULT_BASE_URL = "https://api.higgsfield.ai"
KEY_ENV = "HF_KEY"
KEY_ID_ENV = "HF_API_KEY"
KEY_SECRET_ENV = "HF_API_SECRET"
DEFAULT_MODEL = "higgsfield-ai/dop/standard"
DEFAULT_MODELS: Mapping[str, str] = {
    "text-to-video": DEFAULT_MODEL,
    "image-to-video": DEFAULT_MODEL,
}
SOUL_MODEL_VERSION = "v1"
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HEADER_TEXT = re.compile(r"[\x20-\x7e\t]*")
# A model id is a path at the API root; these first segments are the API's own endpoints.
RESERVED_MODEL_PREFIXES = frozenset({"requests", "files", "v1", "estimate"})
REFERENCE_PAGE_SIZE = 100
MAX_REFERENCE_PAGES = 100  # 10,000 souls; a server that ignores ``page`` cannot loop us forever
REFERENCE_LIST_FIELDS = ("items", "data", "references", "results")
SOUL_RANKS = {"ready": 0, "training": 1, "failed": 2}  # which same-named soul find_reference picks


class PlatformProvider(HttpProvider):
    """Client for the official Higgsfield platform API."""

    name = "higgsfield"
    default_base_url = DEFAULT_BASE_URL

    @classmethod
    def credential_from(cls, environ: Mapping[str, str], api_key_env: str | None) -> Secret:
        """``Key id:secret`` from ``$HF_KEY`` (or ``api_key_env``), else the id/secret pair."""
        if api_key_env:
            return _key_secret(env_value(environ, api_key_env), api_key_env)
        if (environ.get(KEY_ENV) or "").strip():
            return _key_secret(env_value(environ, KEY_ENV), KEY_ENV)
        if (environ.get(KEY_ID_ENV) or "").strip() or (environ.get(KEY_SECRET_ENV) or "").strip():
            key_id = env_value(environ, KEY_ID_ENV)
            secret = env_value(environ, KEY_SECRET_ENV)
            pair = f"{key_id}:{secret}"
            return Secret(f"Key {pair}", parts=(pair, secret), ids=(key_id,))
        raise UsageError(
            f"missing API key: set {KEY_ENV}=key_id:key_secret "
            f"(or {KEY_ID_ENV} and {KEY_SECRET_ENV})"
        )

    async def submit(
        self,
        request: dict[str, Any],
        *,
        idempotency_key: str,
        soul_model_id: str | None = None,
    ) -> str:
        """POST /{model}; returns the ``request_id``."""
        model = model_for(request)
        body = merge_params(request, drop=("model", "type"))
        if soul_model_id is not None:
            body["custom_reference_id"] = soul_model_id
        url = "/".join([self.base_url, model])
        doc = await self.create(url, body, idempotency_key=idempotency_key)
        return require_id(doc, "request_id", what=f"POST /{model}")

    async def status(self, generation_id: str) -> GenerationStatus:
        """GET /requests/{id}/status, normalized; the video is at ``video.url``."""
        what = f"GET /requests/{generation_id}/status"
        doc, word = await self.read_status(self.url("requests", generation_id, "status"), what=what)
        expires_at = parse_time(doc.get("expires_at"))
        if doc.get("expired") is True:
            when = self.error_text(doc.get("expires_at")) if expires_at else None
            error = shorten(f"expired: the result expired at {when}" if when else "expired")
            return GenerationStatus("failed", None, error, word, expires_at)
        video = doc.get("video")
        video_url = video.get("url") if isinstance(video, dict) else None
        status = normalize_generation(
            word,
            video_url=video_url,
            error=self.error_text(doc.get("error")),
            what=what,
            secret=self._credential,
        )
        return dataclasses.replace(status, expires_at=expires_at) if expires_at else status

    async def cancel(self, generation_id: str) -> bool:
        """POST /requests/{id}/cancel: 202 → True (cancelled while queued, refunded); 400 →
        False (already processing, so it runs and is paid for)."""
        try:
            await self.send("POST", self.url("requests", generation_id, "cancel"))
        except PermanentError as err:
            if err.status_code == 400:
                return False
            raise
        return True

    async def estimate(self, request: dict[str, Any]) -> float:
        """POST /estimate/{model} with the body ``submit`` would send; returns ``credits``."""
        model = model_for(request)
        body = merge_params(request, drop=("model", "type"))
        what = f"POST /estimate/{model}"
        response = await self.send(
            "POST", "/".join([self.base_url, "estimate", model]), json_body=body
        )
        return parse_credits(self.json_object(response).get("credits"), what=what)

    async def find_reference(self, name: str) -> str | None:
        """GET /v1/custom-references/list page by page: the id of the reference named ``name``
        (a ready one first, then one training, then a failed one), or None."""
        what = "GET /v1/custom-references/list"
        best: tuple[int, str] | None = None
        for page in range(1, MAX_REFERENCE_PAGES + 1):
            query = f"?page={page}&page_size={REFERENCE_PAGE_SIZE}"
            url = self.url("v1", "custom-references", "list") + query
            doc = self.json_object(await self.send("GET", url))
            items = reference_items(doc, what=what)
            for item in items:
                if item.get("name") != name:
                    continue
                word = item.get("status")
                state = normalize_soul("", word if isinstance(word, str) else "", error=None).state
                rank = SOUL_RANKS[state]
                if best is None or rank < best[0]:
                    best = (rank, require_id(item, "id", what=what))
            total = doc.get("total")
            last = len(items) < REFERENCE_PAGE_SIZE or (
                isinstance(total, int) and page * REFERENCE_PAGE_SIZE >= total
            )
            if last or (best is not None and best[0] == 0):
                break
        return None if best is None else best[1]

    async def train_soul(
        self, name: str, images: list[str], *, idempotency_key: str | None = None
    ) -> str:
        """POST /v1/custom-references with image URLs (and ``Idempotency-Key`` when given);
        returns the reference ``id``."""
        what = "POST /v1/custom-references"
        check_image_urls(images, what=what)
        body = {
            "name": name,
            "input_images": [{"type": "image_url", "image_url": url} for url in images],
            "model_version": SOUL_MODEL_VERSION,
        }
        doc = await self.create(
            self.url("v1", "custom-references"), body, idempotency_key=idempotency_key
        )
        return require_id(doc, "id", what=what)

    async def soul_status(self, model_id: str) -> SoulStatus:
        """GET /v1/custom-references/{id}: completed → ready, failed → failed, else training."""
        what = f"GET /v1/custom-references/{model_id}"
        doc, word = await self.read_status(self.url("v1", "custom-references", model_id), what=what)
        error = self.error_text(doc.get("fail_reason")) or self.error_text(doc.get("error"))
        return normalize_soul(model_id, word, error=error)

    async def upload(self, data: bytes, content_type: str) -> str:
        """Get a presigned URL, PUT the bytes there (without our key); returns the public URL."""
        what = "POST /files/generate-upload-url"
        response = await self.send(
            "POST",
            self.url("files", "generate-upload-url"),
            json_body={"content_type": content_type},
        )
        doc = self.json_object(response)
        upload_url = require_str(doc, "upload_url", what=what)
        public_url = require_str(doc, "public_url", what=what)
        raw_headers = doc.get("upload_headers") or {}
        if not isinstance(raw_headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_headers.items()
        ):
            raise PermanentError(f"{what}: malformed response: 'upload_headers' is not a mapping")
        if not all(
            _HEADER_NAME.fullmatch(k) and _HEADER_TEXT.fullmatch(v) for k, v in raw_headers.items()
        ):
            raise PermanentError(f"{what}: malformed response: 'upload_headers' cannot be sent")
        try:
            parse_url(public_url, what="public_url")
        except UnsafeURLError as err:
            raise PermanentError(f"{what}: malformed response: {self.redact(str(err))}") from None
        # The upload URL is the provider's to choose, the address it reaches is not: the URL
        # policy decides it (and the upload client connects only where the policy allows).
        target = await self.check_outside_url(upload_url, what="upload URL")
        headers = dict(raw_headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        await self.send(
            "PUT",
            str(target),
            content=data,
            headers=headers,
            auth=False,
            client=self.upload_client(),
            policy=await self.url_policy(),
        )
        return public_url


def model_for(request: Mapping[str, Any]) -> str:
    """The model id a request goes to: its ``model``, else the default for its ``type``."""
    model = request.get("model") or DEFAULT_MODELS.get(str(request.get("type")), DEFAULT_MODEL)
    if not isinstance(model, str) or not MODEL_ID.fullmatch(model):
        raise PermanentError(f"invalid model id {model!r}")
    if model.split("/", 1)[0] in RESERVED_MODEL_PREFIXES:
        raise PermanentError(f"invalid model id {model!r}: that path is an API endpoint")
    return model


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; naive taken as UTC) or epoch seconds, as an aware
    datetime; None when absent or unreadable (a missing expiry never fails a generation)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return None
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_credits(value: Any, *, what: str) -> float:
    """An estimate's ``credits`` (a decimal string or a number) as a float."""
    try:
        credits = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        credits = math.nan
    if isinstance(value, bool) or not math.isfinite(credits) or credits < 0:
        raise PermanentError(f"{what}: malformed response: 'credits' is not a number: {value!r}")
    return credits


def reference_items(doc: Mapping[str, Any], *, what: str) -> list[Mapping[str, Any]]:
    """The references of one page of the list: objects under ``items`` (or ``data``,
    ``references``, ``results``)."""
    for field in REFERENCE_LIST_FIELDS:
        items = doc.get(field)
        if isinstance(items, list):
            return [item for item in items if isinstance(item, Mapping)]
    raise PermanentError(f"{what}: malformed response: no list of references")


def _key_secret(value: str, variable: str) -> Secret:
    key_id, sep, secret = value.partition(":")
    if not sep or not key_id or not secret:
        raise UsageError(f"{variable} must look like key_id:key_secret")
    return Secret(f"Key {value}", parts=(value, secret), ids=(key_id,))

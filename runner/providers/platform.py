"""The ``higgsfield`` dialect: the official queue-style platform API.

See ``higgsfield-platform-api.md``:

    POST {base}/{model}                      body = the request minus ``model``/``type``,
                                             ``params`` merged in, a soul as
                                             ``custom_reference_id`` → {"request_id", ...}
    GET  {base}/requests/{id}/status         → {"status", "video": {"url"}, "error", ...}
    POST {base}/v1/custom-references         {"name", "input_images", "model_version"} → {"id"}
    GET  {base}/v1/custom-references/{id}    → {"id", "status", "fail_reason", ...}
    POST {base}/files/generate-upload-url    {"content_type"} → {"upload_url", "public_url",
                                             "upload_headers"}; then PUT the bytes there

Auth is ``Authorization: Key <id>:<secret>`` from ``$HF_KEY``, or ``$HF_API_KEY`` and
``$HF_API_SECRET`` (or the manifest's ``api_key_env`` holding ``id:secret``). The key never
goes to the presigned ``upload_url``. Status is read from URLs built on the base URL, not from
the ``status_url`` the platform returns, so the key only ever goes to the base URL's origin.

The model comes from the request's ``model`` field; without one, :data:`DEFAULT_MODELS` picks
by ``type``. The platform documents no text-to-video model id, so both types default to
``higgsfield-ai/dop/standard`` (DoP); set ``model:`` in the manifest to choose another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from runner.errors import PermanentError, UsageError
from runner.providers.base import (
    HttpProvider,
    Secret,
    check_image_urls,
    env_value,
    merge_params,
    normalize_generation,
    normalize_soul,
    require_id,
    require_str,
)
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
# A model id is a path at the API root; these first segments are the API's own endpoints.
RESERVED_MODEL_PREFIXES = frozenset({"requests", "files", "v1"})


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
            return Secret(f"Key {key_id}:{secret}", parts=(f"{key_id}:{secret}", key_id, secret))
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
        video = doc.get("video")
        video_url = video.get("url") if isinstance(video, dict) else None
        return normalize_generation(
            word, video_url=video_url, error=self.error_text(doc.get("error")), what=what
        )

    async def train_soul(self, name: str, images: list[str]) -> str:
        """POST /v1/custom-references with image URLs; returns the reference ``id``."""
        what = "POST /v1/custom-references"
        check_image_urls(images, what=what)
        body = {
            "name": name,
            "input_images": [{"type": "image_url", "image_url": url} for url in images],
            "model_version": SOUL_MODEL_VERSION,
        }
        doc = await self.create(self.url("v1", "custom-references"), body)
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
        try:
            scheme = httpx.URL(upload_url).scheme
        except httpx.InvalidURL:
            scheme = ""
        if scheme not in ("http", "https"):
            raise PermanentError(f"{what}: malformed response: 'upload_url' is not http(s)")
        headers = dict(raw_headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        await self.send("PUT", upload_url, content=data, headers=headers, auth=False)
        return public_url


def model_for(request: Mapping[str, Any]) -> str:
    """The model id a request goes to: its ``model``, else the default for its ``type``."""
    model = request.get("model") or DEFAULT_MODELS.get(str(request.get("type")), DEFAULT_MODEL)
    if not isinstance(model, str) or not MODEL_ID.fullmatch(model):
        raise PermanentError(f"invalid model id {model!r}")
    if model.split("/", 1)[0] in RESERVED_MODEL_PREFIXES:
        raise PermanentError(f"invalid model id {model!r}: that path is an API endpoint")
    return model


def _key_secret(value: str, variable: str) -> Secret:
    key_id, sep, secret = value.partition(":")
    if not sep or not key_id or not secret:
        raise UsageError(f"{variable} must look like key_id:key_secret")
    return Secret(f"Key {value}", parts=(value, key_id, secret))

"""The ``higgsfieldapi`` dialect: the seed API (``seed-higgsfield-api.md``).

    POST {base}/generate            body = the request (``params`` merged in; a soul's model
                                    id as ``model_id``) → {"success", "generation_id", "type"}
    GET  {base}/status/{id}         → {"status", "video_url", "type", ...}
    POST {base}/soul/train          {"name", "images": [url, ...]} → {"model_id", ...}
    GET  {base}/soul/models/{id}    → {"model_id", "status": "ready" | ..., ...}

Auth is ``Authorization: Bearer $HIGGSFIELD_API_KEY`` (or the manifest's ``api_key_env``).
The seed API has no upload endpoint, so this dialect has no ``upload`` (it is no
:class:`~runner.providers.UploadProvider`): its souls need image URLs (the ``higgsfield``
provider uploads local files). The Soul paths are the document's own placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.errors import PermanentError
from runner.providers.base import HttpProvider, env_value
from runner.providers.messages import (
    check_image_urls,
    merge_params,
    normalize_generation,
    normalize_soul,
    require_id,
)
from runner.providers.secret import Secret
from runner.providers.types import GenerationStatus, SoulStatus

DEFAULT_BASE_URL = "https://higgsfieldapi.com/api/v1"
API_KEY_ENV = "HIGGSFIELD_API_KEY"
ERROR_FIELDS = ("error", "message", "detail")


class HiggsfieldApiProvider(HttpProvider):
    """Client for the seed ``higgsfieldapi`` API."""

    name = "higgsfieldapi"
    default_base_url = DEFAULT_BASE_URL

    @classmethod
    def credential_from(cls, environ: Mapping[str, str], api_key_env: str | None) -> Secret:
        """``Bearer <key>`` from ``$HIGGSFIELD_API_KEY`` or the manifest's ``api_key_env``."""
        key = env_value(environ, api_key_env or API_KEY_ENV)
        return Secret(f"Bearer {key}", parts=(key,))

    async def submit(
        self,
        request: dict[str, Any],
        *,
        idempotency_key: str,
        soul_model_id: str | None = None,
    ) -> str:
        """POST /generate; returns the ``generation_id``."""
        body = merge_params(request)
        if soul_model_id is not None:
            body["model_id"] = soul_model_id
        doc = await self.create(self.url("generate"), body, idempotency_key=idempotency_key)
        return require_id(
            self._accepted(doc, "POST /generate"), "generation_id", what="POST /generate"
        )

    async def status(self, generation_id: str) -> GenerationStatus:
        """GET /status/{id}, normalized."""
        what = f"GET /status/{generation_id}"
        doc, word = await self.read_status(self.url("status", generation_id), what=what)
        return normalize_generation(
            word,
            video_url=doc.get("video_url"),
            error=self._error(doc),
            what=what,
            secret=self._credential,
        )

    async def train_soul(
        self, name: str, images: list[str], *, idempotency_key: str | None = None
    ) -> str:
        """POST /soul/train with image URLs (and ``Idempotency-Key`` when given); returns the
        ``model_id``."""
        what = "POST /soul/train"
        check_image_urls(images, what=what)
        doc = await self.create(
            self.url("soul", "train"),
            {"name": name, "images": list(images)},
            idempotency_key=idempotency_key,
        )
        doc = self._accepted(doc, what)
        return require_id(doc, "model_id" if "model_id" in doc else "id", what=what)

    async def soul_status(self, model_id: str) -> SoulStatus:
        """GET /soul/models/{id}: ``ready`` → ready, failed/error → failed, else training."""
        what = f"GET /soul/models/{model_id}"
        doc, word = await self.read_status(self.url("soul", "models", model_id), what=what)
        return normalize_soul(model_id, word, error=self._error(doc))

    def _accepted(self, doc: dict[str, Any], what: str) -> dict[str, Any]:
        """The answer, unless it says ``"success": false`` (a refusal with a 2xx status)."""
        if doc.get("success") is False:
            raise PermanentError(f"{what}: refused: {self._error(doc) or 'no reason given'}")
        return doc

    def _error(self, doc: Mapping[str, Any]) -> str | None:
        for field in ERROR_FIELDS:
            text = self.error_text(doc.get(field))
            if text:
                return text
        return None

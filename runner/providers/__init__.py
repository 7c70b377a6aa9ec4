"""Providers: the two Higgsfield API dialects behind one interface.

The executor talks to a :class:`Provider` and never sees a dialect's URLs or JSON:

- ``higgsfieldapi`` (:mod:`runner.providers.higgsfieldapi`): the seed API at
  ``https://higgsfieldapi.com/api/v1`` — ``Authorization: Bearer $HIGGSFIELD_API_KEY``.
- ``higgsfield`` (:mod:`runner.providers.platform`): the official queue-style platform API at
  ``https://api.higgsfield.ai`` — ``Authorization: Key $HF_KEY`` (``id:secret``).

Both raise only :mod:`runner.errors` provider errors, never retry and never rate-limit: the
executor owns both. The HTTP client is injectable, so tests run them over
``httpx.MockTransport`` or the mock ASGI app (:mod:`runner.mock`) with no sockets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from runner.errors import UsageError

DEFAULT_PROVIDER = "higgsfieldapi"
BASE_URL_ENV = "HIGGSFIELD_BASE_URL"

GenerationState = Literal["queued", "running", "completed", "failed"]
SoulState = Literal["training", "ready", "failed"]


@dataclass(frozen=True)
class ProviderSettings:
    """The manifest's ``provider:`` block: which dialect, where, and which key variable."""

    name: str = DEFAULT_PROVIDER
    base_url: str | None = None
    api_key_env: str | None = None


@dataclass(frozen=True)
class GenerationStatus:
    """A generation's state, normalized across dialects (SPEC §6).

    ``video_url`` is set exactly when ``state`` is ``completed``; ``error`` when it is
    ``failed`` (the provider's status word, then its error text if any). ``raw`` is the
    provider's own status word.
    """

    state: GenerationState
    video_url: str | None
    error: str | None
    raw: str


@dataclass(frozen=True)
class SoulStatus:
    """A soul (identity) model's training state, normalized across dialects."""

    model_id: str
    state: SoulState
    error: str | None


class Provider(Protocol):
    """What the executor needs from an API dialect. Every method may raise a ProviderError."""

    name: str
    base_url: str
    account: str  # opaque, stable per credential; never the credential itself

    async def submit(
        self,
        request: dict[str, Any],
        *,
        idempotency_key: str,
        soul_model_id: str | None = None,
    ) -> str:
        """Start a generation; returns its id. Sends ``Idempotency-Key: idempotency_key``."""
        ...

    async def status(self, generation_id: str) -> GenerationStatus:
        """The generation's current, normalized state."""
        ...

    async def train_soul(self, name: str, images: list[str]) -> str:
        """Start training a soul model from image URLs; returns the model id."""
        ...

    async def soul_status(self, model_id: str) -> SoulStatus:
        """The soul model's training state."""
        ...

    async def upload(self, data: bytes, content_type: str) -> str:
        """Upload a local file's bytes; returns a public URL usable as an image input."""
        ...

    async def aclose(self) -> None:
        """Close the HTTP client if the provider created it (an injected one is left open)."""
        ...


def make_provider(
    settings: ProviderSettings,
    *,
    client: httpx.AsyncClient | None = None,
    environ: Mapping[str, str] = os.environ,
    timeout: httpx.Timeout | None = None,
) -> Provider:
    """Build the provider ``settings`` names, with its base URL and credentials resolved.

    Base URL: ``$HIGGSFIELD_BASE_URL`` > ``settings.base_url`` > the dialect's default.
    Credentials come from ``environ`` (SPEC §2, or ``settings.api_key_env``); a missing or
    unusable key is a :class:`~runner.errors.UsageError` naming the variable, raised before any
    request. ``client`` is used as given (and not closed by ``aclose``); the provider still
    decides per request whether the URL's origin may receive the key. ``timeout`` (default
    :data:`runner.providers.base.DEFAULT_TIMEOUT`) is applied to every request, an injected
    client's own default notwithstanding.
    """
    from runner.providers.base import DEFAULT_TIMEOUT, HttpProvider, check_base_url
    from runner.providers.higgsfieldapi import HiggsfieldApiProvider
    from runner.providers.platform import PlatformProvider

    dialects: dict[str, type[HttpProvider]] = {
        HiggsfieldApiProvider.name: HiggsfieldApiProvider,
        PlatformProvider.name: PlatformProvider,
    }
    dialect = dialects.get(settings.name)
    if dialect is None:
        known = " or ".join(sorted(dialects))
        raise UsageError(f"unknown provider {settings.name!r}: expected {known}")
    base_url = environ.get(BASE_URL_ENV) or settings.base_url or dialect.default_base_url
    check_base_url(base_url, source=BASE_URL_ENV if environ.get(BASE_URL_ENV) else "base_url")
    credential = dialect.credential_from(environ, settings.api_key_env)
    return dialect(
        base_url=base_url,
        credential=credential,
        client=client,
        timeout=timeout or DEFAULT_TIMEOUT,
    )


__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_PROVIDER",
    "GenerationState",
    "GenerationStatus",
    "Provider",
    "ProviderSettings",
    "SoulState",
    "SoulStatus",
    "make_provider",
]

"""Providers: the two Higgsfield API dialects behind one interface.

The executor talks to a :class:`Provider` (the capability protocols and records are declared
once, in :mod:`runner.providers.types`) and never sees a dialect's URLs or JSON:

- ``higgsfieldapi`` (:mod:`runner.providers.higgsfieldapi`): the seed API at
  ``https://higgsfieldapi.com/api/v1`` — ``Authorization: Bearer $HIGGSFIELD_API_KEY``.
- ``higgsfield`` (:mod:`runner.providers.platform`): the official queue-style platform API at
  ``https://api.higgsfield.ai`` — ``Authorization: Key $HF_KEY`` (``id:secret``); the only
  one that can upload local files (:func:`uploader` tells).

Both raise only :mod:`runner.errors` provider errors, never retry and never rate-limit: the
executor owns both. The HTTP client is injectable, so tests run them over
``httpx.MockTransport`` or the mock ASGI app (:mod:`runner.mock`) with no sockets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from runner.errors import UsageError
from runner.providers.types import (
    DEFAULT_PROVIDER,
    CancelProvider,
    EstimateProvider,
    GenerationProvider,
    GenerationState,
    GenerationStatus,
    Provider,
    ProviderSettings,
    ReferenceLister,
    SoulProvider,
    SoulState,
    SoulStatus,
    UploadProvider,
    canceller,
    estimator,
    reference_lister,
    uploader,
)

if TYPE_CHECKING:
    import httpx

    from runner.outputs.policy import URLPolicy
    from runner.providers.higgsfieldapi import HiggsfieldApiProvider
    from runner.providers.platform import PlatformProvider

BASE_URL_ENV = "HIGGSFIELD_BASE_URL"
# Variables that hold credentials by default (SPEC §2); a manifest may name another.
CREDENTIAL_VARIABLES = ("HIGGSFIELD_API_KEY", "HF_KEY", "HF_API_KEY", "HF_API_SECRET")


def make_provider(
    settings: ProviderSettings,
    *,
    client: httpx.AsyncClient | None = None,
    environ: Mapping[str, str] = os.environ,
    timeout: httpx.Timeout | None = None,
    upload_client: httpx.AsyncClient | None = None,
    url_policy: URLPolicy | None = None,
) -> Provider:
    """Build the provider ``settings`` names, with its base URL and credentials resolved.

    Base URL: ``$HIGGSFIELD_BASE_URL`` > ``settings.base_url`` > the dialect's default.
    Credentials come from ``environ`` (SPEC §2, or ``settings.api_key_env``); a missing or
    unusable key is a :class:`~runner.errors.UsageError` naming the variable, raised before any
    request. ``client`` is used as given (and not closed by ``aclose``); the provider still
    decides per request whether the URL's origin may receive the key. ``timeout`` (default
    :data:`runner.providers.base.DEFAULT_TIMEOUT`) is applied to every request, an injected
    client's own default notwithstanding.

    URLs the provider hands out to send something to (presigned upload URLs) go through
    ``upload_client`` (default: a :func:`~runner.outputs.pinned.pinned_client`, or the injected
    ``client``) under ``url_policy`` (default: ``URLPolicy.for_base_url(base_url)``, decided on
    first use).
    """
    from runner.providers.base import DEFAULT_TIMEOUT

    dialect, base_url, credential = _resolve(settings, environ)
    return dialect(
        base_url=base_url,
        credential=credential,
        client=client,
        timeout=timeout or DEFAULT_TIMEOUT,
        upload_client=upload_client,
        url_policy=url_policy,
    )


def check_credentials(settings: ProviderSettings, environ: Mapping[str, str] = os.environ) -> None:
    """What :func:`make_provider` checks (dialect, base URL, key), without building anything:
    a :class:`~runner.errors.UsageError` naming the problem."""
    _resolve(settings, environ)


def _resolve(
    settings: ProviderSettings, environ: Mapping[str, str]
) -> tuple[type[HiggsfieldApiProvider] | type[PlatformProvider], str, Any]:
    from runner.providers.base import check_base_url
    from runner.providers.higgsfieldapi import HiggsfieldApiProvider
    from runner.providers.platform import PlatformProvider

    # The union (not type[HttpProvider]) lets mypy check each dialect against Provider.
    dialects: dict[str, type[HiggsfieldApiProvider] | type[PlatformProvider]] = {
        HiggsfieldApiProvider.name: HiggsfieldApiProvider,
        PlatformProvider.name: PlatformProvider,
    }
    dialect = dialects.get(settings.name)
    if dialect is None:
        known = " or ".join(sorted(dialects))
        raise UsageError(f"unknown provider {settings.name!r}: expected {known}")
    base_url = environ.get(BASE_URL_ENV) or settings.base_url or dialect.default_base_url
    check_base_url(base_url, source=BASE_URL_ENV if environ.get(BASE_URL_ENV) else "base_url")
    return dialect, base_url, dialect.credential_from(environ, settings.api_key_env)


def redact(
    text: str,
    *,
    provider: object | None = None,
    environ: Mapping[str, str] | None = None,
    names: tuple[str, ...] = (),
) -> str:
    """``text`` without any credential in it, in any spelling a URL gives it.

    Masks ``provider``'s own credential (when it has one) and the value of every credential
    variable in ``environ`` (:data:`CREDENTIAL_VARIABLES` plus ``names``, e.g. a manifest's
    ``api_key_env``), an ``id:secret`` value's halves included. For what is stored or printed:
    a video URL, an error text, a ledger row.
    """
    return redactor(provider=provider, environ=environ, names=names)(text)


def redactor(
    *,
    provider: object | None = None,
    environ: Mapping[str, str] | None = None,
    names: tuple[str, ...] = (),
) -> Callable[[str], str]:
    """What :func:`redact` does, prepared once for many texts (a ledger's rows)."""
    from runner.providers.secret import Secret

    masks: list[Callable[[str], str]] = []
    if provider is not None:
        from runner.providers.base import HttpProvider  # httpx: only with a provider

        if isinstance(provider, HttpProvider):
            masks.append(provider.redact)
    if environ is not None:
        for name in (*CREDENTIAL_VARIABLES, *names):
            value = (environ.get(name) or "").strip()
            if value:
                masks.append(Secret(value, parts=tuple(value.split(":", 1))).redact)

    def mask(text: str) -> str:
        for one in masks:
            text = one(text)
        return text

    return mask


__all__ = [
    "BASE_URL_ENV",
    "CREDENTIAL_VARIABLES",
    "DEFAULT_PROVIDER",
    "CancelProvider",
    "EstimateProvider",
    "GenerationProvider",
    "GenerationState",
    "GenerationStatus",
    "Provider",
    "ProviderSettings",
    "ReferenceLister",
    "SoulProvider",
    "SoulState",
    "SoulStatus",
    "UploadProvider",
    "canceller",
    "check_credentials",
    "estimator",
    "make_provider",
    "redact",
    "redactor",
    "reference_lister",
    "uploader",
]

"""What a provider is, declared once: the records it returns and its capabilities.

A dialect is a :class:`GenerationProvider` (submit, poll, close). Both dialects also train
souls (:class:`SoulProvider`), so what :func:`runner.providers.make_provider` returns is a
:class:`Provider`: both at once. Other capabilities only some dialects have; ask the helper
rather than calling blind: uploading local files (:class:`UploadProvider`, :func:`uploader`),
cancelling a queued generation (:class:`CancelProvider`, :func:`canceller`), pricing a request
(:class:`EstimateProvider`, :func:`estimator`) and finding a soul by name
(:class:`ReferenceLister`, :func:`reference_lister`). Today the ``higgsfield`` platform
dialect has all four and the seed ``higgsfieldapi`` none.

Every method may raise a :class:`~runner.errors.ProviderError`. The protocols are
``runtime_checkable``, so ``isinstance(p, UploadProvider)`` answers whether ``p`` can upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

DEFAULT_PROVIDER = "higgsfieldapi"

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
    provider's own status word. ``expires_at`` (timezone-aware) is when the provider stops
    keeping the result, where it says (the platform, once completed); a result the provider
    reports as already expired is ``failed`` with an error starting ``expired``.
    """

    state: GenerationState
    video_url: str | None
    error: str | None
    raw: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class SoulStatus:
    """A soul (identity) model's training state, normalized across dialects."""

    model_id: str
    state: SoulState
    error: str | None


@runtime_checkable
class GenerationProvider(Protocol):
    """What the executor needs from an API dialect: start generations and follow them."""

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

    async def aclose(self) -> None:
        """Close the HTTP client if the provider created it (an injected one is left open)."""
        ...


@runtime_checkable
class SoulProvider(Protocol):
    """A dialect that trains soul (identity) models from image URLs."""

    async def train_soul(
        self, name: str, images: list[str], *, idempotency_key: str | None = None
    ) -> str:
        """Start training a soul model from image URLs; returns the model id. With
        ``idempotency_key`` it is sent as ``Idempotency-Key``: a retry after a lost answer
        gets the same model back instead of training (and paying) twice."""
        ...

    async def soul_status(self, model_id: str) -> SoulStatus:
        """The soul model's training state."""
        ...


@runtime_checkable
class UploadProvider(Protocol):
    """A dialect that hosts local files, so they can be given as image URLs."""

    async def upload(self, data: bytes, content_type: str) -> str:
        """Upload a local file's bytes; returns a public URL usable as an image input."""
        ...


@runtime_checkable
class CancelProvider(Protocol):
    """A dialect that can cancel a generation while it is still queued (and refunds it)."""

    async def cancel(self, generation_id: str) -> bool:
        """True if the generation was cancelled while queued (or had been already); False if
        it had already started, so it runs to its end and is paid for."""
        ...


@runtime_checkable
class EstimateProvider(Protocol):
    """A dialect that prices a request before it is sent."""

    async def estimate(self, request: dict[str, Any]) -> float:
        """The credits ``request`` (a job's request, as for ``submit``) would cost."""
        ...


@runtime_checkable
class ReferenceLister(Protocol):
    """A dialect that lists the account's soul models, so one can be found by name."""

    async def find_reference(self, name: str) -> str | None:
        """The model id of the account's soul named ``name`` (the newest one not failed,
        else the newest), or None when there is none."""
        ...


@runtime_checkable
class Provider(GenerationProvider, SoulProvider, Protocol):
    """What :func:`~runner.providers.make_provider` returns: generations and souls."""


def uploader(provider: object) -> UploadProvider | None:
    """``provider`` as an :class:`UploadProvider`, or None when its dialect cannot upload."""
    return provider if isinstance(provider, UploadProvider) else None


def canceller(provider: object) -> CancelProvider | None:
    """``provider`` as a :class:`CancelProvider`, or None when its dialect cannot cancel."""
    return provider if isinstance(provider, CancelProvider) else None


def estimator(provider: object) -> EstimateProvider | None:
    """``provider`` as an :class:`EstimateProvider`, or None when its dialect cannot price."""
    return provider if isinstance(provider, EstimateProvider) else None


def reference_lister(provider: object) -> ReferenceLister | None:
    """``provider`` as a :class:`ReferenceLister`, or None when its dialect cannot list."""
    return provider if isinstance(provider, ReferenceLister) else None

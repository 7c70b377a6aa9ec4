"""Helpers for tests (ours and the executor's) that run against the mock.

``tests/conftest.py`` wraps these in fixtures; they live here so any test module or benchmark
can import them without importing a conftest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette

from runner.mock import base_urls, create_app
from runner.mock.options import DEFAULT_PLATFORM_KEYS, DEFAULT_SEED_KEYS, MockOptions
from runner.mock.state import MockState
from runner.providers import Provider, ProviderSettings, make_provider

# Loopback, so download policies that allow the provider's own loopback base URL accept it;
# through ASGITransport no socket is ever opened.
IN_PROCESS_ORIGIN = "http://127.0.0.1"
MOCK_ENV: Mapping[str, str] = {
    "HIGGSFIELD_API_KEY": DEFAULT_SEED_KEYS[0],
    "HF_KEY": DEFAULT_PLATFORM_KEYS[0],
}
INSTANT = MockOptions(latency_min=0.0, latency_max=0.0, soul_training_seconds=0.0, seed=1)
"""Generations and souls finish at once: for tests that must not wait on a real clock."""


@dataclass
class FakeClock:
    """A clock tests move by hand: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class InProcessMock:
    """The mock app behind ``httpx.ASGITransport``: no sockets, same behaviour."""

    app: Starlette
    client: httpx.AsyncClient
    origin: str = IN_PROCESS_ORIGIN
    providers: list[Provider] = field(default_factory=list)

    @property
    def state(self) -> MockState:
        """The app's :class:`MockState`."""
        state: MockState = self.app.state.mock
        return state

    @property
    def seed_base_url(self) -> str:
        """Base URL of the ``higgsfieldapi`` dialect."""
        return base_urls(self.origin)["higgsfieldapi"]

    @property
    def platform_base_url(self) -> str:
        """Base URL of the ``higgsfield`` dialect."""
        return base_urls(self.origin)["higgsfield"]

    def provider(self, name: str = "higgsfieldapi", **environ: str) -> Provider:
        """A provider of dialect ``name`` wired to this mock with the default test keys."""
        env = {**MOCK_ENV, **environ}
        env.setdefault("HIGGSFIELD_BASE_URL", base_urls(self.origin)[name])
        provider = make_provider(ProviderSettings(name=name), client=self.client, environ=env)
        self.providers.append(provider)
        return provider

    async def aclose(self) -> None:
        """Close the providers and the client."""
        for provider in self.providers:
            await provider.aclose()
        await self.client.aclose()


def in_process(
    options: MockOptions | None = None, *, clock: FakeClock | None = None
) -> InProcessMock:
    """A fresh mock app and an AsyncClient over ASGITransport pointed at it."""
    app = create_app(options, clock=clock)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=IN_PROCESS_ORIGIN)
    return InProcessMock(app=app, client=client)

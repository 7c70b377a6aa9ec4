"""Test wiring between the product and the mock: providers built against an in-process mock.

It lives in the tests, not in :mod:`runner.mock`, because the mock imports nothing from the
product. ``tests/conftest.py`` wraps it in fixtures; test modules may import it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette

from runner.mock import MockOptions, MockState, base_urls, create_app
from runner.mock.testing import IN_PROCESS_ORIGIN, MOCK_ENV, FakeClock
from runner.providers import Provider, ProviderSettings, make_provider


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

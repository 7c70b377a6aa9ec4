"""Shared fixtures: the anyio backend, a fake clock, and the mock API in-process or on loopback."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from runner.mock import MockOptions, create_app
from runner.mock.server import MockServerThread
from runner.mock.testing import INSTANT, FakeClock
from tests.support import InProcessMock, in_process

# Fixture plugins: add an entry per plugin module, keep the others.
pytest_plugins = ["tests.pgcluster", "tests.s3server"]


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """What a test's bulk steps froze (``runner.app.bulk``) is collected as usual after it:
    the test process lives on, unlike a command's."""
    yield
    gc.unfreeze()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the runner's backend)."""
    return "asyncio"


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock the test moves by hand; pass it to the mock instead of sleeping."""
    return FakeClock()


MockServerFactory = Callable[..., MockServerThread]


@pytest.fixture
def mock_server_factory() -> Iterator[MockServerFactory]:
    """Start mock servers on loopback (port 0) with given options; all stopped at teardown.

    ``factory(options=None, clock=None) -> MockServerThread`` (``.origin``, ``.seed_base_url``,
    ``.platform_base_url``, ``.state``). Default options finish generations at once.
    """
    started: list[MockServerThread] = []

    def start(
        options: MockOptions | None = None, *, clock: FakeClock | None = None
    ) -> MockServerThread:
        server = MockServerThread(create_app(options or INSTANT, clock=clock)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def mock_server(mock_server_factory: MockServerFactory) -> MockServerThread:
    """One mock server on loopback with instant generations."""
    return mock_server_factory()


InProcessFactory = Callable[..., InProcessMock]


@pytest.fixture
async def inprocess_factory() -> AsyncIterator[InProcessFactory]:
    """Build in-process mocks: ``factory(options=None, clock=None) -> InProcessMock`` whose
    ``.client`` is an AsyncClient over ``httpx.ASGITransport``; closed at teardown."""
    made: list[InProcessMock] = []

    def make(
        options: MockOptions | None = None, *, clock: FakeClock | None = None
    ) -> InProcessMock:
        mock = in_process(options, clock=clock)
        made.append(mock)
        return mock

    yield make
    for mock in made:
        await mock.aclose()


@pytest.fixture
async def inprocess_mock(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> InProcessMock:
    """An in-process mock on the test's fake clock, with default options (faults off)."""
    return inprocess_factory(MockOptions(seed=7), clock=fake_clock)

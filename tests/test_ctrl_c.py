"""Two Ctrl-Cs while a paid call is still under way: the run ends interrupted (exit 130), never
as a clean run, and the next run finishes every job once.

The subprocess test in ``test_cli_run.py`` sends the signals at a moment of its own choosing,
so whether the second one lands before the run returns is luck. Here it cannot return: the
provider never answers the submit it was sent, so only the second Ctrl-C (which drops the
shield a first one leaves on calls under way) ends the run. The signals are real SIGINTs to
this process, caught by the run's own handler, on the real clock.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from runner import app
from runner.engine import Progress
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions, base_urls, create_app
from runner.mock.testing import IN_PROCESS_ORIGIN
from tests.cli_support import wait_until

KEY = "test-key"
MANIFEST = """\
version: 1
limits: {concurrency: 1, requests_per_second: 100, poll_initial: 0.1, poll_max: 0.1}
defaults: {type: text-to-video, duration: 4}
campaigns:
  - name: walk
    prompt: "shot {n}"
    matrix:
      n: [a, b, c]
"""
WAIT = 60.0  # real seconds for any one step; a run that hangs fails instead of blocking


class Held(httpx.AsyncBaseTransport):
    """The mock over ASGITransport, except that the first ``POST .../generate`` is sent and
    never answered: ``sent`` is set once it is under way."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent = threading.Event()
        self.cancelled = threading.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/generate"):
            self.sent.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.cancelled.set()
        return await self.inner.handle_async_request(request)


@pytest.fixture
def alarm() -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"the run did not end within {WAIT:.0f}s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(int(WAIT))
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_second_ctrl_c_during_a_held_submit_ends_the_run_interrupted(
    tmp_path: Path, alarm: None
) -> None:
    mock = create_app(MockOptions(seed_api_keys=(KEY,), latency_min=0, latency_max=0, seed=1))
    held = Held(httpx.ASGITransport(app=mock))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(MANIFEST)
    environ = {
        "HIGGSFIELD_API_KEY": KEY,
        "HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfieldapi"],
    }

    def interrupt_twice() -> None:
        assert held.sent.wait(WAIT), "the run never sent its first submit"
        os.kill(os.getpid(), signal.SIGINT)
        # As a person presses it: the second once the run has taken the first (two signals
        # sent at once may reach the run as one).
        wait_until(
            lambda: bool(seen) and seen[-1].stopped == "interrupted",
            timeout=WAIT,
            what="the run to take the first Ctrl-C",
        )
        os.kill(os.getpid(), signal.SIGINT)

    seen: list[Progress] = []  # the run's progress, updated in place as the run goes
    sender = threading.Thread(target=interrupt_twice, daemon=True)
    sender.start()
    env = app.Environment(
        environ=environ,
        api_client=lambda: httpx.AsyncClient(transport=held),
        download_client=lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=mock)),
        handle_signals=True,
        on_progress=seen.append,
    )
    result = app.run(manifest, state, app.RunOptions(), env)
    sender.join(WAIT)

    assert held.cancelled.is_set(), "the submit under way was not cut by the second Ctrl-C"
    assert result.outcome.interrupted, "two Ctrl-Cs ended the run as if it had finished"
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = ledger.jobs()
    # The cut submit keeps its key (the next run re-sends it with the same one); nothing else
    # was sent, so nothing else moved.
    assert sorted(r.status for r in rows) == sorted(
        [JobStatus.SUBMITTING, JobStatus.PENDING, JobStatus.PENDING]
    )

    # The next run, with a provider that answers, finishes every job exactly once.
    again = app.Environment(
        environ=environ,
        api_client=lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=mock)),
        download_client=lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=mock)),
    )
    final = app.run(manifest, state, app.RunOptions(), again)
    assert not final.outcome.interrupted
    with open_ledger(default_ledger_url(state)) as ledger:
        assert [r.status for r in ledger.jobs()] == [JobStatus.DOWNLOADED] * 3
    assert mock.state.mock.stats()["generations_created"] == 3

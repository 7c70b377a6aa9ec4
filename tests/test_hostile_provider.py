"""A hostile provider, end to end: each answer that was found able to crash a run, hang it or
leak a key, served for one job among healthy ones, through the real run.

The provider is the mock with :class:`Hostile` inside its request log: the bad job's (prompt
``shot bad``) status calls or video downloads get the scenario's answer, every other request
the mock's own. Scenarios about the transport (malformed video URLs, a key in the URL, chunked
and trickling bodies) run the real CLI against it on loopback; scenarios about hours of
waiting (a generation that never finishes, an unknown status word, a Retry-After of decades,
a 429 storm) run the real run use case on a virtual clock, the mock reading the same clock.

Each must end the same way: the run returns within its deadlines, the healthy jobs' videos are
on disk and are what the mock served, the bad job is held or failed with its reason in the
ledger, no traceback is printed or logged, and the executor lock is free again.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from runner import app
from runner.cli import cli
from runner.engine import VirtualClock
from runner.jobs import expand
from runner.ledger import JobRow, JobStatus, default_ledger_url, open_ledger
from runner.manifest import load_manifest
from runner.mock import MockOptions, MockState, base_urls, create_app
from runner.mock.records import Generation
from runner.mock.server import MockServerThread
from runner.mock.testing import IN_PROCESS_ORIGIN
from runner.mock.video import ConnectionDropped
from runner.outputs import fetch

KEY = "sk-hostile-0123456789abcdef"  # the seed dialect's key, as a provider might echo it
PLATFORM_ID, PLATFORM_SECRET = "kid-hostile-42", "sec-hostile-0123456789abcdef"  # HF_KEY halves
BAD_PROMPT = "shot bad"
HEALTHY = 3
MANIFEST = """\
version: 1
{provider}limits:
  concurrency: 4
  requests_per_second: 100
  poll_initial: {poll_initial}
  poll_max: {poll_max}
  max_attempts: {attempts}
  generation_timeout: {timeout}
defaults: {{type: text-to-video, duration: 4{model}}}
campaigns:
  - name: walk
    prompt: "shot {{n}}"
    matrix:
      n: [a, b, c, bad]
"""
DIALECTS = {  # what the manifest says for each
    "higgsfieldapi": {"provider": "", "model": ""},
    "higgsfield": {
        "provider": "provider: {name: higgsfield}\n",
        "model": ", model: higgsfield-ai/dop/standard",
    },
}
OPTIONS = MockOptions(
    seed_api_keys=(KEY,), platform_api_keys=(f"{PLATFORM_ID}:{PLATFORM_SECRET}",),
    latency_min=0.0, latency_max=0.0, video_size=4096, seed=10,
)  # fmt: skip
HANG = 300  # real seconds: each scenario takes a few; a run that hangs fails instead of blocking
STATUS_PATH = re.compile(r"/api/v1/status/(?P<id>[^/]+)|/requests/(?P<rid>[^/]+)/status")
VIDEO_PATH = re.compile(r"/_mock/videos/(?P<id>[^/]+)\.mp4")

Answer = Callable[[Request, Generation], Response]


class Hostile:
    """ASGI middleware inside the mock's request log (so the log sees its answers too): the
    bad job's status calls get ``status(request, generation)``, its video downloads
    ``video(request, generation)``; every other request goes on to the mock."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: MockState,
        answered: list[str],
        status: Answer | None = None,
        video: Answer | None = None,
    ) -> None:
        self.app, self.state, self.answered = app, state, answered
        self.routes = ((STATUS_PATH, "status", status), (VIDEO_PATH, "video", video))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for pattern, what, answer in self.routes:
                match = pattern.fullmatch(scope["path"])
                found = match and (match["id"] or match.groupdict().get("rid"))
                generation = self.state.generation(found) if found else None
                if answer and generation and generation.body.get("prompt") == BAD_PROMPT:
                    scope.setdefault("state", {}).update(generation_id=generation.id)
                    scope["state"]["note"] = f"hostile {what}"
                    self.answered.append(what)
                    await answer(Request(scope), generation)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


@dataclass
class Provider:
    """The mock behind :class:`Hostile`; ``answered`` lists the hostile answers given."""

    app: Starlette
    answered: list[str] = field(default_factory=list)

    @property
    def state(self) -> MockState:
        state: MockState = self.app.state.mock
        return state

    def calls(self, generation: Generation | None = None) -> list[dict[str, Any]]:
        """API calls the mock saw (of one generation, if given), oldest first."""
        return [
            e
            for e in self.state.log_entries()
            if not e["path"].startswith("/_mock/")
            and (generation is None or e["generation_id"] == generation.id)
        ]

    def bad(self) -> Generation:
        (generation,) = [
            g for g in self.state.generations.values() if g.body.get("prompt") == BAD_PROMPT
        ]
        return generation


def hostile_provider(
    *,
    clock: Callable[[], float] | None = None,
    status: Answer | None = None,
    video: Callable[[MockState], Answer] | None = None,
) -> Provider:
    """The mock with :class:`Hostile` inside; ``video`` builds the video answer from the
    mock's state (which holds the bytes of each video)."""
    mock = create_app(OPTIONS, clock=clock)
    provider = Provider(mock)
    hostile = {"status": status, "video": video(provider.state) if video else None}
    mock.user_middleware.append(
        Middleware(Hostile, state=provider.state, answered=provider.answered, **hostile)
    )
    return provider


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A run that never ends is this module's failure, not a suite that waits for ever."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"the run did not end within {HANG}s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- the hostile answers ------------------------------------------------------------------


def completed_with(url: str) -> Answer:
    return lambda request, g: JSONResponse({"status": "completed", "video_url": url})


def word(status: str) -> Answer:
    return lambda request, g: JSONResponse({"status": status, "video_url": None})


def throttled(retry_after: str | None) -> Answer:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return lambda request, g: JSONResponse({"detail": "slow down"}, 429, headers=headers)


def key_in_url(request: Request, generation: Generation) -> Response:
    """A completed answer whose video URL carries the key (the platform's: its secret half),
    in each dialect's shape."""
    video = f"{str(request.base_url).rstrip('/')}/_mock/videos/{generation.id}.mp4"
    if generation.dialect == "seed":
        return JSONResponse({"status": "completed", "video_url": f"{video}?token={KEY}"})
    url = f"{video}?id={PLATFORM_ID}&sig={PLATFORM_SECRET}"
    return JSONResponse({"status": "completed", "request_id": generation.id, "video": {"url": url}})


def chunked(state: MockState) -> Answer:
    """The video in two pieces, without Content-Length (uvicorn sends it chunked)."""

    def answer(request: Request, generation: Generation) -> Response:
        data = state.video_bytes(generation.id)
        return StreamingResponse(iter([data[:1000], data[1000:]]), media_type="video/mp4")

    return answer


def cut_chunked(state: MockState) -> Answer:
    """The video chunked, broken off after its first 1000 bytes (no terminating chunk)."""

    def answer(request: Request, generation: Generation) -> Response:
        data = state.video_bytes(generation.id)

        async def body() -> AsyncIterator[bytes]:
            yield data[:1000]
            raise ConnectionDropped("cut on purpose")

        return StreamingResponse(body(), media_type="video/mp4")

    return answer


def trickling(request: Request, generation: Generation) -> Response:
    """A byte every 50 ms (far under MIN_RATE), for at most a minute."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(1200):
            yield b"\0"
            await asyncio.sleep(0.05)

    return StreamingResponse(body(), media_type="video/mp4")


# --- what every scenario must end with ----------------------------------------------------


def rows(state: Path) -> dict[str, JobRow]:
    with open_ledger(default_ledger_url(state)) as ledger:
        return {r.request["prompt"]: r for r in ledger.jobs()}


def reason_of(state: Path, row: JobRow) -> str:
    """A failed job's error, or the note a held job was left with."""
    if row.status is JobStatus.FAILED:
        return row.error or ""
    with open_ledger(default_ledger_url(state)) as ledger:
        return ledger.events(row.key)[-1].detail or ""


def assert_ended_well(
    state: Path,
    provider: Provider,
    *,
    reason: str,
    bad_status: tuple[JobStatus, ...],
    created: int = HEALTHY + 1,
) -> JobRow:
    """The healthy jobs downloaded (the mock's bytes on disk), the bad one left in one of
    ``bad_status`` with ``reason`` in the ledger, ``created`` generations at the mock (one per
    job sent), the lock free. Returns the bad job's row."""
    by_prompt = rows(state)
    assert len(by_prompt) == HEALTHY + 1
    bad = by_prompt.pop(BAD_PROMPT)
    for row in by_prompt.values():
        assert row.status is JobStatus.DOWNLOADED, (row.status, row.error)
        data = Path(row.location or "").read_bytes()
        assert data == provider.state.video_bytes(row.generation_id or "")
        assert row.bytes == len(data) == OPTIONS.video_size
        assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert bad.status in bad_status, (bad.status, bad.error)
    assert reason in reason_of(state, bad)
    assert provider.state.stats()["generations_created"] == created
    with open_ledger(default_ledger_url(state)) as ledger, ledger.executor_lock():
        pass  # the run let go of it
    return bad


# --- on virtual time: hours of waiting ----------------------------------------------------


class VirtualRun:
    """The run use case and the hostile provider on one virtual clock, over ASGITransport."""

    def __init__(self, tmp_path: Path, status: Answer, backoff: str = "1,8", **limits: Any) -> None:
        self.clock = VirtualClock(start=1000.0)
        self.backoff = backoff
        self.provider = hostile_provider(clock=self.clock.now, status=status)
        self.state, self.manifest = tmp_path / "state", tmp_path / "m.yaml"
        values = {
            "poll_initial": 5, "poll_max": 60, "attempts": 5, "timeout": 3600,
            **DIALECTS["higgsfieldapi"], **limits,
        }  # fmt: skip
        self.manifest.write_text(MANIFEST.format(**values))

    def run(self) -> app.RunResult:
        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.provider.app))

        environ = {
            "HIGGSFIELD_API_KEY": KEY,
            "HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfieldapi"],
            "RUNNER_BACKOFF": self.backoff,
        }
        env = app.Environment(
            environ=environ, api_client=client, download_client=client, clock=self.clock
        )
        return app.run(self.manifest, self.state, app.RunOptions(), env)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record the run logs; none may carry a traceback."""
    caplog.set_level(logging.INFO)
    yield caplog
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("status_word", ["processing", "frobnicating"])
def test_a_generation_that_never_finishes_is_held_at_generation_timeout(
    tmp_path: Path, logs: pytest.LogCaptureFixture, status_word: str
) -> None:
    """The bad generation answers `processing` (or a word no dialect knows, taken as running)
    for ever: with generation_timeout 3600 the run polls it until an hour after its submit,
    leaves it in flight for `runner collect`, and ends."""
    world = VirtualRun(tmp_path, word(status_word), timeout=3600, poll_max=600)
    result = world.run()
    bad = assert_ended_well(
        world.state, world.provider, reason="not finished 3600s after its submit",
        bad_status=(JobStatus.QUEUED, JobStatus.RUNNING),
    )  # fmt: skip
    assert list(result.outcome.held) == [bad.key]
    assert result.outcome.unfinished == 1
    calls = world.provider.calls(world.provider.bad())
    submit, polls = calls[0]["time"], [e["time"] for e in calls[1:]]
    assert polls[-1] == pytest.approx(submit + 3600)
    assert len(polls) <= 20  # backing off 1.5x from 5 s to poll_max 600: ~17 in an hour
    assert world.clock.now() - 1000.0 <= 3600 + 60


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param("1e9", id="seconds"),
        pytest.param(
            email.utils.formatdate(time.time() + 10 * 365 * 86400, usegmt=True), id="date"
        ),
    ],
)
def test_a_retry_after_of_decades_is_cut_to_ten_minutes(
    tmp_path: Path, logs: pytest.LogCaptureFixture, retry_after: str
) -> None:
    """Every status call of the bad job answers 429 with a Retry-After of decades: each pause
    is cut to 10 minutes with a warning naming what was asked for, no call reaches the
    provider inside a pause, the healthy jobs are downloaded, and after an hour of throttling
    the bad job is held and the run ends."""
    world = VirtualRun(tmp_path, throttled(retry_after))
    result = world.run()
    bad = assert_ended_well(
        world.state, world.provider, reason="status throttled for", bad_status=(JobStatus.QUEUED,)
    )
    assert re.search(r"throttled for (3600|4200)s", result.outcome.held[bad.key])
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert any("asked to pause for" in m and "pausing 600s" in m for m in warnings), warnings
    calls = world.provider.calls()
    pauses = [e["time"] for e in calls if e["status"] == 429]
    # At 0, 600, ..., 3600 s of throttling; or once more when the sum of the 600 s pauses from
    # a jittered first poll lands a float's hair short of the hour (virtual time is exact).
    assert len(pauses) in (7, 8)
    assert [b - a for a, b in itertools.pairwise(pauses)] == pytest.approx(
        [600.0] * (len(pauses) - 1)
    )
    for start in pauses:  # the last one too: the others wait although the bad job gave up
        inside = [e for e in calls if start < e["time"] < start + 600]
        assert inside == [], f"calls during the pause that started at {start}: {inside}"
    assert world.clock.now() <= pauses[-1] + 600 + 60


def test_an_endless_429_storm_holds_the_job_after_the_throttle_ceiling(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Every status call of the bad job answers 429 without Retry-After: throttles use no
    attempts, so only the ceiling on time spent throttled ends it; the others are not held up."""
    world = VirtualRun(tmp_path, throttled(None), backoff="30,120")  # ~60 throttles, not ~900
    result = world.run()
    bad = assert_ended_well(
        world.state, world.provider, reason="status throttled for 3", bad_status=(JobStatus.QUEUED,)
    )
    assert re.search(r"throttled for 3[67]\d\ds", result.outcome.held[bad.key])
    assert list(result.outcome.held) == [bad.key]
    storm = [e["time"] for e in world.provider.calls(world.provider.bad()) if e["status"] == 429]
    assert len(storm) >= 3600 / 120  # backed off at most the backoff cap each time
    assert 3600 <= storm[-1] - storm[0] <= 3600 + 120
    # Without Retry-After only the throttled caller backs off: the others finish at once.
    healthy = [
        e["time"]
        for e in world.provider.calls()
        if "/status/" in e["path"] and e["generation_id"] != world.provider.bad().id
    ]
    assert len(healthy) == HEALTHY and max(healthy) < storm[0] + 60


# --- on loopback: the real CLI against a real socket --------------------------------------


@dataclass
class LoopbackRun:
    """The hostile provider on a loopback port, a manifest and a state dir for the CLI."""

    tmp_path: Path
    provider: Provider
    server: MockServerThread
    dialect: str = "higgsfieldapi"

    @property
    def state(self) -> Path:
        return self.tmp_path / "state"

    def cli(self, *args: str) -> Result:
        env = {
            "HIGGSFIELD_BASE_URL": base_urls(self.server.origin)[self.dialect],
            "HIGGSFIELD_API_KEY": KEY,
            "HF_KEY": f"{PLATFORM_ID}:{PLATFORM_SECRET}",
            "RUNNER_BACKOFF": "0.01,0.1",
        }
        return CliRunner().invoke(cli, [*args, "--state", str(self.state)], env=env)

    def write_manifest(self, attempts: int = 3) -> Path:
        manifest = self.tmp_path / "m.yaml"
        values = {"poll_initial": 0.02, "poll_max": 0.1, "attempts": attempts, "timeout": 600}
        manifest.write_text(MANIFEST.format(**values, **DIALECTS[self.dialect]))
        return manifest

    def run(self, attempts: int = 3) -> Result:
        result = self.cli("run", str(self.write_manifest(attempts)))
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[Callable[..., LoopbackRun]]:
    """``loopback(status=..., video=...)``: the hostile provider served on a loopback port."""
    servers: list[MockServerThread] = []

    def start(dialect: str = "higgsfieldapi", **answers: Any) -> LoopbackRun:
        provider = hostile_provider(**answers)
        server = MockServerThread(provider.app).start()
        servers.append(server)
        return LoopbackRun(tmp_path, provider, server, dialect)

    yield start
    for server in servers:
        server.stop()


MALFORMED_URLS = {
    "port over 65535": "http://127.0.0.1:99999/v.mp4",
    "unclosed IPv6 bracket": "http://[::1/x",
    "64-character DNS label": f"http://{'a' * 64}.example.com/v.mp4",
    "space in the host": "http://cdn example.com/v.mp4",
}


@pytest.mark.parametrize("url", list(MALFORMED_URLS.values()), ids=list(MALFORMED_URLS))
def test_a_malformed_video_url_holds_one_job_and_the_run_goes_on(
    loopback: Callable[..., LoopbackRun], url: str
) -> None:
    """A `completed` answer whose video URL cannot be parsed is an unusable status answer for
    that job alone: retried like a glitch, then the job is held with the reason; the healthy
    jobs are downloaded and a second run (a resume) ends the same way."""
    world = loopback(status=completed_with(url))
    first = world.run()
    assert first.exit_code == 1, first.output
    reason = "unusable status answer"
    bad = assert_ended_well(
        world.state, world.provider, reason=reason, bad_status=(JobStatus.QUEUED,)
    )
    assert "malformed" in reason_of(world.state, bad)
    again = world.run()
    assert again.exit_code == 1, again.output
    assert_ended_well(world.state, world.provider, reason=reason, bad_status=(JobStatus.QUEUED,))
    assert not [e for e in world.provider.state.log_entries() if "/_mock/videos/" in e["path"]
                and e["generation_id"] == bad.generation_id]  # fmt: skip


@pytest.mark.parametrize("url", list(MALFORMED_URLS.values()), ids=list(MALFORMED_URLS))
def test_a_malformed_video_url_an_older_runner_stored_fails_its_job_on_resume(
    loopback: Callable[..., LoopbackRun], url: str
) -> None:
    """A ledger from before status answers were classified holds the bad job `completed` with
    a malformed video URL (which made every resume crash): the resume refuses the URL, fails
    that job with the reason, and downloads the others."""
    world = loopback()
    manifest = world.write_manifest()
    jobs = expand(load_manifest(manifest))
    (bad,) = [j for j in jobs if j.request["prompt"] == BAD_PROMPT]
    with open_ledger(default_ledger_url(world.state)) as ledger:
        ledger.record_plan(str(manifest.resolve()), jobs)
        for status in ("submitting", "queued", "running"):
            ledger.transition(bad.key, status, generation_id="gen-from-an-older-run")
        ledger.transition(bad.key, "completed", video_url=url)
    result = world.run()
    assert result.exit_code == 1, result.output
    kwargs: dict[str, Any] = {"bad_status": (JobStatus.FAILED,), "created": HEALTHY}
    assert_ended_well(world.state, world.provider, reason="refusing", **kwargs)
    assert world.run().exit_code == 1  # and so does the next one
    assert_ended_well(world.state, world.provider, reason="refusing", **kwargs)


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_key_echoed_in_the_video_url_is_neither_stored_nor_sent_nor_printed(
    loopback: Callable[..., LoopbackRun], dialect: str
) -> None:
    """The provider answers the bad job with a video URL carrying the API key (the platform's
    secret half): the job is held with the reason, the URL is never fetched, and the key
    appears nowhere: not in the ledger, not in any file of the state dir, not in what run,
    show, jobs, export and report print."""
    world = loopback(dialect, status=key_in_url)
    secret = KEY if dialect == "higgsfieldapi" else PLATFORM_SECRET
    result = world.run()
    assert result.exit_code == 1, result.output
    bad = assert_ended_well(
        world.state, world.provider, reason="carries the API key", bad_status=(JobStatus.QUEUED,)
    )
    assert bad.video_url is None
    with open_ledger(default_ledger_url(world.state)) as ledger:
        stored = [ledger.get(bad.key), *ledger.events(bad.key)]
    assert secret not in repr(stored)
    printed = [result.output] + [
        world.cli(*args).output
        for args in (("show", bad.key), ("jobs", "--json"), ("export",), ("report",))
    ]
    assert all(secret not in text for text in printed)
    written = [p for p in world.state.rglob("*") if p.is_file()]  # ledger, report, videos
    assert any(p.suffix == ".html" for p in written)
    assert not [p for p in written if secret.encode() in p.read_bytes()]
    assert world.provider.answered.count("status") >= 1
    fetched = [e for e in world.provider.state.log_entries() if "/_mock/videos/" in e["path"]]
    assert len(fetched) == HEALTHY  # the healthy ones only


def test_a_chunked_video_body_is_downloaded_and_verified(
    loopback: Callable[..., LoopbackRun],
) -> None:
    """The bad job's video comes without Content-Length (chunked): it is complete when the
    stream ends cleanly, and its size and sha256 are recorded like any other."""
    world = loopback(video=chunked)
    result = world.run()
    assert result.exit_code == 0, result.output
    row = assert_ended_well(
        world.state, world.provider, reason=f"saved {OPTIONS.video_size} bytes",
        bad_status=(JobStatus.DOWNLOADED,),
    )  # fmt: skip
    data = Path(row.location or "").read_bytes()
    assert data == world.provider.state.video_bytes(row.generation_id or "")
    assert row.bytes == len(data) and row.sha256 == hashlib.sha256(data).hexdigest()
    assert world.provider.answered == ["video"]
    # What the runner was sent: a chunked body, no Content-Length.
    url = f"{world.server.origin}/_mock/videos/{row.generation_id}.mp4"
    headers = httpx.get(url, headers={"Accept-Encoding": "identity"}, trust_env=False).headers
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"


def test_a_chunked_video_body_cut_short_is_never_taken_for_the_video(
    loopback: Callable[..., LoopbackRun],
) -> None:
    """Without Content-Length only a clean end of the stream says the body is whole: a chunked
    body broken off is a transient failure, retried, then the job is held; nothing is left
    under the video's name."""
    world = loopback(video=cut_chunked)
    result = world.run(attempts=2)
    assert result.exit_code == 1, result.output
    bad = assert_ended_well(
        world.state, world.provider, reason="download failed", bad_status=(JobStatus.COMPLETED,)
    )
    assert bad.location is None and bad.bytes is None
    assert not (world.state / "videos" / bad.path).exists()
    assert world.provider.answered.count("video") == 2


def test_a_trickling_video_body_is_cut_and_the_job_held(
    loopback: Callable[..., LoopbackRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bad job's video trickles a byte every 50 ms (the read timeout never fires): each
    attempt is cut once it has run under MIN_RATE for RATE_GRACE (1 s here instead of 60),
    and after max_attempts the job is held with the reason; the healthy ones are downloaded."""
    monkeypatch.setattr(fetch, "RATE_GRACE", 1.0)
    world = loopback(video=lambda state: trickling)
    result = world.run(attempts=2)
    assert result.exit_code == 1, result.output
    assert_ended_well(
        world.state, world.provider, reason="too slow", bad_status=(JobStatus.COMPLETED,)
    )
    assert world.provider.answered.count("video") == 2

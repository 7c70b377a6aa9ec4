"""The executor end to end: real ledger, real files, the mock app over loopback (uvicorn in a
thread) or in-process (ASGITransport, no socket).

Each test calls ``runner.app.run`` exactly as the CLI does. The tests that take the
``harness`` fixture run twice, once over each transport.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import app
from runner.errors import UsageError
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions, base_urls, create_app
from runner.mock.server import MockServerThread
from runner.mock.state import MockState
from runner.mock.testing import IN_PROCESS_ORIGIN, MOCK_ENV, FakeClock

FAST_LIMITS = """
limits:
  concurrency: 4
  requests_per_second: 500
  download_concurrency: 3
  max_attempts: 6
  poll_initial: 0.01
  poll_max: 0.05
"""

MANIFEST = """
version: 1
{limits}
budget:
  prices:
    - {{match: {{}}, credits_per_second: 2}}
defaults:
  type: text-to-video
  duration: 4
  resolution: 720p
campaigns:
  - name: walk
    prompt: "{{subject}} walking in {{place}}"
    matrix:
      subject: [A dancer, A chef]
      place: [a park, a street, a kitchen]
  - name: spin
    type: image-to-video
    prompt: "Spin of the {{product}}"
    image_url: "https://cdn.example.com/{{product}}.jpg"
    matrix:
      product: [shoe, bag]
"""
JOBS = 8


class Harness:
    """A manifest, a state dir and a mock (in-process, or over loopback), wired like the CLI."""

    def __init__(
        self, tmp_path: Path, options: MockOptions, clock: Any = None, *, loopback: bool = False
    ) -> None:
        self.tmp_path = tmp_path
        self.manifest = tmp_path / "m.yaml"
        self.state_dir = tmp_path / "state"
        self.app = create_app(options, clock=clock)
        self.mock: MockState = self.app.state.mock
        self.server = MockServerThread(self.app).start() if loopback else None
        self.transport_wrapper: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]
        self.transport_wrapper = lambda t: t
        self.write(MANIFEST.format(limits=FAST_LIMITS))

    def write(self, text: str) -> None:
        self.manifest.write_text(text)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def env(self, **extra: str) -> app.Environment:
        origin = self.server.origin if self.server else IN_PROCESS_ORIGIN
        environ = {
            **MOCK_ENV,
            "HIGGSFIELD_BASE_URL": base_urls(origin)["higgsfieldapi"],
            "RUNNER_BACKOFF": "0.001,0.01",
            **extra,
        }
        if self.server is not None:
            return app.Environment(environ=environ)

        def client() -> httpx.AsyncClient:
            transport = self.transport_wrapper(httpx.ASGITransport(app=self.app))
            return httpx.AsyncClient(transport=transport)

        return app.Environment(environ=environ, api_client=client, download_client=client)

    def run(self, options: app.RunOptions | None = None, **extra: str) -> app.RunResult:
        options = options or app.RunOptions()
        return app.run(self.manifest, self.state_dir, options, self.env(**extra))

    def rows(self) -> list[Any]:
        with open_ledger(default_ledger_url(self.state_dir)) as ledger:
            return ledger.jobs()

    def ledger_id(self) -> str:
        with open_ledger(default_ledger_url(self.state_dir)) as ledger:
            return ledger.id

    def submits(self) -> list[dict[str, Any]]:
        return [e for e in self.mock.log_entries() if e["method"] == "POST"]


@pytest.fixture(params=["in-process", "loopback"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """``harness(options) -> Harness`` over ASGITransport, then over loopback."""
    made: list[Harness] = []

    def make(options: MockOptions) -> Harness:
        made.append(Harness(tmp_path, options, loopback=request.param == "loopback"))
        return made[-1]

    yield make
    for h in made:
        h.close()


def assert_files_match_mock(h: Harness) -> None:
    """Every downloaded job's file is byte-identical to what the mock served for it."""
    out = h.state_dir / "videos"
    for row in h.rows():
        if row.status is not JobStatus.DOWNLOADED:
            continue
        data = (out / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.sha256 == h.mock.video_sha256(row.generation_id)
        assert len(data) == row.bytes
        assert data[4:8] == b"ftyp"
    assert not list(out.rglob("*.part"))


def test_run_downloads_every_job_byte_identical(harness: Callable[..., Harness]) -> None:
    """All jobs end downloaded, each file exactly the bytes the mock served for it."""
    h = harness(MockOptions(latency_min=0.0, latency_max=0.02, seed=1))
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    assert result.outcome.submitted == JOBS
    assert h.mock.stats()["generations_created"] == JOBS
    assert_files_match_mock(h)
    for row in h.rows():
        steps = [
            e.to_status.value for e in open_ledger(default_ledger_url(h.state_dir)).events(row.key)
        ]
        assert [s for s in steps if s != "running"] == [
            "pending", "submitting", "queued", "completed", "downloaded",
        ]


def test_second_run_submits_nothing(harness: Callable[..., Harness]) -> None:
    """Running the same manifest again sends no POST and downloads nothing again."""
    h = harness(MockOptions(latency_min=0.0, latency_max=0.0, seed=2))
    h.run()
    before = len(h.mock.log_entries())
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    assert result.outcome.submitted == 0
    assert len(h.mock.log_entries()) == before


def test_editing_one_matrix_value_submits_only_changed_jobs(
    harness: Callable[..., Harness],
) -> None:
    """Changing 'a kitchen' to 'a rooftop' sends exactly the two new jobs and orphans two."""
    h = harness(MockOptions(latency_min=0.0, latency_max=0.0, seed=3))
    h.run()
    first = {r.key for r in h.rows()}
    h.write(MANIFEST.format(limits=FAST_LIMITS).replace("a kitchen", "a rooftop"))
    result = h.run()
    rows = h.rows()
    orphaned = {r.key for r in rows if r.status is JobStatus.ORPHANED}
    new = {r.key for r in rows} - first
    assert result.outcome.submitted == 2
    assert len(orphaned) == 2 and orphaned <= first
    assert len(new) == 2
    assert h.mock.stats()["generations_created"] == JOBS + 2
    assert all("rooftop" in r.request["prompt"] for r in rows if r.key in new)
    assert result.counts == {"downloaded": JOBS}


def test_submit_only_then_collect(harness: Callable[..., Harness]) -> None:
    """--submit-only leaves generations in flight; collect polls and downloads them."""
    h = harness(MockOptions(latency_min=0.0, latency_max=0.0, seed=4))
    result = h.run(app.RunOptions(submit_only=True))
    assert result.counts == {"queued": JOBS}
    assert result.outcome.unfinished == 0
    assert not (h.state_dir / "videos").exists()
    [collected] = app.collect(h.manifest, h.state_dir, h.env())
    assert collected.counts == {"downloaded": JOBS}
    assert collected.outcome.submitted == 0
    assert len(h.submits()) == JOBS
    assert_files_match_mock(h)


def test_faults_every_job_downloaded_or_failed_with_reason(harness: Callable[..., Harness]) -> None:
    """5xx, 429s (both Retry-After forms), dropped submits, truncated bodies and failed
    generations: each job ends downloaded (verified) or failed with its reason; no job is
    paid for twice."""
    options = MockOptions(
        latency_min=0.0,
        latency_max=0.02,
        rate_5xx=0.15,
        rate_429=0.15,
        retry_after_mode="mixed",
        retry_after=0.05,
        drop_after_accept_rate=0.3,
        truncate_rate=0.3,
        fail_rate=0.1,
        nsfw_rate=0.05,
        seed=5,
    )
    h = harness(options)
    # 8 × 5 + 2 = 42 jobs: enough calls that every kind of fault is drawn whatever the order
    # of calls (timing decides which call draws which fault; the likeliest miss, no truncated
    # body among ~36 downloads, is 0.7^36 ≈ 3e-6), and 20 attempts so that no job runs out.
    manifest = MANIFEST.format(limits=FAST_LIMITS.replace("max_attempts: 6", "max_attempts: 20"))
    subjects = "[A dancer, A chef, A cat, A robot, A horse, A pilot, A child, A nurse]"
    manifest = manifest.replace("[A dancer, A chef]", subjects)
    h.write(manifest.replace("a kitchen]", "a kitchen, a beach, a roof]"))
    h.run()
    rows = h.rows()
    assert {r.status for r in rows} <= {JobStatus.DOWNLOADED, JobStatus.FAILED}
    for row in rows:
        if row.status is JobStatus.FAILED:
            assert row.error
    stats = h.mock.stats()
    assert stats["duplicate_bodies"] == 0
    assert stats["generations_created"] == len(rows) == 42
    assert stats["truncated_videos"] > 0 and stats["dropped_connections"] > 0
    assert stats["throttled"] > 0 and stats["server_errors"] > 0
    assert_files_match_mock(h)


def test_failed_generation_keeps_provider_word(tmp_path: Path) -> None:
    """A generation the provider fails (or flags NSFW) is failed with that word in error."""
    h = Harness(tmp_path, MockOptions(latency_min=0.0, latency_max=0.0, nsfw_rate=1.0, seed=6))
    result = h.run()
    assert result.counts == {"failed": JOBS}
    assert all("nsfw" in (r.error or "") for r in h.rows())


class ExpireFirstDownload(httpx.AsyncBaseTransport):
    """Moves the mock's clock past the URL lifetime right before the first video request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, clock: FakeClock, ttl: float) -> None:
        self.inner, self.clock, self.ttl, self.done = inner, clock, ttl, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/_mock/videos/" in request.url.path and not self.done:
            self.done = True
            self.clock.advance(self.ttl + 1)
        return await self.inner.handle_async_request(request)


def test_expired_video_url_is_refreshed_once(tmp_path: Path) -> None:
    """A 410 on the video URL refreshes it from the status endpoint, then downloads."""
    clock = FakeClock()
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, url_ttl=30, seed=7), clock)
    h.write(MANIFEST.format(limits=FAST_LIMITS.replace("concurrency: 4", "concurrency: 1")))
    h.transport_wrapper = lambda t: ExpireFirstDownload(t, clock, 30)
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    # Every URL minted before the clock jumped has expired (at least the first one); each of
    # those jobs refreshed its URL exactly once.
    refreshes = [
        sum(
            e.detail == "video URL refreshed"
            for e in open_ledger(default_ledger_url(h.state_dir)).events(r.key)
        )
        for r in h.rows()
    ]
    assert set(refreshes) <= {0, 1}
    assert sum(refreshes) == h.mock.stats()["expired_video_urls"] >= 1
    assert_files_match_mock(h)


def test_budget_stops_new_submissions(tmp_path: Path) -> None:
    """With an 8-credit cap and 8-credit jobs, one job is sent and the run says why it stopped."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=8))
    result = h.run(app.RunOptions(max_credits=20))
    assert result.outcome.submitted == 2
    assert result.outcome.budget_stop is not None
    assert "20" in result.outcome.budget_stop and "24" in result.outcome.budget_stop
    assert result.counts == {"downloaded": 2, "pending": JOBS - 2}


def test_only_tag_and_limit_select_jobs(tmp_path: Path) -> None:
    """--only picks a campaign, --limit caps new submissions."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=9))
    result = h.run(app.RunOptions(only=("spin",)))
    assert result.counts == {"downloaded": 2}
    result = h.run(app.RunOptions(limit=3))
    assert result.outcome.submitted == 3
    assert sum(r.status is JobStatus.DOWNLOADED for r in h.rows()) == 5


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    """--dry-run lists what would be sent and creates no ledger."""
    h = Harness(tmp_path, MockOptions(seed=10))
    result = h.run(app.RunOptions(dry_run=True))
    assert len(result.would_submit) == JOBS
    assert not h.state_dir.exists()
    assert h.mock.log_entries() == []


def test_dry_run_applies_limit_and_budget_like_a_run(tmp_path: Path) -> None:
    """--dry-run stops where the budget would (8-credit jobs, cap 20: two), and says so."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=23))
    dry = h.run(app.RunOptions(dry_run=True, max_credits=20))
    assert len(dry.would_submit) == 2
    assert dry.outcome.budget_stop is not None
    real = h.run(app.RunOptions(max_credits=20))
    assert real.outcome.submitted == 2
    assert [j.key for j in dry.would_submit] == [
        r.key for r in h.rows() if r.status is JobStatus.DOWNLOADED
    ]
    assert len(h.run(app.RunOptions(dry_run=True, limit=3)).would_submit) == 3


def test_transient_failures_use_up_attempts_across_runs(tmp_path: Path) -> None:
    """A provider that only answers 5xx fails each job after max_attempts, counted in the
    ledger; nothing is left in flight and the ledger is intact."""
    h = Harness(tmp_path, MockOptions(rate_5xx=1.0, seed=11))
    result = h.run()
    assert result.counts == {"failed": JOBS}
    assert all(r.attempts == 6 and "gave up after 6 attempts" in (r.error or "") for r in h.rows())
    with sqlite3.connect(h.state_dir / "ledger.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_retry_sends_failed_jobs_with_new_key(tmp_path: Path) -> None:
    """`retry` puts failed jobs back with key <ledger-id>-<key>-2; the next run sends them."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, fail_rate=1.0, seed=12))
    h.run()
    assert app.retry(h.manifest, h.state_dir) == JOBS
    ledger_id = h.ledger_id()
    assert {r.idempotency_key for r in h.rows()} == {f"{ledger_id}-{r.key}-2" for r in h.rows()}
    h.mock.options = MockOptions(latency_min=0, latency_max=0, seed=12)  # provider recovers
    result = h.run()
    assert result.counts == {"downloaded": JOBS}


def test_unauthorized_stops_the_run(tmp_path: Path) -> None:
    """A wrong key stops the run at once with the fatal error; no job is marked failed."""
    h = Harness(tmp_path, MockOptions(seed=13))
    result = h.run(HIGGSFIELD_API_KEY="wrong-key")
    assert result.outcome.fatal is not None
    assert "failed" not in result.counts
    assert h.mock.stats()["generations_created"] == 0


def test_missing_file_is_downloaded_again(tmp_path: Path) -> None:
    """A downloaded job whose file vanished is fetched again on the next run, not resubmitted."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=14))
    h.run()
    victim = h.rows()[0]
    (h.state_dir / "videos" / victim.path).unlink()
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    assert result.outcome.submitted == 0
    assert (h.state_dir / "videos" / victim.path).exists()
    assert_files_match_mock(h)


SOUL_MANIFEST = """
version: 1
{limits}
souls:
  ava:
    name: brand_influencer_v1
    images: [https://cdn.example.com/ava/01.jpg, https://cdn.example.com/ava/02.jpg]
defaults:
  type: text-to-video
  duration: 4
campaigns:
  - name: ava
    soul: ava
    prompt: "Ava in {{place}}"
    matrix:
      place: [a park, a street, a kitchen]
"""


def test_soul_is_trained_once_and_reused(harness: Callable[..., Harness]) -> None:
    """Jobs naming a soul wait for its model, carry its id, and later runs reuse it."""
    h = harness(MockOptions(latency_min=0, latency_max=0, soul_training_seconds=0.05))
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    result = h.run()
    assert result.counts == {"downloaded": 3}
    assert h.mock.stats()["souls_created"] == 1
    [soul] = h.mock.souls.values()
    assert soul.images == [
        "https://cdn.example.com/ava/01.jpg", "https://cdn.example.com/ava/02.jpg"
    ]
    assert {g.body.get("model_id") for g in h.mock.generations.values()} == {soul.id}
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS).replace("a kitchen", "a roof"))
    h.run()
    assert h.mock.stats()["souls_created"] == 1
    trained = app.train_souls(h.manifest, h.state_dir, h.env())
    assert trained.failures == {}
    assert [(r.name, r.status, r.model_id) for r in trained.souls] == [("ava", "ready", soul.id)]
    assert h.mock.stats()["souls_created"] == 1


def test_failed_soul_fails_its_jobs_with_reason(tmp_path: Path) -> None:
    """A soul whose training fails fails the jobs that need it, and says so."""
    h = Harness(tmp_path, MockOptions(soul_fail_rate=1.0, soul_training_seconds=0.0))
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    result = h.run()
    assert result.counts == {"failed": 3}
    assert all("soul 'ava'" in (r.error or "") for r in h.rows())
    assert h.mock.stats()["generations_created"] == 0


class DropPostAnswers(httpx.AsyncBaseTransport):
    """Lets every POST reach the mock, then loses its answer (as a dropped connection)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            await response.aread()
            raise httpx.ReadError("connection lost", request=request)
        return response


def test_lost_answers_never_fail_a_job_that_may_be_paid_for(tmp_path: Path) -> None:
    """Out of attempts after answers that were lost, a job stays `submitting` (not failed), and
    the next run re-sends it with the same key: no generation is paid for twice."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=15))
    h.write(MANIFEST.format(limits=FAST_LIMITS.replace("max_attempts: 6", "max_attempts: 2")))
    h.transport_wrapper = DropPostAnswers
    first = h.run()
    assert first.counts == {"submitting": JOBS}
    assert first.outcome.unfinished == JOBS and first.outcome.failed == 0
    assert h.mock.stats()["generations_created"] == JOBS
    h.transport_wrapper = lambda t: t
    second = h.run()
    assert second.counts == {"downloaded": JOBS}
    stats = h.mock.stats()
    assert stats["generations_created"] == JOBS
    assert stats["duplicate_bodies"] == 0
    ledger_id = h.ledger_id()
    assert {r.idempotency_key for r in h.rows()} == {f"{ledger_id}-{r.key}-1" for r in h.rows()}


@dataclass
class RefreshScript:
    """Shared by the API and download transports: the first video URL has expired, and the
    first status call after that answers 503."""

    clock: FakeClock
    expired: bool = False
    failed_refresh: bool = False

    def wrap(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        script = self

        class Scripted(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if "/_mock/videos/" in request.url.path and not script.expired:
                    script.expired = True
                    script.clock.advance(31)
                elif script.expired and not script.failed_refresh and "/status/" in str(
                    request.url
                ):
                    script.failed_refresh = True
                    return httpx.Response(503, json={"error": "busy"})
                return await inner.handle_async_request(request)

        return Scripted()


def test_transient_error_while_refreshing_url_is_retried(tmp_path: Path) -> None:
    """A 503 on the refresh after an expired URL is retried, not a reason to fail the job."""
    clock = FakeClock()
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, url_ttl=30, seed=16), clock)
    h.write(MANIFEST.format(limits=FAST_LIMITS.replace("concurrency: 4", "concurrency: 1")))
    script = RefreshScript(clock)
    h.transport_wrapper = script.wrap
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    assert script.failed_refresh
    assert h.mock.stats()["expired_video_urls"] >= 1
    assert_files_match_mock(h)


def test_failed_soul_is_trained_once_per_run(tmp_path: Path) -> None:
    """Three jobs waiting on a soul whose training fails cause one training, not three."""
    h = Harness(tmp_path, MockOptions(soul_fail_rate=1.0, soul_training_seconds=0.0))
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    h.run()
    assert h.mock.stats()["souls_created"] == 1


def test_submit_only_leaves_earlier_generations_alone(tmp_path: Path) -> None:
    """A second --submit-only run neither polls nor waits for what is already in flight."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=17))
    h.run(app.RunOptions(submit_only=True))
    calls = len(h.mock.log_entries())
    result = h.run(app.RunOptions(submit_only=True))
    assert result.counts == {"queued": JOBS}
    assert len(h.mock.log_entries()) == calls


def test_changed_filename_moves_videos_instead_of_downloading(tmp_path: Path) -> None:
    """Editing output.filename moves the downloaded files; nothing is fetched again."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=18))
    h.run()
    downloads = h.mock.stats()["video_downloads"]
    text = MANIFEST.format(limits=FAST_LIMITS)
    h.write(text.replace("version: 1", 'version: 1\noutput: {filename: "v/{campaign}-{key}.mp4"}'))
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    assert h.mock.stats()["video_downloads"] == downloads
    assert all(r.path.startswith("v/") for r in h.rows())
    assert_files_match_mock(h)


def with_total_cap(manifest: str, cap: int) -> str:
    """The manifest with ``budget.max_total_credits: cap``."""
    return manifest.replace("budget:\n", f"budget:\n  max_total_credits: {cap}\n", 1)


def test_orphaned_jobs_still_count_against_the_total_budget(tmp_path: Path) -> None:
    """Credits spent on a job stay spent when an edit orphans it: max_total_credits counts
    them, and the next run submits nothing, saying why with the numbers."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=19))
    h.write(with_total_cap(MANIFEST.format(limits=FAST_LIMITS), 16))
    first = h.run()
    assert first.outcome.submitted == 2
    h.write(with_total_cap(MANIFEST.format(limits=FAST_LIMITS).replace("[a park, ", "["), 16))
    second = h.run()
    assert JobStatus.ORPHANED in {r.status for r in h.rows()}
    assert second.outcome.submitted == 0
    assert "16 charged so far" in (second.outcome.budget_stop or "")


def test_local_disk_problem_keeps_the_job_for_next_run(tmp_path: Path) -> None:
    """A file where a campaign folder should be: those jobs stay completed, with the reason
    in their history; the others download; nothing crashes."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=20))
    (h.state_dir / "videos").mkdir(parents=True)
    (h.state_dir / "videos" / "walk").write_text("not a folder")
    result = h.run()
    assert result.counts == {"completed": 6, "downloaded": 2}
    assert result.outcome.unfinished == 6
    assert len(result.outcome.held) == 6
    assert all(r.startswith("download failed") for r in result.outcome.held.values())
    walk = [r for r in h.rows() if r.campaign == "walk"]
    assert all(
        any(
            "download failed" in (e.detail or "")
            for e in open_ledger(default_ledger_url(h.state_dir)).events(r.key)
        )
        for r in walk
    )
    (h.state_dir / "videos" / "walk").unlink()
    assert h.run().counts == {"downloaded": JOBS}


def test_unknown_tag_is_a_usage_error(tmp_path: Path) -> None:
    """--tag that no campaign has is a mistake, said before anything is written."""
    h = Harness(tmp_path, MockOptions(seed=21))
    with pytest.raises(UsageError, match="--tag names no tag"):
        h.run(app.RunOptions(tags=("nightly",)))
    assert not h.state_dir.exists()


def test_collect_everything_skips_a_manifest_that_is_gone(tmp_path: Path) -> None:
    """`collect` with no manifest collects every manifest's jobs; one whose file has vanished
    is reported (its provider settings are in it) and the others are still collected."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=22))
    h.run(app.RunOptions(submit_only=True))
    other = tmp_path / "other.yaml"
    other.write_text(MANIFEST.format(limits=FAST_LIMITS).replace("name: walk", "name: stroll"))
    app.run(other, h.state_dir, app.RunOptions(submit_only=True, only=("stroll",)), h.env())
    other.unlink()
    results = app.collect(None, h.state_dir, h.env())
    by_manifest = {Path(r.manifest).name: r for r in results}
    assert by_manifest["m.yaml"].counts == {"downloaded": JOBS}
    assert by_manifest["other.yaml"].error is not None
    assert "other.yaml" in by_manifest["other.yaml"].error


def test_retry_refuses_unknown_jobs_and_campaigns(tmp_path: Path) -> None:
    """`retry --job`/`--campaign` naming nothing in the manifest is a usage error."""
    h = Harness(tmp_path, MockOptions(seed=24))
    with pytest.raises(UsageError, match="--job names no job"):
        app.retry(h.manifest, h.state_dir, keys=["0000000000000000"])
    with pytest.raises(UsageError, match="--campaign names no campaign"):
        app.retry(h.manifest, h.state_dir, campaigns=["nope"])


PLATFORM_MANIFEST = """
version: 1
provider: {{name: higgsfield}}
{limits}
defaults:
  type: text-to-video
  model: higgsfield-ai/dop/standard
  duration: 4
campaigns:
  - name: walk
    prompt: "{{subject}} walking in {{place}}"
    matrix:
      subject: [A dancer, A chef]
      place: [a park, a street, a kitchen]
"""


def test_platform_dialect_end_to_end_under_its_concurrency_limit(
    harness: Callable[..., Harness],
) -> None:
    """The official platform dialect, with the account limited to 2 generations at once while
    the runner asks for 4: the concurrency-limit 400s are backpressure, every job downloads,
    the provider never holds more than 2, and nothing is paid twice."""
    h = harness(MockOptions(latency_min=0.02, latency_max=0.05, concurrency_limit=2, seed=25))
    h.write(PLATFORM_MANIFEST.format(limits=FAST_LIMITS))
    environ = {
        "HIGGSFIELD_BASE_URL": base_urls(h.server.origin if h.server else IN_PROCESS_ORIGIN)[
            "higgsfield"
        ]
    }
    result = h.run(**environ)
    assert result.counts == {"downloaded": 6}
    stats = h.mock.stats()
    assert stats["concurrency_rejections"] > 0
    assert stats["max_in_flight"] <= 2
    assert stats["generations_created"] == 6 and stats["duplicate_bodies"] == 0
    assert {g.route for g in h.mock.generations.values()} == {"higgsfield-ai/dop/standard"}
    assert all(r.attempts == 0 for r in h.rows())  # throttles used no attempts
    assert_files_match_mock(h)


def test_platform_soul_from_local_images_is_uploaded_once(tmp_path: Path) -> None:
    """On the platform dialect a soul's local reference images are uploaded (once, remembered
    by content), trained as a custom reference, and sent as custom_reference_id."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, soul_training_seconds=0.02))
    refs = tmp_path / "refs"
    refs.mkdir()
    for n in (1, 2):
        (refs / f"{n}.jpg").write_bytes(b"\xff\xd8\xff" + bytes([n]) * 64)
    h.write(
        PLATFORM_MANIFEST.format(limits=FAST_LIMITS).replace(
            "defaults:",
            "souls: {ava: {name: ava_v1, images: [refs/*.jpg]}}\ndefaults:",
        ).replace("  - name: walk\n", "  - name: walk\n    soul: ava\n")
    )
    environ = {"HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfield"]}
    assert h.run(**environ).counts == {"downloaded": 6}
    stats = h.mock.stats()
    assert stats["uploads"] == 2 and stats["souls_created"] == 1
    [soul] = h.mock.souls.values()
    assert {g.body.get("custom_reference_id") for g in h.mock.generations.values()} == {soul.id}
    h.write(h.manifest.read_text().replace("a kitchen", "a roof"))
    assert h.run(**environ).counts == {"downloaded": 6}
    assert h.mock.stats()["uploads"] == 2 and h.mock.stats()["souls_created"] == 1


def test_a_soul_is_shared_by_manifests_that_define_it_alike(tmp_path: Path) -> None:
    """Two manifests with the same soul (name and images) train one model between them; a
    different image set trains another."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, soul_training_seconds=0.02))
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    h.run()
    other = tmp_path / "other.yaml"
    text = SOUL_MANIFEST.format(limits=FAST_LIMITS)
    other.write_text(text.replace("name: ava\n", "name: ava2\n"))
    assert app.run(other, h.state_dir, app.RunOptions(), h.env()).counts == {"downloaded": 3}
    assert h.mock.stats()["souls_created"] == 1
    third = tmp_path / "third.yaml"
    third.write_text(other.read_text().replace("ava/02.jpg", "ava/03.jpg").replace("ava2", "ava3"))
    assert app.run(third, h.state_dir, app.RunOptions(), h.env()).counts == {"downloaded": 3}
    assert h.mock.stats()["souls_created"] == 2


def test_a_failed_shared_soul_model_is_not_reused(tmp_path: Path) -> None:
    """Manifest A's model was still `training` when A's run stopped, and then failed: B picks
    it up once, sees it fail, and its next run trains a model of its own."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, soul_fail_rate=1.0))
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    h.run()
    with open_ledger(default_ledger_url(h.state_dir)) as ledger:
        [a] = ledger.souls()
        ledger.set_soul(  # as if A's run had been killed while the model trained
            a.name, a.manifest, status="training", model_id=a.model_id, images_hash=a.images_hash
        )
    h.mock.options = MockOptions(latency_min=0, latency_max=0)
    other = tmp_path / "other.yaml"
    other.write_text(h.manifest.read_text().replace("name: ava\n", "name: ava2\n"))
    first = app.run(other, h.state_dir, app.RunOptions(), h.env())
    assert first.counts == {"failed": 3}
    assert h.mock.stats()["souls_created"] == 1
    app.retry(other, h.state_dir)
    second = app.run(other, h.state_dir, app.RunOptions(), h.env())
    assert second.counts == {"downloaded": 3}
    assert h.mock.stats()["souls_created"] == 2


def test_souls_are_not_shared_across_accounts(tmp_path: Path) -> None:
    """The same soul under another account (another api_key_env) is trained for that account."""
    options = MockOptions(
        latency_min=0, latency_max=0, soul_training_seconds=0, seed_api_keys=("test-key", "k2")
    )
    h = Harness(tmp_path, options)
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    h.run()
    other = tmp_path / "other.yaml"
    other.write_text(
        h.manifest.read_text()
        .replace("version: 1\n", "version: 1\nprovider: {api_key_env: SECOND_KEY}\n")
        .replace("name: ava\n", "name: ava2\n")
    )
    env = h.env(SECOND_KEY="k2")
    assert app.run(other, h.state_dir, app.RunOptions(), env).counts == {"downloaded": 3}
    assert h.mock.stats()["souls_created"] == 2


def test_dry_run_lists_resends_even_when_the_budget_stops_new_jobs(tmp_path: Path) -> None:
    """A job left `submitting` is re-sent (not charged again) whatever the budget; dry-run
    says so."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=26))
    limits = FAST_LIMITS.replace("max_attempts: 6", "max_attempts: 1")
    h.write(with_total_cap(MANIFEST.format(limits=limits), 16))
    h.transport_wrapper = DropPostAnswers
    h.run(app.RunOptions(only=("spin",)))  # both spin jobs left `submitting`: 16 credits
    h.transport_wrapper = lambda t: t
    dry = h.run(app.RunOptions(dry_run=True))
    assert sorted(j.campaign for j in dry.would_submit) == ["spin", "spin"]
    assert dry.outcome.budget_stop is not None
    real = h.run()
    assert sorted(r.campaign for r in h.rows() if r.status is JobStatus.DOWNLOADED) == [
        "spin", "spin"
    ]
    assert real.outcome.budget_stop == dry.outcome.budget_stop


def test_location_is_recorded_and_read_after_the_manifest_moves(tmp_path: Path) -> None:
    """Each downloaded video's absolute location is in the ledger; `show`, `jobs --json` and
    `export` give it, still right after the manifest was moved and then deleted."""
    import csv
    import io
    import json

    from click.testing import CliRunner

    from runner.cli import cli

    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=27))
    assert h.run().counts == {"downloaded": JOBS}
    expected = {r.key: str((h.state_dir / "videos" / r.path).resolve()) for r in h.rows()}
    assert all(Path(loc).is_file() for loc in expected.values())
    moved = tmp_path / "archive" / "m.yaml"
    moved.parent.mkdir()
    h.manifest.rename(moved)

    def cli_says() -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
        runner = CliRunner()
        state = ["--state", str(h.state_dir)]
        jobs = json.loads(runner.invoke(cli, ["jobs", "--json", *state]).stdout)
        jsonl = runner.invoke(cli, ["export", "--format", "jsonl", *state]).stdout.splitlines()
        table = csv.DictReader(io.StringIO(runner.invoke(cli, ["export", *state]).stdout))
        shown = {}
        for key in expected:
            out = runner.invoke(cli, ["show", key, *state]).stdout
            (line,) = [x for x in out.splitlines() if x.startswith("location")]
            shown[key] = line.split()[1].rstrip(";")
        return (
            {j["key"]: j["location"] for j in jobs},
            {d["key"]: d["location"] for d in map(json.loads, jsonl)},
            {row["key"]: row["location"] for row in table},
            shown,
        )

    for said in cli_says():
        assert said == expected
    moved.unlink()
    for said in cli_says():
        assert said == expected


def test_transient_attempts_persist_across_runs(tmp_path: Path) -> None:
    """A job's attempts live in the ledger: with max_attempts 3 and every answer lost, the
    first run sends each submit 3 times, the second only once more (its attempts are used
    up), and a third run whose answers arrive gets the original generations back."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=28))
    h.write(MANIFEST.format(limits=FAST_LIMITS.replace("max_attempts: 6", "max_attempts: 3")))
    h.transport_wrapper = DropPostAnswers
    h.run(app.RunOptions(only=("spin",)))
    assert len(h.submits()) == 3 * 2
    assert {r.attempts for r in h.rows() if r.campaign == "spin"} == {3}
    h.run(app.RunOptions(only=("spin",)))
    assert len(h.submits()) == 3 * 2 + 2
    assert {r.attempts for r in h.rows() if r.campaign == "spin"} == {4}
    h.transport_wrapper = lambda t: t
    assert h.run(app.RunOptions(only=("spin",))).counts == {"downloaded": 2}
    assert h.mock.stats()["generations_created"] == 2


def test_until_and_max_failures_stop_new_submissions(tmp_path: Path) -> None:
    """--until in the past submits nothing and says why; --max-failures 2 with every
    generation failing stops after 2 failures instead of burning the whole batch."""
    from datetime import UTC, datetime, timedelta

    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=29))
    past = datetime.now(UTC) - timedelta(minutes=1)
    early = h.run(app.RunOptions(until=past))
    assert early.outcome.submitted == 0
    assert "--until" in (early.outcome.stopped or "")
    assert h.mock.stats()["generations_created"] == 0

    (tmp_path / "b").mkdir()
    h2 = Harness(tmp_path / "b", MockOptions(latency_min=0, latency_max=0, fail_rate=1.0, seed=30))
    h2.write(MANIFEST.format(limits=FAST_LIMITS.replace("concurrency: 4", "concurrency: 1")))
    stopped = h2.run(app.RunOptions(max_failures=2))
    assert stopped.outcome.failed == 2 and stopped.outcome.submitted == 2
    assert "--max-failures 2 reached" in (stopped.outcome.stopped or "")
    assert stopped.counts == {"failed": 2, "pending": JOBS - 2}


def test_until_parses_clock_times_and_timestamps() -> None:
    """HH:MM is the next such local moment; ISO timestamps are taken as given; junk is a
    usage error naming what is accepted."""
    from datetime import datetime, timedelta

    from runner.settings import parse_until

    now = datetime(2026, 11, 30, 22, 0).astimezone()
    assert parse_until("06:00", now) == now.replace(hour=6) + timedelta(days=1)
    assert parse_until("23:30", now) == now.replace(minute=30, hour=23)
    assert parse_until("2026-12-01T06:00", now).hour == 6
    with pytest.raises(UsageError, match="HH:MM"):
        parse_until("tomorrow", now)


def test_a_result_that_expired_unread_fails_with_the_reason_and_stays_charged(
    tmp_path: Path,
) -> None:
    """Platform results expire (result_ttl); one found expired before its download fails
    with that reason, and its credits still count as spent: plan says so."""
    clock = FakeClock()
    h = Harness(tmp_path, MockOptions(latency_min=1, latency_max=1, result_ttl=60, seed=32), clock)
    priced = "budget:\n  prices:\n    - {match: {}, credits: 3}\ndefaults:"
    h.write(PLATFORM_MANIFEST.format(limits=FAST_LIMITS).replace("defaults:", priced))
    platform = {"HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfield"]}
    assert h.run(app.RunOptions(submit_only=True), **platform).counts == {"queued": 6}
    clock.advance(1000)
    results = app.collect(h.manifest, h.state_dir, h.env(**platform))
    assert results[0].counts == {"failed": 6}
    assert all((r.error or "").startswith("generation expired") for r in h.rows())
    summary = app.plan(h.manifest, h.state_dir).document["summary"]
    assert summary["charged_credits"] == 6 * 3


def test_a_lost_soul_training_answer_trains_once(tmp_path: Path) -> None:
    """Every new soul training's answer is lost: the runner asks again under the same
    Idempotency-Key, the mock answers with the model it made, and trains (bills) it once;
    the jobs use that model."""
    options = MockOptions(latency_min=0, latency_max=0, drop_soul_answer_rate=1.0, seed=33)
    h = Harness(tmp_path, options)
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    assert h.run().counts == {"downloaded": 3}
    trainings = [e for e in h.mock.log_entries() if e["path"].endswith("/soul/train")]
    assert len(trainings) >= 2  # the first answer was lost
    assert len({e["idempotency_key"] for e in trainings}) == 1
    assert h.mock.stats()["souls_created"] == 1
    [soul] = h.mock.souls.values()
    assert {g.body.get("model_id") for g in h.mock.generations.values()} == {soul.id}


@pytest.mark.parametrize("dialect", ["higgsfieldapi", "higgsfield"])
def test_status_glitches_never_fail_a_paid_generation(tmp_path: Path, dialect: str) -> None:
    """Every status glitch the mock knows (an HTML 200, JSON without a status, `status: 3`, a
    404 from a lagging replica, `completed` without a URL, a 307 elsewhere, a regression to
    `processing`) hits each generation once: every job still ends downloaded and the mock
    created exactly one generation per job."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, glitch_rate=1.0, seed=34))
    text = MANIFEST if dialect == "higgsfieldapi" else PLATFORM_MANIFEST
    h.write(text.format(limits=FAST_LIMITS.replace("max_attempts: 6", "max_attempts: 12")))
    env = {"HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)[dialect]}
    result = h.run(**env)
    for _ in range(3):  # a job held after its attempts is asked again by the next run
        if set(result.counts) == {"downloaded"}:
            break
        result = h.run(**env)
    stats = h.mock.stats()
    assert set(result.counts) == {"downloaded"}, (result.counts, result.outcome.held)
    assert stats["glitches"] > 0
    assert stats["generations_created"] == len(h.rows())
    assert_files_match_mock(h)


def test_two_state_dirs_on_one_account_never_share_generations(tmp_path: Path) -> None:
    """Three state dirs on one account: two run the same manifest, the third the manifest
    with an edited soul (same job keys, another model id in the body). The mock created a
    generation per job per ledger, replayed none across ledgers, refused none with a
    conflicting body, and no job failed."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=35))
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    results = [h.run(), app.run(h.manifest, tmp_path / "state-b", app.RunOptions(), h.env())]
    h.write(
        SOUL_MANIFEST.format(limits=FAST_LIMITS).replace(
            "https://cdn.example.com/ava/02.jpg", "https://cdn.example.com/ava/03.jpg"
        )
    )
    results.append(app.run(h.manifest, tmp_path / "state-c", app.RunOptions(), h.env()))
    assert [r.counts for r in results] == [{"downloaded": 3}] * 3
    stats = h.mock.stats()
    assert stats["generations_created"] == 3 * 3
    assert stats["idempotent_replays"] == 0
    assert stats["idempotency_conflicts"] == 0


class RefuseVideos(httpx.AsyncBaseTransport):
    """Answers every video download with a dropped connection; API calls go through."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/_mock/videos/"):
            raise httpx.ConnectError("refused", request=request)
        return await self.inner.handle_async_request(request)


def test_expiry_is_recorded_and_the_soonest_expiring_is_downloaded_first(
    tmp_path: Path,
) -> None:
    """The platform's `expires_at` is recorded with `completed`; when several finished
    videos wait for the one download slot, they are fetched soonest-expiring first."""
    clock = FakeClock()
    options = MockOptions(latency_min=1, latency_max=50, result_ttl=3600, seed=36)
    h = Harness(tmp_path, options, clock)
    limits = FAST_LIMITS.replace("download_concurrency: 3", "download_concurrency: 1")
    h.write(PLATFORM_MANIFEST.format(limits=limits))
    platform = {"HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfield"]}
    assert h.run(app.RunOptions(submit_only=True), **platform).counts == {"queued": 6}
    clock.advance(100)  # every generation is done, each with its own expiry
    h.transport_wrapper = RefuseVideos  # polled to completed, downloads held for later
    assert h.run(**platform).counts == {"completed": 6}
    expiry = {r.generation_id: r.expires_at for r in h.rows()}
    assert all(expiry.values()) and len(set(expiry.values())) == 6
    h.transport_wrapper = lambda t: t
    assert h.run(**platform).counts == {"downloaded": 6}
    fetched = [
        e["generation_id"] for e in h.mock.log_entries() if e["path"].startswith("/_mock/videos/")
    ]
    waited = [expiry[g] for g in fetched[1:]]  # the first took the free slot at once
    assert waited == sorted(waited)


@pytest.mark.parametrize(
    ("limits", "flag", "downloads"),
    [
        ("", None, 4),  # the default concurrency 4: the default 4 downloads
        ("concurrency: 1000", None, 63),  # enough to keep up with 1,000 in flight
        ("concurrency: 8", 400, 25),  # --concurrency counts
        ("{concurrency: 1000, download_concurrency: 2}", None, 2),  # said: kept
    ],
)
def test_download_concurrency_keeps_up_with_generations_in_flight(
    tmp_path: Path, limits: str, flag: int | None, downloads: int
) -> None:
    """Without a download_concurrency of its own, a manifest downloads one video per 16
    generations in flight (never fewer than the default 4); one it sets is kept."""
    from runner.manifest import load_manifest
    from runner.settings import RunOptions, engine_settings

    manifest = tmp_path / "m.yaml"
    block = f"limits: {limits}\n" if limits.startswith("{") else f"limits:\n  {limits}\n"
    manifest.write_text(
        "version: 1\n"
        + (block if limits else "")
        + "campaigns:\n  - name: c\n    prompt: p\n"
    )
    settings = engine_settings(load_manifest(manifest), RunOptions(concurrency=flag), {})
    assert settings.download_concurrency == downloads

"""Editing a manifest while its jobs are queued and running (SPEC v2 §4), over loopback: the
generations no longer wanted are cancelled while queued (refunded, counted by the mock) or
polled and downloaded, then shown orphaned with their files; none is paid for and lost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from runner.cli import cli
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions
from runner.mock.testing import FakeClock
from tests.test_cli_cancel import env_for
from tests.test_cli_run import Factory

MANIFEST = """
version: 1
provider: {{name: {provider}}}
limits: {{concurrency: 8, requests_per_second: 100, poll_initial: 0.02, poll_max: 0.05}}
defaults: {{type: text-to-video, duration: 4}}
campaigns:
  - name: teaser
    prompt: "{prompt} {{n}}"
    matrix:
      n: {values}
"""


class Ticker:
    """Moves the mock's clock on (10 s at a time) from a thread, once ``start`` is called,
    until ``stop``: generations then finish while the run polls them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self) -> None:
        while not self.done.is_set():
            self.clock.advance(10)
            time.sleep(0.005)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def start_when(condition: Callable[[], bool], ticker: Ticker, limit: float = 60.0) -> None:
    """Start ``ticker`` once ``condition()`` holds, or after ``limit`` seconds anyway (so that
    a run that never meets it still ends, and the test's assertions say what went wrong)."""
    give_up = time.monotonic() + limit
    while not condition() and time.monotonic() < give_up:
        time.sleep(0.01)
    ticker.start()


def test_editing_a_manifest_while_its_jobs_are_in_flight_loses_no_paid_generation(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    clock = FakeClock()
    options = MockOptions(
        latency_min=100, latency_max=100, concurrency_limit=1, queue_limit=10, seed=43
    )
    server = mock_server_factory(options, clock=clock)
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(
        MANIFEST.format(provider="higgsfield", prompt="shot", values="[1, 2, 3, 4]")
    )
    env = env_for(server.platform_base_url)
    runner = CliRunner()
    sent = runner.invoke(
        cli, ["run", str(manifest), "--submit-only", "--state", str(state)], env=env
    )
    assert sent.exit_code == 0, sent.output
    clock.advance(30)  # one generation runs on the account's one slot; three wait in its queue
    assert (server.state.stats()["running"], server.state.stats()["queued"]) == (1, 3)
    with open_ledger(default_ledger_url(state)) as ledger:
        old = {r.key: r.generation_id for r in ledger.jobs()}
    assert len(old) == 4 and all(old.values())

    # The planner rewrites the prompt: none of the four sent jobs is produced any more.
    manifest.write_text(MANIFEST.format(provider="higgsfield", prompt="take", values="[1, 2]"))
    planned = runner.invoke(cli, ["plan", str(manifest), "--json", "--state", str(state)], env=env)
    assert planned.exit_code == 0, planned.output
    summary = json.loads(planned.stdout)["summary"]
    assert (summary["new"], summary["in_flight"], summary["orphaned"]) == (2, 4, 0)

    # The run cancels the three queued ones first (the mock's clock stands still until it
    # has), then the clock moves so the running one and the two new ones finish.
    ticker = Ticker(clock)
    three_cancelled = lambda: server.state.stats()["canceled"] >= 3  # noqa: E731
    watcher = threading.Thread(target=start_when, args=(three_cancelled, ticker), daemon=True)
    watcher.start()
    try:
        done = runner.invoke(cli, ["run", str(manifest), "--state", str(state)], env=env)
    finally:
        watcher.join()
        ticker.stop()
    assert done.exit_code == 0, done.output
    assert "Traceback" not in done.output

    stats = server.state.stats()
    assert stats["generations_created"] == 6  # 4 before the edit + 2 new: nothing re-sent
    assert (stats["canceled"], stats["idempotent_replays"]) == (3, 0)
    assert stats["refunded"] == 3 and stats["charged"] == 3
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = {r.key: r for r in ledger.jobs()}
        events = {key: [e.detail or "" for e in ledger.events(key)] for key in old}
    # Every generation the mock created is either refunded or has its file.
    cancelled = {k for k in old if rows[k].error == "cancelled"}
    kept = set(old) - cancelled
    assert len(cancelled) == 3 and len(kept) == 1
    for key in old:
        assert rows[key].status is JobStatus.ORPHANED
    (survivor,) = kept
    location = rows[survivor].location
    assert location is not None and Path(location).stat().st_size == rows[survivor].bytes
    assert any("kept at" in d for d in events[survivor])
    for key in cancelled:
        assert any("cancelled while queued (refunded)" in d for d in events[key])
    new = [r for k, r in rows.items() if k not in old]
    assert len(new) == 2 and all(r.status is JobStatus.DOWNLOADED for r in new)

    # Now the plan has nothing in flight, and the four are orphaned; a run changes nothing.
    planned = runner.invoke(cli, ["plan", str(manifest), "--json", "--state", str(state)], env=env)
    summary = json.loads(planned.stdout)["summary"]
    assert (summary["done"], summary["in_flight"], summary["orphaned"]) == (2, 0, 4)
    again = runner.invoke(cli, ["run", str(manifest), "--state", str(state)], env=env)
    assert again.exit_code == 0, again.output
    assert server.state.stats()["generations_created"] == 6


RETRY_MANIFEST = MANIFEST.format(provider="higgsfield", prompt="shot", values="[1, 2, 3]")


def test_retry_of_a_failed_job_whose_generation_completed_downloads_it_without_paying_again(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """A completed, paid generation that an older runner failed on a glitchy answer: `retry`
    then `run` ask the provider for it first and download it; the mock creates nothing new."""
    server = mock_server_factory()  # generations finish at once
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(RETRY_MANIFEST)
    env = env_for(server.platform_base_url)
    runner = CliRunner()
    sent = runner.invoke(
        cli, ["run", str(manifest), "--submit-only", "--state", str(state)], env=env
    )
    assert sent.exit_code == 0, sent.output
    with open_ledger(default_ledger_url(state)) as ledger, ledger.executor_lock():
        victim = ledger.jobs()[0]
        ledger.transition(
            victim.key, JobStatus.FAILED, detail="status 3", error="generation status 3"
        )
    retried = runner.invoke(
        cli, ["retry", str(manifest), "--job", victim.key, "--state", str(state)], env=env
    )
    assert retried.exit_code == 0, retried.output
    with open_ledger(default_ledger_url(state)) as ledger:
        row = ledger.get(victim.key)
        assert row is not None and row.status is JobStatus.PENDING
        assert row.prior_generation_id == victim.generation_id

    done = runner.invoke(cli, ["run", str(manifest), "--state", str(state)], env=env)
    assert done.exit_code == 0, done.output
    stats = server.state.stats()
    assert (stats["generations_created"], stats["idempotent_replays"]) == (3, 0)
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = ledger.jobs()
        row = ledger.get(victim.key)
        details = [e.detail or "" for e in ledger.events(victim.key)]
    assert all(r.status is JobStatus.DOWNLOADED for r in rows)
    assert row is not None and row.generation_id == victim.generation_id
    assert row.location is not None and Path(row.location).stat().st_size == row.bytes
    assert any("taken up, not paid again" in d for d in details)


def test_retry_of_a_job_whose_generation_really_failed_pays_once_more(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """When the earlier generation did fail at the provider, the retry asks, hears so, and
    submits once anew: one new generation per retried job, no more."""
    server = mock_server_factory(MockOptions(latency_min=0, latency_max=0, fail_rate=1.0, seed=3))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(RETRY_MANIFEST)
    env = env_for(server.platform_base_url)
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(manifest), "--state", str(state)], env=env)
    assert first.exit_code == 1, first.output  # every generation failed
    assert server.state.stats()["generations_created"] == 3
    again = runner.invoke(
        cli, ["run", str(manifest), "--retry-failed", "--state", str(state)], env=env
    )
    assert again.exit_code == 1, again.output
    assert server.state.stats()["generations_created"] == 6
    with open_ledger(default_ledger_url(state)) as ledger:
        for row in ledger.jobs():
            details = [e.detail or "" for e in ledger.events(row.key)]
            assert any(f"earlier generation {row.prior_generation_id} is" in d for d in details)
            assert row.generation_id != row.prior_generation_id

"""Editing a manifest while its jobs are queued and running (SPEC v2 §4), over loopback: the
generations no longer wanted are cancelled while queued (refunded, counted by the mock) or
polled and downloaded, then shown orphaned with their files; none is paid for and lost."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import app
from runner.cli import cli
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions, base_urls
from runner.mock.testing import IN_PROCESS_ORIGIN, FakeClock
from tests.test_cli_cancel import env_for
from tests.test_cli_run import Factory, finish_run, start_run, wait_until
from tests.test_executor import FAST_LIMITS, SOUL_MANIFEST, Harness

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


@pytest.mark.parametrize("dialect", ["higgsfieldapi", "higgsfield"])
def test_soul_answers_lost_for_a_whole_run_train_once_and_the_next_run_finds_it(
    tmp_path: Path, dialect: str
) -> None:
    """Every answer to the soul training is lost for one run: the mock trained once (every
    try carried the one key committed with `submitting`), the jobs wait as pending (nothing
    of them was sent); the next run finds the training — by name in the account's references
    on the platform, by re-sending the same key on the seed API — and its jobs use it."""
    options = MockOptions(
        latency_min=0, latency_max=0, soul_training_seconds=0, drop_soul_answer_rate=1.0,
        drop_soul_replays=True, seed=36,
    )  # fmt: skip
    h = Harness(tmp_path, options)
    provider = f"provider: {{name: {dialect}}}\n"
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS).replace("souls:", provider + "souls:"))
    env = {"HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)[dialect]}
    first = h.run(**env)
    assert first.counts == {"pending": 3}, first.outcome.held
    trainings = [e for e in h.mock.log_entries() if (e["method"] == "POST" and "soul" in e["path"])
                 or e["path"].endswith("/custom-references")]  # fmt: skip
    assert len(trainings) == 6  # max_attempts, all answers lost
    assert len({e["idempotency_key"] for e in trainings}) == 1
    assert h.mock.stats()["souls_created"] == 1
    with open_ledger(default_ledger_url(h.state_dir)) as ledger:
        (soul,) = ledger.souls()
    assert (soul.status, soul.model_id) == ("submitting", None)
    assert soul.idempotency_key == trainings[0]["idempotency_key"]

    h.mock.options = replace(h.mock.options, drop_soul_answer_rate=0.0)
    second = h.run(**env)
    assert second.counts == {"downloaded": 3}
    stats = h.mock.stats()
    assert (stats["souls_created"], stats["generations_created"]) == (1, 3)
    (trained,) = h.mock.souls.values()
    assert {g.body.get("model_id") or g.body.get("custom_reference_id")
            for g in h.mock.generations.values()} == {trained.id}  # fmt: skip
    listed = [e for e in h.mock.log_entries() if e["path"].endswith("/custom-references/list")]
    assert bool(listed) is (dialect == "higgsfield")  # the platform looked it up by name


SOUL_RUN = """
version: 1
provider: {name: higgsfield}
limits: {concurrency: 4, requests_per_second: 50, poll_initial: 0.05, poll_max: 0.2}
souls:
  ava:
    name: brand_influencer_v1
    images: [https://cdn.example.com/ava/01.jpg, https://cdn.example.com/ava/02.jpg]
defaults: {type: text-to-video, duration: 4}
campaigns:
  - name: ava
    soul: ava
    prompt: "Ava in {place}"
    matrix:
      place: [a park, a street, a kitchen, a garden, a beach, a library]
"""


def soul_status(state: Path) -> str | None:
    if not (state / "ledger.db").exists():
        return None
    with open_ledger(default_ledger_url(state), readonly=True) as ledger:
        souls = ledger.souls() if ledger is not None else []
    return souls[0].status if souls else None


def test_sigkill_during_soul_training_trains_it_once(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """`runner run` killed with SIGKILL 10 times — right after the training POST, while the
    soul is polled, as generations are made — then resumed: the mock trained the soul once,
    created one generation per job, and every job carries that soul's id."""
    training = 4.0  # the mock's own (real) clock; every kill lands at most 0.3 s after its cue
    server = mock_server_factory(
        MockOptions(latency_min=0.3, latency_max=0.8, soul_training_seconds=training, seed=44)
    )
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(SOUL_RUN)
    env = {**env_for(server.platform_base_url), "RUNNER_BACKOFF": "0.01,0.2"}
    rng = random.Random(44)

    def count(method: str, tail: str) -> int:
        entries = server.state.log_entries()
        return sum(1 for e in entries if e["method"] == method and tail in e["path"])

    landed: list[str | None] = []  # the soul's status in the ledger after each kill
    for _ in range(10):
        sent, polled = count("POST", "/custom-references"), count("GET", "/custom-references/")
        made = server.state.stats()["generations_created"]
        cues: list[Callable[[], bool]] = [
            lambda sent=sent: count("POST", "/custom-references") > sent
        ]
        if sent:  # after the first training POST, any moment of the soul's or the jobs' way
            cues += [
                lambda polled=polled: count("GET", "/custom-references/") > polled,
                lambda made=made: server.state.stats()["generations_created"] > made,
            ]
        proc = start_run(manifest, state, env)
        if wait_until(proc, rng.choice(cues)):
            try:
                proc.wait(timeout=rng.uniform(0, 0.3))
            except subprocess.TimeoutExpired:
                proc.kill()
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
        assert "Traceback" not in err
        if proc.returncode == -signal.SIGKILL:
            landed.append(soul_status(state))
    # The first kill came right after the training POST, long before the training ends.
    assert landed and landed[0] in ("submitting", "training"), landed
    final = finish_run(manifest, state, env)
    assert final.returncode == 0, final.stderr
    stats = server.state.stats()
    assert (stats["souls_created"], stats["duplicate_souls"]) == (1, 0)
    assert stats["generations_created"] == 6 and stats["duplicate_bodies"] == 0
    (soul,) = server.state.souls.values()
    assert {g.body.get("custom_reference_id") for g in server.state.generations.values()} == {
        soul.id
    }
    with open_ledger(default_ledger_url(state)) as ledger:
        assert {r.status for r in ledger.jobs()} == {JobStatus.DOWNLOADED}
        assert [(s.status, s.model_id) for s in ledger.souls()] == [("ready", soul.id)]


def test_on_a_dialect_that_cannot_cancel_finishing_jobs_are_downloaded_then_orphaned(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """The seed API cannot cancel: every job sent before the edit is polled and downloaded,
    then orphaned with its file; nothing is sent again."""
    server = mock_server_factory()  # generations finish at once
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(MANIFEST.format(provider="higgsfieldapi", prompt="shot", values="[1, 2]"))
    env = env_for(server.seed_base_url)
    runner = CliRunner()
    args = ["run", str(manifest), "--submit-only", "--state", str(state)]
    assert runner.invoke(cli, args, env=env).exit_code == 0
    manifest.write_text(MANIFEST.format(provider="higgsfieldapi", prompt="take", values="[1]"))
    done = runner.invoke(cli, ["run", str(manifest), "--state", str(state)], env=env)
    assert done.exit_code == 0, done.output
    assert server.state.stats()["generations_created"] == 3
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = ledger.jobs()
    orphans = [r for r in rows if r.status is JobStatus.ORPHANED]
    assert len(orphans) == 2 and len(rows) == 3
    for row in orphans:
        assert row.location is not None and Path(row.location).stat().st_size == row.bytes
        assert row.sha256 == server.state.video_sha256(row.generation_id or "")


def test_a_worker_finishes_the_jobs_an_edit_left_in_flight(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """`enqueue` of an edited manifest, then `worker --idle-exit`: the worker treats the jobs
    the manifest no longer produces as `run` does — the queued one cancelled (refunded), the
    running one downloaded — and orphans them with their files."""
    clock = FakeClock()
    options = MockOptions(latency_min=100, latency_max=100, concurrency_limit=1, queue_limit=5)
    server = mock_server_factory(options, clock=clock)
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(MANIFEST.format(provider="higgsfield", prompt="shot", values="[1, 2]"))
    env = env_for(server.platform_base_url)
    runner = CliRunner()
    sent = runner.invoke(
        cli, ["run", str(manifest), "--submit-only", "--state", str(state)], env=env
    )
    assert sent.exit_code == 0, sent.output
    clock.advance(30)  # one runs, one waits in the account's queue
    manifest.write_text(MANIFEST.format(provider="higgsfield", prompt="take", values="[1]"))
    queued = runner.invoke(cli, ["enqueue", str(manifest), "--state", str(state)], env=env)
    assert queued.exit_code == 0, queued.output
    ticker = Ticker(clock)
    one_cancelled = lambda: server.state.stats()["canceled"] >= 1  # noqa: E731
    watcher = threading.Thread(target=start_when, args=(one_cancelled, ticker), daemon=True)
    watcher.start()
    try:
        done = runner.invoke(cli, ["worker", "--idle-exit", "--state", str(state)], env=env)
    finally:
        watcher.join()
        ticker.stop()
    assert done.exit_code == 0, done.output
    stats = server.state.stats()
    assert (stats["generations_created"], stats["canceled"]) == (3, 1)
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = ledger.jobs()
    orphans = [r for r in rows if r.status is JobStatus.ORPHANED]
    assert len(orphans) == 2
    assert sorted(r.error or "" for r in orphans) == ["", "cancelled"]
    (kept,) = [r for r in orphans if r.error != "cancelled"]
    assert kept.location is not None and Path(kept.location).stat().st_size == kept.bytes
    assert [r.status for r in rows if r not in orphans] == [JobStatus.DOWNLOADED]


def test_each_retraining_after_a_failed_soul_gets_a_new_key(tmp_path: Path) -> None:
    """A soul whose training fails run after run is trained anew each run under a key of its
    own (not replayed as the failed one), and once training works its jobs use that model."""
    options = MockOptions(
        latency_min=0, latency_max=0, soul_training_seconds=0, soul_fail_rate=1.0, seed=37
    )
    h = Harness(tmp_path, options)
    h.write(SOUL_MANIFEST.format(limits=FAST_LIMITS))
    for _ in range(3):  # the jobs fail with their soul; each run retries them
        assert h.run(app.RunOptions(retry_failed=True)).counts == {"failed": 3}
    trainings = [e for e in h.mock.log_entries() if e["path"].endswith("/soul/train")]
    assert h.mock.stats()["souls_created"] == 3
    assert len({e["idempotency_key"] for e in trainings}) == 3
    h.mock.options = replace(h.mock.options, soul_fail_rate=0.0)
    assert h.run(app.RunOptions(retry_failed=True)).counts == {"downloaded": 3}
    assert h.mock.stats()["souls_created"] == 4

"""`runner run` as a real process against the mock over loopback: crashes (SIGKILL) and
resumes, Ctrl-C, the executor lock, 401s, the rate limit and Retry-After pauses as the mock's
request log saw them.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions
from runner.mock.server import MockServerThread

MANIFEST = """
version: 1
limits:
  concurrency: {concurrency}
  requests_per_second: {rps}
  max_attempts: 10
  poll_initial: {poll}
  poll_max: {poll_max}
defaults:
  type: text-to-video
  duration: 2
campaigns:
  - name: crash
    prompt: "{{subject}} in {{place}}"
    matrix:
      subject: {subjects}
      place: {places}
"""

SUBJECTS = ["A dancer", "A chef", "A cat", "A robot", "A horse", "A pilot"]
PLACES = [
    *["a park", "a street", "a kitchen", "a beach", "a roof"],
    *["a boat", "a forest", "a shop", "a train", "a garden"],
]

Factory = Callable[..., MockServerThread]

# Waits here are for conditions, never for time; this only ends one that never comes (a hang).
HANG_GUARD = 120.0


def write_manifest(
    path: Path,
    *,
    subjects: int = 4,
    places: int = 4,
    concurrency: int = 4,
    rps: float = 50,
    poll: float = 0.05,
    poll_max: float = 0.2,
) -> int:
    """Write the test manifest; returns how many jobs it makes."""
    path.write_text(
        MANIFEST.format(
            subjects="[" + ", ".join(SUBJECTS[:subjects]) + "]",
            places="[" + ", ".join(PLACES[:places]) + "]",
            concurrency=concurrency,
            rps=rps,
            poll=poll,
            poll_max=poll_max,
        )
    )
    return subjects * places


def runner_env(server: MockServerThread, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HIGGSFIELD_BASE_URL": server.seed_base_url,
        "HIGGSFIELD_API_KEY": "test-key",
        "RUNNER_BACKOFF": "0.01,0.2",
        **extra,
    }


def start_run(manifest: Path, state: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(manifest), "--state", str(state)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_run(
    manifest: Path, state: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(manifest), "--state", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_until(proc: subprocess.Popen[str], condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` until it holds (True) or ``proc`` has ended (False)."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if proc.poll() is not None:
            return condition()
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run made no progress in {HANG_GUARD:.0f}s")
        time.sleep(0.01)
    return True


def created(server: MockServerThread) -> int:
    """Generations the mock has accepted so far."""
    return int(server.state.stats()["generations_created"])


def wait_for_generations(proc: subprocess.Popen[str], server: MockServerThread, count: int) -> None:
    """Until the mock has accepted ``count`` generations: the run is under way."""
    if not wait_until(proc, lambda: created(server) >= count):
        pytest.fail(f"the run ended before {count} generations: {proc.communicate()[1]}")


def videos_begun(server: MockServerThread) -> int:
    """Video downloads the mock has begun to serve (whole, ranged, or to be cut short)."""
    stats = server.state.stats()
    return int(stats["video_downloads"] + stats["range_downloads"] + stats["truncated_videos"])


def ledger_view(state: Path) -> tuple[dict[str, JobStatus], int]:
    """Each job's status and how many events the ledger holds (nothing before the first run)."""
    ledger = open_ledger(default_ledger_url(state), readonly=True)
    if ledger is None:
        return {}, 0
    with ledger:
        rows = ledger.jobs()
        return {r.key: r.status for r in rows}, sum(len(ledger.events(r.key)) for r in rows)


def finished(state: Path) -> set[tuple[str, JobStatus]]:
    """The jobs the ledger has as completed or downloaded, with that status."""
    statuses, _ = ledger_view(state)
    done = (JobStatus.COMPLETED, JobStatus.DOWNLOADED)
    return {(key, status) for key, status in statuses.items() if status in done}


def kill_condition(
    rng: random.Random, server: MockServerThread, state: Path, jobs: int
) -> tuple[str, Callable[[], bool]]:
    """A moment in one phase of the run about to start, chosen at random: its n-th new
    generation, a video download begun, or one more job completed or downloaded in the
    ledger. Each can only happen while that run is at work."""
    was_created, was_begun = created(server), videos_begun(server)
    choices: list[tuple[str, Callable[[], bool]]] = [
        ("a download begun", lambda: videos_begun(server) > was_begun)
    ]
    if was_created < jobs:
        n = rng.randint(1, min(3, jobs - was_created))
        choices.append((f"{n} new generation(s)", lambda: created(server) >= was_created + n))
    if (state / "ledger.db").exists():  # read while a run writes only once one has made it
        was_finished = finished(state)
        choices.append(("a job finished", lambda: bool(finished(state) - was_finished)))
    return rng.choice(choices)


def assert_everything_downloaded_once(server: MockServerThread, state: Path, jobs: int) -> None:
    """Every job downloaded and verified, no duplicate generation, no .part, ledger intact."""
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = ledger.jobs()
    assert len(rows) == jobs
    assert {r.status for r in rows} == {JobStatus.DOWNLOADED}
    for row in rows:
        data = (state / "videos" / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.sha256 == server.state.video_sha256(row.generation_id or "")
    stats = server.state.stats()
    assert stats["generations_created"] == jobs
    assert stats["duplicate_bodies"] == 0
    assert not list((state / "videos").rglob("*.part"))
    with sqlite3.connect(state / "ledger.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def crash_and_resume(
    tmp_path: Path,
    mock_server_factory: Factory,
    *,
    kills: int,
    seed: int,
    latency: tuple[float, float] = (0.5, 1.5),
    concurrency: int = 4,
    places: int = 6,
) -> None:
    """Kill `runner run` with SIGKILL ``kills`` times at random moments, then let it finish.

    A kill never races the clock (a loaded machine may take seconds to import the package):
    it waits for a sign that the run is at work (``kill_condition``), then a random moment
    shorter than the quickest generation, so it lands while that work is under way. A run
    finishes little more than what was in flight when it started (``concurrency`` jobs), so
    the work (6 × ``places`` jobs) outlasts more than half of the kills."""
    server = mock_server_factory(
        MockOptions(
            latency_min=latency[0],
            latency_max=latency[1],
            drop_after_accept_rate=0.1,
            truncate_rate=0.1,
            video_size=256 * 1024,
            seed=seed,
        )
    )
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, subjects=6, places=places, concurrency=concurrency)
    env = runner_env(server)
    rng = random.Random(seed)
    mid_run_kills: list[str] = []  # the moment each kill that landed mid-run waited for
    for _ in range(kills):
        _, events_before = ledger_view(state)
        proc = start_run(manifest, state, env)
        moment, condition = kill_condition(rng, server, state, jobs)
        if wait_until(proc, condition):
            try:
                proc.wait(timeout=rng.uniform(0, latency[0]))
            except subprocess.TimeoutExpired:
                proc.kill()
        _, err = proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, err  # it finished the work before the moment came
            continue
        statuses, events = ledger_view(state)
        if events > events_before and set(statuses.values()) != {JobStatus.DOWNLOADED}:
            mid_run_kills.append(moment)
    # The kills must really have landed while this run had written to the ledger and work
    # was left (by construction, unless the work ran out early).
    assert len(mid_run_kills) >= kills // 2, mid_run_kills
    final = finish_run(manifest, state, env)
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr
    assert_everything_downloaded_once(server, state, jobs)


def test_sigkill_at_random_moments_then_resume(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """Killed with SIGKILL 10 times at random moments, the run still finishes every job once."""
    crash_and_resume(tmp_path, mock_server_factory, kills=10, seed=101)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path: Path, mock_server_factory: Factory) -> None:
    """The same with 40 kills, over slower generations and more jobs, two at a time."""
    crash_and_resume(
        tmp_path,
        mock_server_factory,
        kills=40,
        seed=202,
        latency=(1.0, 2.0),
        concurrency=2,
        places=10,
    )


@pytest.mark.parametrize(("signals", "latency"), [(1, (1.0, 2.0)), (2, (0.5, 1.0))])
def test_ctrl_c_stops_and_the_next_run_resumes(
    tmp_path: Path, mock_server_factory: Factory, signals: int, latency: tuple[float, float]
) -> None:
    """One SIGINT stops cleanly, two abort at once: either way exit 130 with how to resume,
    and the next run finishes every job exactly once."""
    server = mock_server_factory(
        MockOptions(latency_min=latency[0], latency_max=latency[1], seed=3 + signals)
    )
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, concurrency=8)
    env = runner_env(server)
    proc = start_run(manifest, state, env)
    wait_for_generations(proc, server, 4 if signals == 1 else 2)
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "runner run" in err
    assert "Traceback" not in err
    final = finish_run(manifest, state, env)
    assert final.returncode == 0, final.stderr
    assert_everything_downloaded_once(server, state, jobs)


def test_second_runner_is_refused_while_one_runs(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """A second `run` on the same state exits 2 naming the holder; `status` still works."""
    # Generations that take an hour: the first run holds the lock until the test stops it,
    # however long the second takes to start.
    server = mock_server_factory(MockOptions(latency_min=3600, latency_max=3600, seed=4))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    write_manifest(manifest, subjects=1)
    env = runner_env(server)
    first = start_run(manifest, state, env)
    try:
        wait_for_generations(first, server, 1)
        second = finish_run(manifest, state, env)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr
        status = subprocess.run(
            [sys.executable, "-m", "runner", "status", "--json", "--state", str(state)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert status.returncode == 0, status.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)


def test_wrong_key_exits_3_without_leaking_it(tmp_path: Path, mock_server_factory: Factory) -> None:
    """A 401 stops the run with exit 3; the key is in no output, even at -vv; no job failed."""
    server = mock_server_factory(MockOptions(seed=5))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    write_manifest(manifest, subjects=1)
    secret = "sk-live-very-secret-0123456789"
    done = subprocess.run(
        [sys.executable, "-m", "runner", "-vv", "run", str(manifest), "--state", str(state)],
        env=runner_env(server, HIGGSFIELD_API_KEY=secret),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "DEBUG" in done.stderr or "INFO" in done.stderr  # verbose output was produced
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert secret not in done.stdout + done.stderr
    with open_ledger(default_ledger_url(state)) as ledger:
        assert JobStatus.FAILED not in {r.status for r in ledger.jobs()}
        for row in ledger.jobs():
            assert all(secret not in (e.detail or "") for e in ledger.events(row.key))
    assert secret.encode() not in (state / "ledger.db").read_bytes()


def api_calls(server: MockServerThread) -> list[dict[str, Any]]:
    """Every logged call to the API (video downloads are not API calls)."""
    return [e for e in server.state.log_entries() if not e["path"].startswith("/_mock/")]


def slowest_reaction(server: MockServerThread) -> float:
    """The longest the runner took in this run, as the mock saw it, from a status call that
    found a generation completed to the request for its video: how late, loaded as the machine
    is, a request can reach the mock after the moment that decided it."""
    asked: dict[str, float] = {}
    slowest = 0.0
    for entry in sorted(server.state.log_entries(), key=lambda e: e["time"]):
        generation = entry["generation_id"]
        if generation is None:
            continue
        if entry["path"].startswith("/_mock/videos/"):
            if generation in asked:
                slowest = max(slowest, entry["time"] - asked.pop(generation))
        elif entry["method"] == "GET" and entry["status"] == 200:
            asked[generation] = entry["time"]
    return slowest


def busiest(times: list[float], width: float) -> int:
    """The most calls any window of ``width`` seconds holds."""
    return max(sum(1 for t in times if start <= t < start + width) for start in times)


def test_no_one_second_window_exceeds_the_rate(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """Measured at the mock: no 1-second window holds more than requests_per_second calls."""
    server = mock_server_factory(MockOptions(latency_min=0.2, latency_max=0.5, seed=6))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, subjects=3, concurrency=12, rps=8, poll=0.1, poll_max=0.3)
    done = finish_run(manifest, state, runner_env(server))
    assert done.returncode == 0, done.stderr
    times = sorted(e["time"] for e in api_calls(server))
    assert len(times) >= jobs * 2
    # The runner spaces the calls it sends; each reaches the mock a little later, so a late
    # first call and a prompt last one can crowd a 1-second window at the mock. Narrow the
    # windows by the most the runner was seen to lag in this very run.
    lag = slowest_reaction(server)
    assert busiest(times, 1.0 - lag) <= 8, f"lag {lag:.3f}s"
    assert busiest(times, 1.0) >= 6  # the limiter, not a lack of work, set the pace


@pytest.mark.parametrize(("mode", "retry_after"), [("seconds", 1.0), ("date", 2.0)])
def test_no_call_during_retry_after_pause(
    tmp_path: Path, mock_server_factory: Factory, mode: str, retry_after: float
) -> None:
    """After a 429 with Retry-After, no API call reaches the provider until it has passed.
    One job at a time, so no other call can be on its way: none is excused, at any load."""
    server = mock_server_factory(
        MockOptions(
            latency_min=0.05,
            latency_max=0.1,
            rate_429=0.3,
            retry_after_mode=mode,  # type: ignore[arg-type]
            retry_after=retry_after,
            seed=4,  # its first draw is a 429: the very first call is throttled
        )
    )
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, subjects=1, concurrency=1, rps=40)
    done = finish_run(manifest, state, runner_env(server))
    assert done.returncode == 0, done.stderr
    calls = api_calls(server)
    throttled = [e["time"] for e in calls if e["status"] == 429]
    assert throttled, "the mock drew no 429; the test proved nothing"
    # An HTTP-date has whole seconds, so a 2 s date may mean just over 1 s from now. The pause
    # counts from when the runner read the 429, which is after the mock received it.
    pause = 1.0
    for t in throttled:
        inside = [e for e in calls if t < e["time"] < t + pause]
        assert inside == [], f"calls sent during the pause that started at {t}: {inside}"
    assert_everything_downloaded_once(server, state, jobs)


def same_call(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two log entries for the same call: one status path, or one submit (same key)."""
    return all(a[name] == b[name] for name in ("method", "path", "idempotency_key"))


def test_a_retry_after_pause_holds_every_caller(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """Eight jobs at once: after a 429 with Retry-After, the call that drew it waits the pause
    out, and the others send nothing new until it has passed (calls already on their way may
    still arrive)."""
    server = mock_server_factory(
        MockOptions(latency_min=0.05, latency_max=0.1, rate_429=0.3, retry_after=1.0, seed=7)
    )
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, subjects=2, concurrency=8, rps=40)
    done = finish_run(manifest, state, runner_env(server))
    assert done.returncode == 0, done.stderr
    assert_no_call_inside_a_pause(server, pause=1.0)
    assert_everything_downloaded_once(server, state, jobs)


def assert_no_call_inside_a_pause(server: MockServerThread, pause: float) -> None:
    """After each 429 with a Retry-After of ``pause``, the call that drew it was not sent again
    before the pause was over, and no other call was sent during it (calls already on their
    way when the runner paused may still arrive)."""
    calls = api_calls(server)
    throttled = [e for e in calls if e["status"] == 429]
    assert throttled, "the mock drew no 429; the test proved nothing"
    # When the runner began each pause, at the latest: it read the 429 and paused, then sent
    # its first call after the pause, which reached the mock no sooner than `pause` later.
    pauses = [
        (t, min(e["time"] for e in calls if e["time"] >= t["time"] + pause) - pause)
        for t in throttled
    ]
    # A call sent before the runner paused reaches the mock within the longest the runner was
    # seen to take in this run to act on an answer (the 429s included).
    lag = max(slowest_reaction(server), *(began - t["time"] for t, began in pauses))
    for t, began in pauses:
        again = [e for e in calls if e["time"] > t["time"] and same_call(e, t)]
        assert again and again[0]["time"] >= t["time"] + pause, f"retried early: {t} {again}"
        late = [e for e in calls if began + lag < e["time"] < t["time"] + pause]
        assert late == [], f"sent during the pause after the 429 at {t['time']}: {late}"
    # The test proves something only where the windows it checked were not empty.
    assert any(began + lag < t["time"] + pause for t, began in pauses), lag


def test_a_queue_full_storm_is_waited_out(tmp_path: Path, mock_server_factory: Factory) -> None:
    """The platform's account queue holds one generation beside the one running: eight jobs
    at once draw a storm of 429 `account_queue_full` with Retry-After. Every job ends
    downloaded, each sent once (resends carry the same key and create nothing), and no call
    is sent inside a pause."""
    server = mock_server_factory(
        MockOptions(
            latency_min=0.1,
            latency_max=0.2,
            concurrency_limit=1,
            queue_limit=1,
            retry_after=1.0,
            seed=8,
        )
    )
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, subjects=2, concurrency=8, rps=40)
    manifest.write_text(manifest.read_text().replace("version: 1", PLATFORM))
    env = runner_env(
        server, HIGGSFIELD_BASE_URL=server.platform_base_url, HF_KEY="test-id:test-secret"
    )
    done = finish_run(manifest, state, env)
    assert done.returncode == 0, done.stderr
    stats = server.state.stats()
    assert stats["queue_full_rejections"] > 0 and stats["max_in_flight"] <= 2
    assert stats["idempotency_conflicts"] == 0
    assert_no_call_inside_a_pause(server, pause=1.0)
    assert_everything_downloaded_once(server, state, jobs)


PLATFORM = "version: 1\nprovider: {name: higgsfield}"


def test_souls_command_trains_and_lists(tmp_path: Path, mock_server_factory: Factory) -> None:
    """`runner souls` trains what is not ready, lists every soul, and trains nothing twice."""
    server = mock_server_factory(MockOptions(soul_training_seconds=0.1, seed=8))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(
        "version: 1\n"
        "limits: {requests_per_second: 50, poll_initial: 0.05, poll_max: 0.1}\n"
        "souls:\n"
        "  ava: {name: ava_v1, images: [https://cdn.example.com/a.jpg]}\n"
        "  bo: {name: bo_v1, images: [https://cdn.example.com/b.jpg]}\n"
        "campaigns:\n"
        "  - {name: c, soul: ava, prompt: hello, type: text-to-video}\n"
    )
    command = [sys.executable, "-m", "runner", "souls", str(manifest), "--state", str(state)]
    env = runner_env(server)
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ava", "ready"], ["bo", "ready"]]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout == first.stdout
    assert server.state.stats()["souls_created"] == 2


def test_verbose_after_the_command_and_unusable_state(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """`run m.yaml -v` logs like `-v run`; a state path under a file is exit 2, no traceback."""
    server = mock_server_factory(MockOptions(latency_min=0, latency_max=0, seed=10))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    write_manifest(manifest, subjects=1)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(manifest), "--state", str(state), "-v"],
        env=runner_env(server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "INFO runner.engine.stages" in done.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = finish_run(manifest, blocker / "state", runner_env(server))
    assert bad.returncode == 2
    assert "Not a directory" in bad.stderr and "Traceback" not in bad.stderr


def test_souls_command_says_why_a_soul_could_not_be_trained(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """Local reference images need an upload the seed API lacks: refused before anything is
    written (exit 2, naming the field); a soul whose training fails at the provider is listed
    `failed` with the provider's reason (exit 1)."""
    server = mock_server_factory(MockOptions(soul_fail_rate=1.0, seed=11))
    (tmp_path / "ava.jpg").write_bytes(b"\xff\xd8\xff")
    manifest = tmp_path / "m.yaml"

    def souls(images: str) -> subprocess.CompletedProcess[str]:
        manifest.write_text(
            "version: 1\n"
            f"souls: {{ava: {{name: ava_v1, images: [{images}]}}}}\n"
            "campaigns: [{name: c, soul: ava, prompt: hi, type: text-to-video}]\n"
        )
        args = ["souls", str(manifest), "--state", str(tmp_path / "s")]
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            env=runner_env(server),
            capture_output=True,
            text=True,
            timeout=60,
        )

    local = souls("ava.jpg")
    assert local.returncode == 2, local.stderr
    assert "souls.ava.images" in local.stderr and "upload" in local.stderr
    assert "Traceback" not in local.stderr and not (tmp_path / "s").exists()
    failing = souls("https://cdn.example.com/ava.jpg")
    assert failing.returncode == 1, failing.stderr
    assert failing.stdout.startswith("ava  failed  ")

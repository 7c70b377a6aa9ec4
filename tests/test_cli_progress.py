"""The run's progress display: a live display that fits any width on a terminal, timestamped
plain lines otherwise; waits said as what they are; rates of this run only."""

from __future__ import annotations

import io
import re
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from runner.cli import ProgressView
from runner.cli.progress import plain_line
from runner.engine import Progress
from runner.mock import MockOptions
from runner.mock.testing import INSTANT
from tests.cli_support import make_world
from tests.conftest import MockServerFactory

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def sample(**changes: object) -> Progress:
    """Half-way through a run of 10 jobs, 100 s in, nothing done before it began."""
    p = Progress(
        total=10, submitted=7, running=3, downloaded=4, failed=1, retries=2, throttled=1,
        concurrency_limit=3, started=0.0, now=100.0,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(p, name, value)
    return p


def screen(p: Progress, width: int, verbose: int = 0) -> list[str]:
    """What the live display shows for ``p`` at ``width`` columns."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    view = ProgressView(console=console, verbose=verbose, quiet=True)  # quiet: no plain lines
    view(p)
    console.print(view)
    return out.getvalue().rstrip("\n").splitlines()


@pytest.mark.parametrize("width", [60, 80, 100, 120, 200])
def test_every_width_from_60_has_bar_done_total_failed_elapsed_and_eta(width: int) -> None:
    """At 60 columns and more: a bar, 5/10, failures, elapsed and ETA on the first line, the
    detail on a second; nothing wraps."""
    first, second = screen(sample(), width)
    bar = re.match(r"━+─+ ", first)
    assert bar and len(bar.group()) > 10, first
    assert "5/10" in first and "1 failed" in first and "1:40" in first and "ETA 1:40" in first
    assert "retries 2" in second and "throttled 1" in second and "concurrency 3" in second
    assert len(first) <= width and len(second) <= width


def test_more_counters_only_where_they_fit() -> None:
    """In flight, submitted and the rate join the first line on a wide terminal only."""
    (narrow, _), (wide, _) = screen(sample(), 80), screen(sample(), 200)
    assert "in flight" not in narrow
    assert "in flight 3" in wide and "submitted 7" in wide and "3.0 jobs/min" in wide
    bar = re.match(r"[━─]+", wide)
    assert bar and len(bar.group()) >= 60, wide


def test_narrow_terminal_keeps_the_facts() -> None:
    """Under 60 columns the bar may go, never done/total or the ETA."""
    (first, *_) = screen(sample(), 40)
    assert "5/10" in first and "ETA 1:40" in first


def test_a_finished_run_has_no_eta() -> None:
    """When every job is done the line says so, without an ETA."""
    first, _ = screen(sample(downloaded=9, failed=1, running=0), 80)
    assert "10/10 done" in first and "ETA" not in first


def test_waits_are_shown_as_what_they_are() -> None:
    """A soul in training is not 'in flight'; a Retry-After pause and a budget stop say so."""
    p = sample(submitted=0, running=3, downloaded=0, failed=0, souls={"ava": 3})
    _, second = screen(p, 200)
    first, _ = screen(p, 200)
    assert "soul ava: model in training, 3 jobs waiting" in second
    assert "in flight 0" in first
    _, second = screen(sample(paused_for=42.0), 200)
    assert "paused 42s: the provider asked to wait (Retry-After)" in second
    _, second = screen(sample(stopped="budget reached", souls={}), 200)
    assert "budget reached: no new submissions; finishing 3 in flight" in second
    _, second = screen(sample(stopped="interrupted"), 200)
    assert "stopping: finishing the calls under way" in second


def test_rates_and_eta_count_only_this_run() -> None:
    """Jobs downloaded by earlier runs make no rate: a run with nothing to do shows none."""
    idle = Progress(total=500, downloaded=500, done_before=500, started=0.0, now=0.2)
    assert idle.rate == 0 and idle.eta is None
    assert "jobs/" not in plain_line(idle)
    resumed = Progress(total=100, downloaded=60, done_before=50, started=0.0, now=10.0)
    assert resumed.rate == 1.0 and resumed.eta == 40.0


def test_plain_lines_have_timestamps_and_come_every_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Off a terminal: a timestamped line at once, then one per interval, and a final one."""
    moments = iter([0.0, 10.0, 31.0, 40.0])
    console = Console(file=io.StringIO(), force_terminal=False)
    wall = datetime(2024, 5, 1, 3, 4, 5)
    with ProgressView(
        console=console, every=30, monotonic=lambda: next(moments), wall=lambda: wall
    ) as view:
        view(sample(downloaded=0, failed=0))
        view(sample(downloaded=1, failed=0))  # 10 s after the first: no line
        view(sample(downloaded=2, failed=0))  # 31 s: a line
        view(sample())  # 40 s: none, but the final line repeats it
    lines = capsys.readouterr().err.splitlines()
    assert [line[:20] for line in lines] == ["2024-05-01 03:04:05 "] * 3
    assert [line.split()[2] for line in lines] == ["0/10", "2/10", "5/10"]
    assert "in flight 3, submitted 7, elapsed 1:40" in lines[0]


def test_plain_lines_add_the_detail_at_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    """-v adds retries, throttling and concurrency to the plain lines; waits are always said."""
    assert "retries" not in plain_line(sample())
    assert plain_line(sample(), verbose=1).endswith("; retries 2; throttled 1; concurrency 3")
    assert "paused 5s" in plain_line(sample(paused_for=5.0))


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """-q: no progress at all."""
    with ProgressView(console=Console(file=io.StringIO()), quiet=True) as view:
        view(sample())
    assert capsys.readouterr().err == ""


# --- through the command ------------------------------------------------------------------


def test_run_logs_and_progress_lines_carry_timestamps(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """Off a terminal every progress and -v log line starts with a timestamp (cron logs); the
    summary gives the elapsed time and the credits of this run and of the manifest."""
    w = make_world(tmp_path, mock_server_factory(INSTANT))
    done = w.invoke("-v", "run", str(w.manifest))
    assert done.exit_code == 0, done.output
    lines = done.stderr.splitlines()
    assert any(" INFO runner.engine.stages: " in line for line in lines)
    assert all(re.match(STAMP, line) for line in lines), lines
    summary = r"^elapsed \d+s; ~20 credits estimated this run, ~20 for this manifest in all$"
    assert re.search(summary, done.stdout, re.M), done.stdout
    again = w.invoke("run", str(w.manifest), "--progress-every", "0")
    assert "jobs/s" not in again.stderr and "jobs/min" not in again.stderr  # nothing this run


def test_run_says_when_jobs_wait_for_a_soul(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """While a soul trains, the progress lines name it instead of counting jobs in flight."""
    server = mock_server_factory(MockOptions(soul_training_seconds=1.5, seed=9))
    w = make_world(tmp_path, server)
    w.manifest.write_text(
        "version: 1\n"
        "limits: {requests_per_second: 100, poll_initial: 0.05, poll_max: 0.1}\n"
        "souls: {ava: {name: ava_v1, images: [https://cdn.example.com/a.jpg]}}\n"
        "campaigns:\n"
        "  - {name: c, soul: ava, prompt: 'hi {n}', type: text-to-video, matrix: {n: [1, 2]}}\n"
    )
    done = w.invoke("run", str(w.manifest), "--progress-every", "0")
    assert done.exit_code == 0, done.output
    waiting = [line for line in done.stderr.splitlines() if "soul ava: model in training" in line]
    assert waiting and all("in flight 0," in line for line in waiting), done.stderr


def test_souls_command_says_it_is_training(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """`runner souls` is not silent while training: a timestamped line when it starts and
    when it is done."""
    w = make_world(tmp_path, mock_server_factory(MockOptions(soul_training_seconds=0.2, seed=8)))
    w.manifest.write_text(
        "version: 1\nlimits: {requests_per_second: 100, poll_initial: 0.05, poll_max: 0.1}\n"
        "souls: {ava: {name: ava_v1, images: [https://cdn.example.com/a.jpg]}}\n"
        "campaigns: [{name: c, soul: ava, prompt: hi, type: text-to-video}]\n"
    )
    done = w.invoke("souls", str(w.manifest))
    assert done.exit_code == 0, done.output
    first, last = done.stderr.splitlines()
    assert re.match(STAMP + "training the soul models that are not ready yet", first)
    assert re.match(STAMP + r"done after 0:0\d", last)
    assert done.stdout.startswith("ava  ready  ")

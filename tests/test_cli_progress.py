"""The run's progress display: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from runner.cli import ProgressView
from runner.engine import Progress


def sample() -> Progress:
    return Progress(
        total=10, submitted=7, running=3, downloaded=4, failed=1, retries=2, throttled=1,
        concurrency_limit=3, paused_for=1.5,
    )


def test_terminal_shows_a_live_bar_with_every_count() -> None:
    """On a terminal the bar shows done/total and submitted, in flight, failed, pauses."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with ProgressView(quiet=False, console=console) as view:
        view(sample())
    text = out.getvalue()
    assert "5/10" in text
    for part in ("submitted 7", "in flight 3", "downloaded 4", "failed 1", "retries 2",
                 "throttled 1", "concurrency 3", "paused 1.5s"):
        assert part in text


def test_plain_output_prints_lines_and_a_final_one(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal: the first update prints a line, and leaving prints the final state."""
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressView(quiet=False, console=console) as view:
        view(Progress(total=10))
        view(sample())  # within 5 s of the first line: not printed
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("0/10 done: submitted 0")
    assert lines[-1].startswith("5/10 done: submitted 7, in flight 3")
    assert len(lines) == 2


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """-q: no progress at all."""
    with ProgressView(quiet=True, console=Console(file=io.StringIO())) as view:
        view(sample())
    assert capsys.readouterr().err == ""

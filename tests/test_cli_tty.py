"""`runner run` on a real terminal (a tmux pane at 80 and 120 columns): the live display has
a bar, done/total and an ETA, and -v log lines print above it, never through it.

Each test starts its own tmux server (its own socket), polls `capture-pane` until what it
waits for is on screen or a deadline passes, and kills the server at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.ledger import default_ledger_url, open_ledger
from runner.mock import MockOptions
from tests.cli_support import World, make_world, runner_env
from tests.conftest import MockServerFactory

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

JOBS = 8  # the test manifest with 6 subjects: 6 walk jobs and 2 spin jobs
BAR = re.compile(r"^[━─]{10,} ")


class Pane:
    """One tmux pane of a given size running one command; the pane stays after it exits."""

    def __init__(self, width: int, height: int = 24) -> None:
        self.socket = f"runner-test-{uuid.uuid4().hex[:12]}"
        self.width, self.height = width, height

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", os.devnull, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=True,
        )
        return done.stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        # `exec cat` keeps the pane (and what it shows) after the command ends.
        shell = f"{shlex.join(command)}; echo \"[exit $?]\"; exec cat"
        self.tmux(
            "new-session", "-d", "-s", "t", "-x", str(self.width), "-y", str(self.height),
            shell, env={**os.environ, **env, "TERM": "xterm-256color"},
        )  # fmt: skip

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def history(self) -> str:
        """Everything the pane printed, scrollback included."""
        return self.tmux("capture-pane", "-p", "-S", "-", "-t", "t")

    def wait_for(self, found: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        """Poll the screen until ``found(screen)``; the screen it was found on."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if found(text):
                return text
            assert time.monotonic() < deadline, f"no {what} on screen within {timeout}s:\n{text}"
            time.sleep(0.02)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def pane_factory() -> Iterator[Callable[[int], Pane]]:
    panes: list[Pane] = []

    def make(width: int) -> Pane:
        pane = Pane(width)
        panes.append(pane)
        return pane

    yield make
    for pane in panes:
        pane.kill()


@pytest.fixture
def world(tmp_path: Path, mock_server_factory: MockServerFactory) -> World:
    """Generations of 0.4-0.8 s, two at a time: the run lasts a few seconds."""
    server = mock_server_factory(MockOptions(latency_min=0.4, latency_max=0.8, seed=21))
    w = make_world(tmp_path, server, subjects=6)
    w.manifest.write_text(w.manifest.read_text().replace("concurrency: 4", "concurrency: 2"))
    return w


def run_command(w: World, *extra: str) -> list[str]:
    return [sys.executable, "-m", "runner", "run", str(w.manifest), "--state", str(w.state), *extra]


def exited(text: str) -> bool:
    return "[exit " in text


@pytest.mark.parametrize("width", [80, 120])
def test_live_display_has_bar_done_total_and_eta(
    world: World, pane_factory: Callable[[int], Pane], width: int
) -> None:
    """At 80 and 120 columns the screen shows a bar, done/total and an ETA while the run goes;
    at 120 there is room for the jobs in flight too."""
    pane = pane_factory(width)
    pane.start(run_command(world), runner_env(world.server))

    def live(text: str) -> bool:
        return any(
            BAR.match(line) and re.search(rf" [1-7]/{JOBS} .*ETA \d+:\d\d", line)
            for line in text.splitlines()
        )

    screen = pane.wait_for(live, "bar with done/total and an ETA")
    (line,) = [line for line in screen.splitlines() if BAR.match(line)]
    assert len(line.rstrip()) <= width
    assert ("in flight" in line) == (width >= 120), line
    final = pane.wait_for(exited, "end of the run")
    assert "[exit 0]" in final
    assert f"{JOBS}/{JOBS} done" in final


def test_verbose_log_lines_print_above_the_live_display(
    world: World, pane_factory: Callable[[int], Pane]
) -> None:
    """With -v on a terminal, every status change is logged whole, above the display: the
    scrollback holds each log record once and the bar once (its final state), never a line
    that mixes the two."""
    pane = pane_factory(80)
    pane.start(run_command(world, "-v"), runner_env(world.server))
    assert "[exit 0]" in pane.wait_for(exited, "end of the run")
    lines = pane.history().splitlines()
    logged = [line for line in lines if re.search(r"\bINFO\s+runner\.engine\.stages: ", line)]
    with open_ledger(default_ledger_url(world.state), readonly=True) as ledger:
        changes = sum(
            e.from_status is not None for row in ledger.jobs() for e in ledger.events(row.key)
        )
    assert len(logged) == changes > 3 * JOBS
    bars = [line for line in lines if BAR.match(line)]
    assert len(bars) == 1 and f"{JOBS}/{JOBS} done" in bars[0], bars
    for line in lines:
        assert not ("INFO" in line and ("━" in line or " done · " in line)), line

"""What the CLI tests of papercuts, JSON documents, summaries and progress share: a small
manifest with two tagged campaigns, the environment that points `runner` at a mock server on
loopback, and ways to call the CLI (in-process through CliRunner, or as a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from runner.cli import cli
from runner.mock.server import MockServerThread

MANIFEST = """\
version: 1
limits: {{concurrency: 4, requests_per_second: 100, poll_initial: 0.02, poll_max: 0.1}}
budget:
  prices: [{{match: {{}}, credits_per_second: 2}}]
defaults: {{type: text-to-video, duration: 2}}
campaigns:
  - name: walk
    tags: [nightly]
    prompt: "{{subject}} walking"
    matrix: {{subject: {subjects}}}
  - name: spin
    tags: [weekly]
    prompt: "spin of the {{thing}}"
    matrix: {{thing: [shoe, bag]}}
"""
SUBJECTS = ["a chef", "a dancer", "a cat", "a robot", "a horse", "a pilot", "a nurse", "a dog"]


def manifest_text(subjects: int = 3) -> str:
    """The test manifest: ``subjects`` jobs in `walk` (tag nightly), 2 in `spin` (weekly);
    every job costs 4 credits."""
    return MANIFEST.format(subjects="[" + ", ".join(SUBJECTS[:subjects]) + "]")


def runner_env(server: MockServerThread, **extra: str) -> dict[str, str]:
    """Environment variables that point `runner` at the mock, with tiny retry backoff."""
    return {
        "HIGGSFIELD_BASE_URL": server.seed_base_url,
        "HIGGSFIELD_API_KEY": "test-key",
        "RUNNER_BACKOFF": "0.01,0.2",
        **extra,
    }


@dataclass
class World:
    """A manifest file, a state directory and a mock server to run against."""

    tmp: Path
    server: MockServerThread
    manifest: Path
    state: Path

    @property
    def env(self) -> dict[str, str]:
        return runner_env(self.server)

    def invoke(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        """`runner ARGS --state STATE` in-process."""
        return CliRunner().invoke(
            cli, [*args, "--state", str(self.state)], env={**self.env, **(env or {})}
        )

    def process(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """`python -m runner ARGS --state STATE` as a real process (stdout/stderr piped)."""
        return subprocess.Popen(
            [sys.executable, "-m", "runner", *args, "--state", str(self.state)],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )


def make_world(tmp: Path, server: MockServerThread, subjects: int = 3) -> World:
    manifest = tmp / "m.yaml"
    manifest.write_text(manifest_text(subjects))
    return World(tmp, server, manifest, tmp / "state")


def wait_until(condition: Any, *, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)

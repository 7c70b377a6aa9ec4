"""``runner mock-server`` as a user runs it: a real process on a free loopback port."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from runner.cli import cli

RUNNER = Path(sys.executable).with_name("runner")
STARTUP_TIMEOUT = 30.0
URL_LINE = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))\s*$")


def read_lines(stream: object, into: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        into.put(line)


@pytest.fixture
def mock_process() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``runner mock-server --port 0`` started; yields the process and its first stdout lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIGGSFIELD", "HF_"))}
    proc = subprocess.Popen(
        [str(RUNNER), "mock-server", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        first = [lines.get(timeout=STARTUP_TIMEOUT) for _ in range(3)]
    except queue.Empty:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"mock-server printed no URL; stderr:\n{err}")
    yield proc, first
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_mock_server_prints_url_and_serves_both_dialects(
    mock_process: tuple[subprocess.Popen[str], list[str]],
) -> None:
    """It prints the URL of the port it bound; the right key gets an id, a wrong key 401;
    SIGTERM stops it cleanly (exit 0)."""
    proc, lines = mock_process
    match = URL_LINE.search(lines[0])
    assert match, lines
    origin, port = match[1], int(match[2])
    assert port != 0
    assert lines[1].split()[-1] == f"{origin}/api/v1"
    assert lines[2].split()[-1] == origin
    with httpx.Client(base_url=origin, timeout=10) as client:
        ok = client.post(
            "/api/v1/generate",
            json={"type": "text-to-video", "prompt": "p"},
            headers={"Authorization": "Bearer test-key", "Idempotency-Key": "cli-1"},
        )
        assert ok.status_code == 200 and ok.json()["generation_id"]
        wrong = client.post(
            "/api/v1/generate", json={"prompt": "p"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        platform = client.post(
            "/higgsfield-ai/dop/standard",
            json={"prompt": "p"},
            headers={"Authorization": "Key test-id:test-secret"},
        )
        assert platform.status_code == 200 and platform.json()["request_id"]
        assert client.post("/higgsfield-ai/dop/standard", json={"prompt": "p"}).status_code == 401
        assert client.get("/_mock/stats").json()["generations_created"] == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_mock_server_sigint_is_a_clean_stop(
    mock_process: tuple[subprocess.Popen[str], list[str]],
) -> None:
    """Ctrl-C is how a server is stopped: exit 0, no traceback."""
    proc, _ = mock_process
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize(
    "args",
    [
        ["--fail-rate", "1.5"],
        ["--retry-after-mode", "sometimes"],
        ["--fail-rate", "0.7", "--nsfw-rate", "0.7"],
        ["--port", "-1"],
        ["--queue-limit", "4"],
        ["--glitch", "teapot"],
        ["--glitch-rate", "2"],
        ["--result-ttl", "0"],
    ],
)
def test_mock_server_bad_options_exit_2(args: list[str]) -> None:
    """Impossible options are usage errors (exit 2), before anything listens."""
    result = CliRunner().invoke(cli, ["mock-server", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_mock_server_port_in_use_is_a_usage_error() -> None:
    """A port that cannot be bound is a clear error, not a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["mock-server", "--port", str(port)])
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1" in result.output


def test_mock_server_flags_reach_the_mock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The account queue, result expiry, glitch and soul-drop flags become MockOptions; the
    --glitch choices are exactly the mock's glitch kinds."""
    import runner.mock.server
    from runner.mock.options import GLITCH_KINDS, MockOptions

    seen: list[MockOptions] = []
    monkeypatch.setattr(
        runner.mock.server, "serve", lambda app, sock, **_: seen.append(app.state.mock.options)
    )
    before = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(
            cli,
            [
                "mock-server",
                "--port",
                "0",
                "--concurrency-limit",
                "2",
                "--queue-limit",
                "6",
                "--result-ttl",
                "60",
                "--glitch-rate",
                "0.5",
                "--glitch",
                "html",
                "--glitch",
                "redirect",
                "--drop-soul-rate",
                "0.25",
            ],
        )
    finally:
        signal.signal(signal.SIGTERM, before)
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert (options.concurrency_limit, options.queue_limit, options.result_ttl) == (2, 6, 60)
    assert (options.glitch_rate, options.glitches) == (0.5, ("html", "redirect"))
    assert options.drop_soul_answer_rate == 0.25
    (glitch,) = [p for p in cli.commands["mock-server"].params if p.name == "glitches"]
    assert isinstance(glitch.type, click.Choice)
    assert tuple(glitch.type.choices) == GLITCH_KINDS

"""`make demo`: the runner against the built-in mock API, with a few faults injected.

Starts `runner mock-server` on a free loopback port, runs `manifests/demo.yaml` through the
real CLI (state in `state/demo`, fresh each time), stops the mock, and prints where the videos
are. The mock drops some connections, answers some calls 429/5xx and cuts some video bodies
short, so the progress line shows retries; every job still ends downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "state" / "demo"
MANIFEST = ROOT / "manifests" / "demo.yaml"
FAULTS = [
    "--latency", "1.0",
    "--rate-5xx", "0.05",
    "--rate-429", "0.05",
    "--retry-after", "1",
    "--drop-rate", "0.08",
    "--truncate-rate", "0.15",
]  # fmt: skip


def runner(*args: str, env: dict[str, str] | None = None) -> int:
    return subprocess.call([sys.executable, "-m", "runner", *args], env=env, cwd=ROOT)


def main() -> int:
    shutil.rmtree(STATE, ignore_errors=True)
    mock = subprocess.Popen(
        [sys.executable, "-m", "runner", "mock-server", "--port", "0", *FAULTS],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert mock.stdout is not None
        origin = mock.stdout.readline().split()[-1]
        print(f"demo: mock Higgsfield API on {origin} (with injected faults)", flush=True)
        env = {
            **os.environ,
            "HIGGSFIELD_BASE_URL": f"{origin}/api/v1",
            "HIGGSFIELD_API_KEY": "test-key",
            "RUNNER_BACKOFF": "0.2,2",
        }
        code = runner("run", str(MANIFEST.relative_to(ROOT)), "--state", str(STATE), env=env)
        with urllib.request.urlopen(f"{origin}/_mock/stats") as answer:
            stats = json.load(answer)
    finally:
        mock.terminate()
        mock.wait(10)
    print(
        "demo: the mock injected {dropped_connections} dropped connections, {throttled} 429s, "
        "{server_errors} 5xx and {truncated_videos} truncated videos; it created "
        "{generations_created} generations ({idempotent_replays} idempotent replays, "
        "{duplicate_bodies} duplicates)".format(**stats)
    )
    runner("status", "--state", str(STATE))
    print(f"demo: videos are in {STATE / 'videos'}")
    print(f"demo: try `.venv/bin/runner show KEY --state {STATE.relative_to(ROOT)}` "
          f"with a key from `.venv/bin/runner jobs --state {STATE.relative_to(ROOT)}`")
    return code


if __name__ == "__main__":
    sys.exit(main())

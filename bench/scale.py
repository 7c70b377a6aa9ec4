"""Data scale (issue 11): the CLI on a 100,000-job manifest and ledger, wall time and peak RSS.

Each step is a real ``runner`` process (``python -m runner``) on one state directory, timed
from spawn to exit, its peak RSS from ``os.wait4``. Steps, in order:

- validate: ``runner validate`` (load + expand).
- plan:     ``runner plan --json`` before anything is recorded (every job new).
- record:   ``runner run --limit 0``: the first run records the 100,000 jobs, sends nothing.
- (setup, not timed: every job marked downloaded in the ledger, a 0-byte file for each)
- no-op run: ``runner run`` again: everything is downloaded, so it re-checks and stops.
- plan (done): ``runner plan --json`` against that ledger.
- export:   ``runner export --format jsonl``.
- report:   ``runner report`` (HTML).

Goals are the issue's, on its 2-core machine; the ratio is measured / goal (≤ 1 holds).
Also, to put the numbers in context on another machine, the floor of the work: one
``python -c "import runner.cli"`` start-up, measured in the same run.

    .venv/bin/python bench/scale.py [--jobs N] [--repeat 3]    (also the end of `make bench`)
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from runner.mock.testing import MOCK_ENV

MANIFEST = """
version: 1
limits: {{max_jobs: {jobs}}}
defaults: {{type: text-to-video, duration: 5, resolution: 1080p}}
budget:
  prices: [{{match: {{resolution: 1080p}}, credits_per_second: 5}}, {{match: {{}}, credits: 10}}]
output:
  filename: "{{campaign}}/{{a}}-{{b}}-{{seed}}.mp4"
campaigns:
  - name: scale
    prompt: "{{a}} meets {{b}}"
    matrix:
      a: {a}
      b: {b}
    seeds: {seeds}
"""

#: (step, goal seconds, goal peak MB or None) — the issue's goal column.
GOALS: dict[str, tuple[float, float | None]] = {
    "validate": (1.5, 200.0),
    "plan": (1.5, 200.0),
    "record": (3.0, None),
    "no-op run": (3.0, None),
    "plan (done)": (1.5, 200.0),
    "export jsonl": (3.0, None),
    "report": (3.0, None),
}


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float


def write_manifest(tmp: Path, jobs: int) -> Path:
    """A matrix × seeds manifest of exactly ``jobs`` jobs (``jobs`` a multiple of 1,000)."""
    if jobs % 1000:
        raise SystemExit("--jobs must be a multiple of 1000")
    a = [f"a{i}" for i in range(100)]
    b = [f"b{i}" for i in range(jobs // 1000)]
    seeds = list(range(10))
    path = tmp / "scale.yaml"
    path.write_text(MANIFEST.format(jobs=jobs, a=a, b=b, seeds=seeds))
    return path


def measure(args: list[str], env: dict[str, str]) -> Measured:
    """Run ``python -m runner ARGS`` (stdout discarded); wall seconds and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"runner {' '.join(args)} exited {proc.returncode}: {err.decode()}")
    return Measured(seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def mark_downloaded(state: Path) -> int:
    """Every job downloaded, with a 0-byte file where the ledger says (bench setup, direct SQL)."""
    out = (state / "videos").resolve()  # the default output.dir
    conn = sqlite3.connect(state / "ledger.db")
    rows = conn.execute("SELECT key, path FROM jobs").fetchall()
    for _, relative in rows:
        file = out / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch()
    with conn:
        conn.execute(
            "UPDATE jobs SET status = 'downloaded', bytes = 0, generation_id = 'g-' || key, "
            "video_url = 'http://127.0.0.1:9/' || key || '.mp4', attempts = 1, "
            "location = ? || '/' || path",
            [str(out)],
        )
    conn.close()
    return len(rows)


def startup(env: dict[str, str]) -> Measured:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "import runner.cli"], env=env)
    _, _, usage = os.wait4(proc.pid, 0)
    return Measured(time.perf_counter() - start, usage.ru_maxrss / 1024)


def run(jobs: int) -> dict[str, Measured]:
    results: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        manifest = str(write_manifest(tmp, jobs))
        state = tmp / "state"
        env = {
            **os.environ,
            **MOCK_ENV,
            "HIGGSFIELD_BASE_URL": "http://127.0.0.1:9",  # never called: nothing is sent
            "RUNNER_STATE": str(state),
        }
        env.pop("RUNNER_LEDGER", None)
        results["start-up"] = startup(env)
        results["validate"] = measure(["validate", manifest], env)
        results["plan"] = measure(["plan", "--json", manifest], env)
        results["record"] = measure(["-q", "run", "--limit", "0", manifest], env)
        marked = mark_downloaded(state)
        assert marked == jobs, f"{marked} jobs recorded, expected {jobs}"
        results["no-op run"] = measure(["-q", "run", manifest], env)
        results["plan (done)"] = measure(["plan", "--json", manifest], env)
        results["export jsonl"] = measure(["export", "--format", "jsonl"], env)
        results["report"] = measure(["-q", "report", "-o", str(tmp / "report.html")], env)
    return results


def table(results: dict[str, Measured], jobs: int, runs: int) -> str:
    lines = [
        f"scale: {jobs:,} jobs, median of {runs} run{'s' if runs != 1 else ''} "
        f"({os.cpu_count()} cores)",
        f"{'step':14} {'seconds':>8} {'goal':>6} {'ratio':>6} {'peak MB':>8} {'goal':>6}",
    ]
    for step, m in results.items():
        goal_s, goal_mb = GOALS.get(step, (None, None))
        ratio = f"{m.seconds / goal_s:6.2f}" if goal_s else f"{'':6}"
        gs = f"{goal_s:6.1f}" if goal_s else f"{'':6}"
        gm = f"{goal_mb:6.0f}" if goal_mb else f"{'':6}"
        lines.append(f"{step:14} {m.seconds:8.2f} {gs} {ratio} {m.peak_mb:8.0f} {gm}")
    return "\n".join(lines)


def median(runs: list[dict[str, Measured]]) -> dict[str, Measured]:
    """Each step's median time and median peak over the runs."""
    return {
        step: Measured(
            statistics.median(r[step].seconds for r in runs),
            statistics.median(r[step].peak_mb for r in runs),
        )
        for step in runs[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is shown")
    args = parser.parse_args()
    runs = [run(args.jobs) for _ in range(args.repeat)]
    print(table(median(runs), args.jobs, len(runs)))


if __name__ == "__main__":
    main()

"""`runner run A B`: several manifests in one process, through the real console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions
from tests.test_cli_run import Factory, runner_env, write_manifest


def test_two_manifests_run_in_one_process(tmp_path: Path, mock_server_factory: Factory) -> None:
    """Both manifests' jobs are downloaded by one `run`, each summarized; one lock, exit 0."""
    server = mock_server_factory(MockOptions(latency_min=0.05, latency_max=0.1, seed=31))
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    jobs = write_manifest(first, subjects=2)
    second.write_text(first.read_text().replace("name: crash", "name: other"))
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(first), str(second), "--state", str(state)],
        env=runner_env(server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{first.resolve()}: {jobs} jobs: {jobs} downloaded" in done.stdout
    assert f"{second.resolve()}: {jobs} jobs: {jobs} downloaded" in done.stdout
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = ledger.jobs()
    assert len(rows) == 2 * jobs and {r.status for r in rows} == {JobStatus.DOWNLOADED}
    assert server.state.stats()["generations_created"] == 2 * jobs

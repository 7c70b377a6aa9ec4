"""`--ledger URL` / `RUNNER_LEDGER` (SPEC v2 §2, §5): every command works against the ledger it
names — a SQLite file elsewhere, or PostgreSQL — through the real CLI and the mock on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runner.cli import cli
from runner.mock import MockOptions
from tests.test_cli_run import Factory, write_manifest


def run_cli(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_every_command_uses_the_ledger_it_is_given(
    kind: str, tmp_path: Path, mock_server_factory: Factory, request: pytest.FixtureRequest
) -> None:
    """run, status, jobs, show, export, plan and report read and write the ledger named by
    --ledger (or RUNNER_LEDGER); nothing is written to the state dir's own ledger."""
    url = (
        str(request.getfixturevalue("pg_url"))
        if kind == "postgresql"
        else str(tmp_path / "elsewhere" / "ledger.db")
    )
    server = mock_server_factory(MockOptions(latency_min=0.01, latency_max=0.02, seed=61))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    jobs = write_manifest(manifest, subjects=1, places=2)
    env = {**os.environ, "HIGGSFIELD_BASE_URL": server.seed_base_url,
           "HIGGSFIELD_API_KEY": "test-key", "RUNNER_BACKOFF": "0.01,0.1"}  # fmt: skip
    common = ["--state", str(state), "--ledger", url]
    done = run_cli("run", str(manifest), *common, env=env)
    assert done.exit_code == 0, done.output
    assert not (state / "ledger.db").exists()
    status = json.loads(run_cli("status", "--json", *common, env=env).stdout)
    assert status["totals"] == {"downloaded": jobs}
    with_env = json.loads(
        run_cli("jobs", "--json", "--state", str(state), env={**env, "RUNNER_LEDGER": url}).stdout
    )
    assert len(with_env) == jobs and all(j["location"] for j in with_env)
    shown = run_cli("show", with_env[0]["key"], *common, env=env)
    assert shown.exit_code == 0 and with_env[0]["location"] in shown.stdout
    assert len(run_cli("export", "--format", "jsonl", *common, env=env).stdout.splitlines()) == jobs
    plan = json.loads(run_cli("plan", str(manifest), "--json", *common, env=env).stdout)
    assert plan["summary"]["done"] == jobs
    report = run_cli("report", "-o", str(tmp_path / "r.html"), *common, env=env)
    assert report.exit_code == 0 and f"{jobs} jobs" in report.output
    assert not (state / "ledger.db").exists()

"""`runner cancel` over loopback: queued generations are cancelled (refunded at the mock),
running ones are named; the seed dialect cannot cancel."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from runner.cli import cli
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions
from runner.mock.testing import FakeClock
from tests.test_cli_run import Factory

MANIFEST = """
version: 1
provider: {{name: {provider}}}
limits: {{concurrency: 8, requests_per_second: 100}}
defaults: {{type: text-to-video, duration: 4}}
campaigns:
  - name: teaser
    prompt: "shot {{n}}"
    matrix:
      n: [1, 2, 3]
"""


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "HIGGSFIELD_BASE_URL": url, "HF_KEY": "test-id:test-secret",
            "HIGGSFIELD_API_KEY": "test-key", "RUNNER_BACKOFF": "0.01,0.1"}  # fmt: skip


def test_cancel_cancels_queued_generations_and_names_running_ones(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """With one generation running and two queued on the account, `cancel` refunds the two
    (counted by the mock), marks them failed `cancelled`, names the running one, exits 1."""
    clock = FakeClock()
    options = MockOptions(
        latency_min=100, latency_max=100, concurrency_limit=1, queue_limit=5, seed=41
    )
    server = mock_server_factory(options, clock=clock)
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(MANIFEST.format(provider="higgsfield"))
    env = env_for(server.platform_base_url)
    runner = CliRunner()
    args = ["run", str(manifest), "--submit-only", "--state", str(state)]
    sent = runner.invoke(cli, args, env=env)
    assert sent.exit_code == 0, sent.output
    clock.advance(30)  # the first is past its own queue time and runs; two wait for the slot
    assert (server.state.stats()["running"], server.state.stats()["queued"]) == (1, 2)
    done = runner.invoke(cli, ["cancel", str(manifest), "--json", "--state", str(state)], env=env)
    assert done.exit_code == 1, done.output
    doc = json.loads(done.stdout)
    assert len(doc["cancelled"]) == 2 and len(doc["not_cancelled"]) == 1
    assert "already started" in next(iter(doc["not_cancelled"].values()))
    assert server.state.stats()["refunded"] == 2
    with open_ledger(default_ledger_url(state)) as ledger:
        rows = {r.key: r for r in ledger.jobs()}
    for key in doc["cancelled"]:
        assert rows[key].status is JobStatus.FAILED and rows[key].error == "cancelled"
    (running,) = doc["not_cancelled"]
    assert rows[running].status in (JobStatus.QUEUED, JobStatus.RUNNING)


def test_cancel_on_the_seed_dialect_is_a_usage_error(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """The seed API has no cancel: exit 2, saying which provider can."""
    server = mock_server_factory(MockOptions(seed=42))
    manifest, state = tmp_path / "m.yaml", tmp_path / "state"
    manifest.write_text(MANIFEST.format(provider="higgsfieldapi"))
    done = CliRunner().invoke(
        cli, ["cancel", str(manifest), "--state", str(state)], env=env_for(server.seed_base_url)
    )
    assert done.exit_code == 2
    assert "cannot cancel" in done.output and "higgsfield" in done.output
    assert "Traceback" not in done.output

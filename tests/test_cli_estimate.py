"""`runner plan --estimate`: the provider prices each distinct shape once (counted by the mock)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from runner.cli import cli
from runner.mock import MockOptions
from tests.test_cli_run import Factory

MANIFEST = """
version: 1
provider: {name: higgsfield}
limits: {max_jobs: 2000}
budget:
  prices:
    - {match: {}, credits: 999}
defaults: {type: text-to-video, duration: 5, resolution: 720p}
campaigns:
  - name: teaser
    prompt: "shot {n} in {look}"
    matrix:
      n: [RANGE]
      look: [a, b, c, d, e]
      resolution: [480p, 720p, 1080p]
    variants: 2
"""  # 3 resolutions: 3 priced shapes; prompts and seeds differ but do not change a price


def test_plan_estimate_asks_once_per_priced_shape(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """1,200 jobs in 3 priced shapes: 3 estimate calls, and the provider's figures replace
    budget.prices (0.3 credits a second at 720p, half at 480p, twice at 1080p)."""
    server = mock_server_factory(MockOptions(seed=51))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST.replace("RANGE", ", ".join(str(i) for i in range(40))))
    env = {**os.environ, "HIGGSFIELD_BASE_URL": server.platform_base_url,
           "HF_KEY": "test-id:test-secret"}  # fmt: skip
    args = ["plan", str(manifest), "--estimate", "--json", "--state", str(tmp_path / "s")]
    done = CliRunner().invoke(cli, args, env=env)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)["summary"]
    assert summary["total"] == 40 * 5 * 3 * 2
    assert server.state.stats()["estimates"] == 3
    per_resolution = 400 * 5 * (0.15 + 0.3 + 0.6)
    assert summary["estimated_credits"] == round(per_resolution, 6)
    assert summary["priced_by"] == "provider"


def test_plan_estimate_on_the_seed_dialect_is_a_usage_error(tmp_path: Path) -> None:
    """The seed API cannot price: exit 2 naming the provider that can."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        MANIFEST.replace("RANGE", "1").replace("name: higgsfield}", "name: higgsfieldapi}")
    )
    done = CliRunner().invoke(
        cli,
        ["plan", str(manifest), "--estimate", "--state", str(tmp_path / "s")],
        env={**os.environ, "HIGGSFIELD_API_KEY": "k"},
    )
    assert done.exit_code == 2 and "cannot estimate" in done.output


PRICED = """
version: 1
provider: {name: higgsfield}
budget:
  prices:
    - {match: {resolution: 1080p}, credits: 10}
    - {match: {resolution: 720p}, credits_per_second: 1}
defaults: {type: text-to-video, duration: 5}
campaigns:
  - name: teaser
    prompt: "shot"
    matrix:
      resolution: [480p, 720p, 1080p]
"""


def test_the_ledger_keeps_which_source_priced_each_job(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """Each job records the price rule that gave its credits, or that none did."""
    server = mock_server_factory(MockOptions(seed=52))
    manifest, state = tmp_path / "m.yaml", tmp_path / "s"
    manifest.write_text(PRICED)
    env = {**os.environ, "HIGGSFIELD_BASE_URL": server.platform_base_url,
           "HF_KEY": "test-id:test-secret"}  # fmt: skip
    runner = CliRunner()
    done = runner.invoke(
        cli, ["run", str(manifest), "--submit-only", "--state", str(state)], env=env
    )
    assert done.exit_code == 0, done.output
    jobs = json.loads(runner.invoke(cli, ["jobs", "--json", "--state", str(state)], env=env).stdout)
    by_resolution = {j["request"]["resolution"]: (j["credits"], j["priced_by"]) for j in jobs}
    assert by_resolution == {
        "480p": (0, "unpriced"),
        "720p": (5, "budget.prices[1]"),
        "1080p": (10, "budget.prices[0]"),
    }

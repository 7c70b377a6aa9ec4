"""The everyday papercuts of issue 13, one test each: help texts, closed pipes, plurals, the
hints that name real commands, what --limit leaves, retry by prefix, selections everywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import cli
from runner.cli.base import WORKFLOW
from runner.jobs import expand
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.manifest import load_manifest
from runner.mock import MockOptions
from runner.mock.testing import INSTANT
from tests.cli_support import World, make_world
from tests.conftest import MockServerFactory


@pytest.fixture
def world(tmp_path: Path, mock_server_factory: MockServerFactory) -> World:
    return make_world(tmp_path, mock_server_factory(INSTANT))


def failing_world(tmp_path: Path, mock_server_factory: MockServerFactory) -> World:
    """Every generation fails at the provider."""
    return make_world(tmp_path, mock_server_factory(MockOptions(fail_rate=1.0, seed=2)))


# --- help ---------------------------------------------------------------------------------


def test_help_lists_commands_in_workflow_order_with_whole_summaries() -> None:
    """`runner --help` at 80 columns: workflow order, one line each, nothing cut with '...'."""
    done = CliRunner().invoke(cli, ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert done.exit_code == 0
    section = done.output.split("Commands:\n")[1].split("\n\n")[0]
    lines = section.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == [n for n in WORKFLOW if n in cli.commands]  # type: ignore[attr-defined]
    assert len(names) == len(cli.commands)  # type: ignore[attr-defined]
    assert "..." not in section
    assert all(len(line) <= 80 and line.rstrip().endswith(".") for line in lines), lines
    assert "Examples:" in done.output and "_RUNNER_COMPLETE=bash_source" in done.output


@pytest.mark.parametrize("name", sorted(cli.commands))  # type: ignore[attr-defined]
def test_every_command_help_ends_with_an_example(name: str) -> None:
    """Each command's help ends with an Example(s) section that runs that command."""
    done = CliRunner().invoke(cli, [name, "--help"], terminal_width=80)
    assert done.exit_code == 0
    tail = done.output.rstrip().split("\n\n")[-1].splitlines()
    assert re.fullmatch(r"  Examples?:", tail[0]), tail
    assert any(line.lstrip().startswith(f"runner {name}") for line in tail[1:]), tail


# --- closed pipes -------------------------------------------------------------------------


@pytest.fixture
def big_ledger(tmp_path: Path) -> Path:
    """A state directory whose ledger holds 2,400 recorded jobs (far more than a pipe holds)."""
    manifest = tmp_path / "big.yaml"
    manifest.write_text(
        "version: 1\ncampaigns:\n  - name: big\n    type: text-to-video\n"
        "    prompt: '{a} {b}'\n    matrix:\n"
        f"      a: {list(range(60))}\n      b: {list(range(40))}\n"
    )
    state = tmp_path / "state"
    loaded = load_manifest(manifest)
    with open_ledger(default_ledger_url(state)) as ledger:
        ledger.record_plan(str(loaded.path), expand(loaded))
    return state


@pytest.mark.parametrize("command", [["jobs"], ["export"], ["export", "--format", "jsonl"]])
def test_a_closed_pipe_is_a_quiet_exit_0(big_ledger: Path, command: list[str]) -> None:
    """`runner jobs | head -1`: a real pipe closed after one line; exit 0 and no error text."""
    script = (
        f"{sys.executable} -m runner {' '.join(command)} --state {big_ledger} | head -1;"
        ' echo "status=${PIPESTATUS[0]}" >&2'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == "status=0\n"


# --- plurals, where it looked, -vv --------------------------------------------------------


def test_one_job_is_one_job_not_1_jobs(tmp_path: Path, world: World) -> None:
    """validate, run and report say '1 job', never '1 jobs'."""
    one = tmp_path / "one.yaml"
    one.write_text(
        "version: 1\nlimits: {poll_initial: 0.02, poll_max: 0.1, requests_per_second: 100}\n"
        "campaigns: [{name: solo, prompt: hi, type: text-to-video, duration: 2}]\n"
    )
    assert world.invoke("validate", str(one)).stdout == "ok: 1 job\n"
    done = world.invoke("run", str(one))
    assert done.exit_code == 0, done.output
    assert f"{one}: 1 job: 1 downloaded" in done.stdout
    report = world.invoke("report")
    assert "1 job, 1 video" in report.stdout
    # A count of one, not a rate such as "23.1 jobs/s" (which this run may well print).
    assert not re.search(r"(?<![\w.])1 jobs\b(?!/s)", done.output + report.output)


def test_status_names_where_it_looked(tmp_path: Path) -> None:
    """`status --state typo` names the ledger it looked for and where the directory came from."""
    runner = CliRunner()
    typo = tmp_path / "typo-dir"
    done = runner.invoke(cli, ["status", "--state", str(typo)])
    assert done.exit_code == 0
    assert done.stdout == (
        f"no ledger at {typo / 'ledger.db'} (state directory {typo} from --state); "
        "nothing has run there yet\n"
    )
    by_env = runner.invoke(cli, ["jobs"], env={"RUNNER_STATE": str(typo)})
    assert f"no ledger at {typo / 'ledger.db'}" in by_env.stderr
    assert "$RUNNER_STATE" in by_env.stderr


def test_vv_does_not_print_asyncio_selector_line(world: World) -> None:
    """-vv shows the runner's debug lines, not asyncio's 'Using selector: EpollSelector'."""
    proc = world.process("-vv", "run", str(world.manifest), "--only", "spin")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "DEBUG" in err or "INFO" in err
    assert "Using selector" not in err and "asyncio" not in err


# --- hints name real commands -------------------------------------------------------------


def test_limit_says_what_is_left_and_the_command_that_continues(world: World) -> None:
    """`--limit 1` of 3 selected jobs says 2 are left and how to send them, same flags."""
    done = world.invoke("run", str(world.manifest), "--tag", "nightly", "--limit", "1")
    assert done.exit_code == 0, done.output
    assert f"{world.manifest.resolve()}: 1 job: 1 downloaded" in done.stdout
    again = f"runner run {world.manifest} --tag nightly --limit 1 --state {world.state}"
    assert f"2 jobs not submitted yet (--limit 1): `{again}` continues" in done.stderr


def test_failed_hint_names_the_manifest(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """When jobs fail, the hint is a command to paste: `runner retry <the manifest>`."""
    w = failing_world(tmp_path, mock_server_factory)
    done = w.invoke("run", str(w.manifest), "--only", "spin")
    assert done.exit_code == 1
    assert "2 jobs failed" in done.stderr
    assert f"`runner retry {w.manifest} --state {w.state}` puts them back" in done.stderr
    assert "MANIFEST" not in done.stderr


def test_plan_after_every_submitted_job_failed(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """With nothing charged (every submitted job failed and was refunded), plan still works."""
    w = failing_world(tmp_path, mock_server_factory)
    w.invoke("run", str(w.manifest), "--only", "spin")
    done = w.invoke("plan", str(w.manifest), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["summary"]["charged_credits"] == 0


def test_retry_takes_key_prefixes_like_show(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """`retry --job PREFIX` puts that failed job back; an unknown or ambiguous one is exit 2."""
    w = failing_world(tmp_path, mock_server_factory)
    w.invoke("run", str(w.manifest), "--only", "spin")
    failed = json.loads(w.invoke("jobs", "--status", "failed", "--json").stdout)
    key = failed[0]["key"]
    done = w.invoke("retry", str(w.manifest), "--job", key[:6])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("1 failed job back to pending; ")
    with open_ledger(default_ledger_url(w.state), readonly=True) as ledger:
        assert ledger.get(key).status is JobStatus.PENDING  # type: ignore[union-attr]
    unknown = w.invoke("retry", str(w.manifest), "--job", "zzzz")
    assert unknown.exit_code == 2 and "names no job" in unknown.stderr
    ambiguous = w.invoke("retry", str(w.manifest), "--job", "")
    assert ambiguous.exit_code == 2


def test_retry_of_a_downloaded_job_says_it_is_not_failed(world: World) -> None:
    """Retrying a downloaded job is refused with its status (exit 2), not '0 failed jobs'."""
    assert world.invoke("run", str(world.manifest), "--only", "spin").exit_code == 0
    key = json.loads(world.invoke("jobs", "--status", "downloaded", "--json").stdout)[0]["key"]
    done = world.invoke("retry", str(world.manifest), "--job", key[:8])
    assert done.exit_code == 2
    assert f"job {key} is downloaded, not failed" in done.stderr
    assert "0 failed" not in done.output
    pending = json.loads(world.invoke("jobs", "--status", "pending", "--json").stdout)[0]["key"]
    done = world.invoke("retry", str(world.manifest), "--job", pending)
    assert done.exit_code == 2 and "has not been sent yet" in done.stderr
    nothing = world.invoke("retry", str(world.manifest))
    assert nothing.exit_code == 0
    assert nothing.stdout == f"no failed jobs to retry in {world.manifest}\n"


# --- selections and filters ---------------------------------------------------------------


def test_plan_status_report_export_take_selections(world: World) -> None:
    """--only/--campaign and --tag on plan, status, report and export; export --status too."""
    assert world.invoke("run", str(world.manifest), "--only", "spin").exit_code == 0
    m = str(world.manifest)
    plan = json.loads(world.invoke("plan", m, "--only", "walk", "--json").stdout)
    assert plan["summary"]["total"] == 3 and plan["summary"]["new"] == 3
    assert plan["summary"]["estimated_credits"] == 12
    assert {j["campaign"] for j in plan["jobs"]} == {"walk"}
    weekly = json.loads(world.invoke("plan", m, "--tag", "weekly", "--json").stdout)
    assert weekly["summary"]["done"] == 2 and weekly["summary"]["total"] == 2
    assert world.invoke("plan", m, "--only", "nope").exit_code == 2
    status = json.loads(world.invoke("status", "--tag", "nightly", "--json").stdout)
    assert status == {"campaigns": {"walk": {"pending": 3}}, "totals": {"pending": 3}}
    status = json.loads(world.invoke("status", m, "--only", "spin", "--json").stdout)
    assert status["totals"] == {"downloaded": 2}
    report = json.loads(world.invoke("report", "--campaign", "spin", "--json").stdout)
    assert (report["jobs"], report["videos"]) == (2, 2)
    report = json.loads(world.invoke("report", "--status", "pending", "--json").stdout)
    assert report["counts"] == {"pending": 3}
    export = json.loads(world.invoke("export", "--format", "json", "--campaign", "walk").stdout)
    assert [d["campaign"] for d in export] == ["walk"] * 3
    export = json.loads(
        world.invoke(
            "export", "--format", "json", "--status", "downloaded", "--tag", "weekly"
        ).stdout
    )
    assert len(export) == 2 and all(d["location"] for d in export)
    assert os.path.isfile(export[0]["location"])

"""`--json` on every command that prints a result: one JSON document on stdout, parsed here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from runner.cli import cli
from runner.mock.testing import INSTANT
from tests.cli_support import World, make_world
from tests.conftest import MockServerFactory

# Commands whose output is machine-readable already, or that print no result.
NO_JSON_FLAG = {"export", "schema", "mock-server"}


@pytest.fixture
def world(tmp_path: Path, mock_server_factory: MockServerFactory) -> World:
    return make_world(tmp_path, mock_server_factory(INSTANT))


def parse(world: World, *args: str, code: int = 0) -> Any:
    """Run a command with --json: its exit code, nothing but one document on stdout."""
    done = world.invoke(*args, "--json")
    assert done.exit_code == code, done.output
    return json.loads(done.stdout)


def test_every_command_that_prints_a_result_takes_json() -> None:
    """Every command but export (which has --format json), schema and mock-server has --json."""
    commands: dict[str, click.Command] = cli.commands  # type: ignore[attr-defined]
    for name, command in commands.items():
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert ("--json" in flags) == (name not in NO_JSON_FLAG), name


def test_json_documents_of_every_command(world: World) -> None:
    """validate, plan, run (and --dry-run), status, jobs, show, retry, souls, collect, report,
    export --format json: each prints one parseable document with what it found."""
    m = str(world.manifest)
    validated = parse(world, "validate", m)
    assert validated == {
        "ok": True,
        "manifests": [{"path": m, "ok": True, "jobs": 5, "errors": []}],
    }
    assert parse(world, "plan", m)["summary"]["new"] == 5
    dry = parse(world, "run", m, "--dry-run", "--limit", "2")
    assert [len(d["would_submit"]) for d in dry["manifests"]] == [2]
    ran = parse(world, "run", m, "--only", "spin")
    assert ran["exit_code"] == 0 and ran["downloaded"] == 2 and len(ran["videos"]) == 2
    assert parse(world, "status")["totals"] == {"pending": 3, "downloaded": 2}
    rows = parse(world, "jobs", "--status", "downloaded")
    assert len(rows) == 2
    shown = parse(world, "show", rows[0]["key"][:8])
    assert shown["job"]["key"] == rows[0]["key"]
    assert parse(world, "retry", m) == {"manifest": m, "retried": 0, "keys": None}
    assert parse(world, "souls", m) == {"souls": [], "failures": {}}
    collected = parse(world, "collect")
    assert collected["manifests"] == [] and collected["exit_code"] == 0
    report = parse(world, "report")
    assert report["jobs"] == 5 and report["videos"] == 2
    assert Path(report["path"]).is_file()
    exported = world.invoke("export", "--format", "json")
    assert [d["key"] for d in json.loads(exported.stdout)] == [
        d["key"] for d in parse(world, "jobs")
    ]


def test_validate_json_lists_each_problem_with_its_position(world: World, tmp_path: Path) -> None:
    """A bad manifest: exit 2, and the document names file, line, column and field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncampaigns:\n  - name: x\n    prompt: hi\n    duration: soon\n")
    doc = parse(world, "validate", str(world.manifest), str(bad), code=2)
    assert doc["ok"] is False
    good, wrong = doc["manifests"]
    assert good["ok"] is True and wrong["ok"] is False and wrong["jobs"] is None
    (error,) = wrong["errors"]
    assert (error["file"], error["line"], error["field"]) == (str(bad), 5, "campaigns[0].duration")
    assert error["text"].startswith(f"{bad}:5:")

"""What a command imports: reading the ledger does not start the engine, an HTTP client or
the manifest model; ``runner.app`` and ``runner.engine`` hand out their names on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_report_stream import record

# Heavy modules that only running (or loading a manifest) needs.
HEAVY = (
    "asyncio",
    "httpx",
    "pydantic",
    "rich.console",
    "runner.app.run",
    "runner.engine.executor",
    "runner.manifest",
)
# Runs the real CLI in this process, then prints which of HEAVY it imported.
PROBE = """
import json, runpy, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["runner", *json.loads(sys.argv[1])]
try:
    runpy.run_module("runner", run_name="__main__")
except SystemExit as end:
    assert not end.code, end.code
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def imported(args: list[str], cwd: Path, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``heavy`` a ``runner`` process running ``args`` imported (its stdout's last
    line)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(heavy)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},  # no FORCE_COLOR or TTY_COMPATIBLE
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["jobs"],
        ["export", "--format", "jsonl"],
        ["report", "-o", "report.html"],
    ],
)
def test_reading_the_ledger_imports_no_engine_http_client_or_manifest_model(
    tmp_path: Path, command: list[str]
) -> None:
    state, _manifest, _keys = record(tmp_path, "night.yaml", 3, 2)
    assert imported(["-q", *command, "--state", str(state)], tmp_path) == []
    if command[0] == "report":
        assert "night.yaml" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_a_report_of_one_manifest_loads_the_manifest_but_starts_no_engine(tmp_path: Path) -> None:
    state, manifest, _keys = record(tmp_path, "night.yaml", 3, 2)
    got = imported(["-q", "report", str(manifest), "-o", "r.html", "--state", str(state)], tmp_path)
    assert got == ["pydantic", "runner.manifest"]


def test_validate_imports_no_engine_http_client_or_ledger(tmp_path: Path) -> None:
    _state, manifest, _keys = record(tmp_path, "night.yaml", 3, 2)
    got = imported(["-q", "validate", str(manifest)], tmp_path)
    assert got == ["pydantic", "runner.manifest"]
    ledger = ("anyio", "runner.app.common", "runner.ledger", "runner.providers", "sqlite_utils")
    assert imported(["-q", "validate", str(manifest)], tmp_path, ledger) == []


def test_lazy_packages_keep_their_names_when_a_submodule_of_the_same_name_is_imported() -> None:
    probe = (
        "import sys, runner.app.run, runner.app.worker, runner.engine.clock\n"
        "from runner import app, engine\n"
        "from runner.app import run, RunOptions\n"
        "module = sys.modules['runner.app.run']\n"
        "assert callable(app.run) and app.run is run is module.run, app.run\n"
        "assert app.worker is sys.modules['runner.app.worker'].worker\n"
        "assert engine.SYSTEM_CLOCK is runner.engine.clock.SYSTEM_CLOCK\n"
        "assert RunOptions.__module__ == 'runner.settings'\n"
        "assert set(app.__all__) <= set(dir(app)) and set(engine.__all__) <= set(dir(engine))\n"
        "try:\n"
        "    engine.nothing\n"
        "except AttributeError as err:\n"
        "    assert 'nothing' in str(err)\n"
        "else:\n"
        "    raise AssertionError('engine.nothing')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_exported_name_resolves() -> None:
    from runner import app, engine, outputs

    for package in (app, engine, outputs):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)


def test_plan_without_a_ledger_imports_no_ledger_or_engine(tmp_path: Path) -> None:
    state, manifest, _keys = record(tmp_path, "night.yaml", 3, 2)
    ledger = ("anyio", "runner.app.common", "runner.ledger", "runner.providers", "sqlite_utils")
    fresh = ["-q", "plan", str(manifest), "--json", "--state", str(tmp_path / "fresh")]
    assert imported(fresh, tmp_path, ledger) == []
    # with a ledger, it is read
    recorded = ["-q", "plan", str(manifest), "--json", "--state", str(state)]
    assert "runner.ledger" in imported(recorded, tmp_path, ledger)


def test_the_ledger_file_plan_looks_for_is_the_ledger_s() -> None:
    from runner.app.manifests import LEDGER_FILE
    from runner.ledger import LEDGER_FILE as LEDGERS

    assert LEDGER_FILE == LEDGERS

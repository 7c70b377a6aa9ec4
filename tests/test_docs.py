"""The documents a newcomer is pointed at exist and say what works: the SPEC's copy, shell
completion, driving the runner by hand against the mock, the report's screenshot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHARED_SPEC = ROOT.parent / "shared" / "SPEC.md"


def test_readme_points_at_the_committed_spec() -> None:
    """README links docs/SPEC.md, which is in the repository (not only beside it)."""
    assert "(docs/SPEC.md)" in README and "../shared" not in README
    spec = (ROOT / "docs" / "SPEC.md").read_text(encoding="utf-8")
    assert spec.startswith("# runner — the contract")


@pytest.mark.skipif(not SHARED_SPEC.is_file(), reason="no shared SPEC beside the repository")
def test_the_spec_copy_is_current() -> None:
    """docs/SPEC.md is the shared contract as it stands (copy it again when it changes)."""
    assert (ROOT / "docs" / "SPEC.md").read_text(encoding="utf-8") == SHARED_SPEC.read_text(
        encoding="utf-8"
    )


def test_readme_shows_the_report_and_documents_completion_and_the_mock() -> None:
    """The screenshot is committed; completion and the by-hand mock session are written up
    with commands that exist."""
    (image,) = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", README)
    assert (ROOT / image).stat().st_size < 300_000
    assert "### Shell completion" in README and "_RUNNER_COMPLETE=zsh_source" in README
    assert "### Drive it by hand against the mock" in README
    assert "runner mock-server --port 8808" in README


def test_bash_completion_completes_commands_and_options() -> None:
    """What the README tells bash to eval works: `runner st<TAB>` offers status."""
    env = {
        **os.environ,
        "_RUNNER_COMPLETE": "bash_complete",
        "COMP_WORDS": "runner st",
        "COMP_CWORD": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from runner.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "plain,status" in done.stdout.splitlines()
    env["COMP_WORDS"], env["COMP_CWORD"] = "runner run m.yaml --summ", "3"
    done = subprocess.run(
        [sys.executable, "-c", "from runner.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "plain,--summary" in done.stdout.splitlines()


def test_reliability_names_only_tests_that_exist() -> None:
    """Every test module and test function docs/reliability.md points at is there."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    files = set(re.findall(r"tests/[\w/]+\.py", text))
    assert files and all((ROOT / f).is_file() for f in files), files
    names = set(re.findall(r"\btest_\w+", text)) - {Path(f).stem for f in files}
    sources = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    assert len(names) >= 8
    assert [n for n in sorted(names) if f"def {n}(" not in sources] == []

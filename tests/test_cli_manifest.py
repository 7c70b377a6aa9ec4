"""End-to-end tests of `runner validate`, `runner plan` and `runner schema`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runner.cli import cli
from runner.manifest import MAX_DEPTH

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "manifests"
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
RUNNER_BIN = Path(sys.executable).parent / "runner"

GOOD = """\
version: 1
vars:
  brand: Acme
defaults:
  type: text-to-video
  duration: 5
campaigns:
  - name: walk
    prompt: "{subject} in {place}, {brand}"
    matrix:
      subject: [A chef, A dancer]
      place: [a kitchen, a park]
      exclude:
        - {subject: A chef, place: a park}
  - name: spin
    type: image-to-video
    prompt: Product spin
    image_url: "https://cdn.example.com/{item}.jpg"
    matrix:
      item: [shoe]
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def expectations(path: Path) -> dict[str, str]:
    """The ``# expect-...:`` header of a fixture; the line marked ``# <- error`` is the line."""
    text = path.read_text(encoding="utf-8")
    found = dict(re.findall(r"^# expect-([a-z]+):[ \t]*(.*)$", text, re.MULTILINE))
    for number, line in enumerate(text.splitlines(), start=1):
        if line.endswith("# <- error"):
            found["line"] = str(number)
    return {k: v for k, v in found.items() if v}


def assert_refused(
    result: Result, *, file: str, line: int | None, field: str | None, message: str
) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    err = result.stderr
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) == 1, err  # one paragraph
    where = f"{file}:{line}:" if line is not None else f"{file}:"
    assert where in err, err
    if field is not None:
        assert f": {field}: " in err, err
    assert message in err, err


BAD_FIXTURES = sorted(FIXTURES.glob("*.yaml"))


def test_there_are_at_least_twenty_bad_fixtures() -> None:
    """The acceptance criterion asks for twenty distinct bad manifests; we keep more."""
    assert len(BAD_FIXTURES) >= 30


@pytest.mark.parametrize("path", BAD_FIXTURES, ids=lambda p: p.stem)
def test_bad_manifest_is_refused_with_its_position(path: Path) -> None:
    """Each fixture says which file, line, field and message its error must name."""
    expect = expectations(path)
    assert "line" in expect, f"{path.name} marks no error line"
    result = invoke("validate", str(path))
    file = str(path.parent / expect["file"]) if "file" in expect else str(path)
    assert_refused(
        result,
        file=file,
        line=int(expect["line"]),
        field=expect.get("field"),
        message=expect["message"],
    )


def test_ten_thousand_deep_nesting_is_refused(tmp_path: Path) -> None:
    """A 10,000-deep flow list fails at the 65th level, without a RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\ncampaigns: " + "[" * 10_000 + "]" * 10_000 + "\n")
    result = invoke("validate", str(path))
    column = len("campaigns: ") + MAX_DEPTH  # the root mapping is the first level
    assert_refused(result, file=str(path), line=2, field=None, message="nested deeper than 64")
    assert f":2:{column}:" in result.stderr


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    """Block-style nesting hits the same guard."""
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nvars:\n  x:\n" + "    " + "- " * 10_000 + "x\n")
    result = invoke("validate", str(path))
    assert_refused(result, file=str(path), line=4, field=None, message="nested deeper than 64")


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    """Random bytes are not UTF-8: the message says where and what."""
    path = tmp_path / "garbage.yaml"
    path.write_bytes(b"version: 1\n" + bytes(range(256)) * 4)
    result = invoke("validate", str(path))
    # bytes(range(256)) holds a newline at 0x0a, so 0x80 is on line 3, column 0x80 - 0x0a
    assert_refused(result, file=str(path), line=3, field=None, message="not UTF-8")
    assert f"{path}:3:118: " in result.stderr


def test_control_characters_are_refused(tmp_path: Path) -> None:
    """Valid UTF-8 with NUL bytes in it is still binary."""
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"version: 1\ncampaigns:\n  - name: a\x00b\n")
    result = invoke("validate", str(path))
    assert_refused(result, file=str(path), line=3, field=None, message="U+0000")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A missing manifest names the path."""
    path = tmp_path / "nope.yaml"
    assert_refused(
        invoke("validate", str(path)), file=str(path), line=None, field=None, message="no such file"
    )


def test_directory_is_refused(tmp_path: Path) -> None:
    """A directory is not a manifest."""
    assert_refused(
        invoke("validate", str(tmp_path)),
        file=str(tmp_path),
        line=None,
        field=None,
        message="is a directory",
    )


def test_plan_refuses_bad_manifests_too() -> None:
    """`plan` reports the same error as `validate`, also with --json, and prints no JSON."""
    path = FIXTURES / "unknown_placeholder.yaml"
    for args in (["plan", str(path)], ["plan", "--json", str(path)]):
        result = invoke(*args)
        assert_refused(
            result, file=str(path), line=8, field="campaigns[0].prompt", message="{subjet}"
        )


@pytest.mark.parametrize(
    "name", ["tabs.yaml", "alias_bomb.yaml", "duplicate_key.yaml", "oversized_matrix.yaml"]
)
def test_bad_manifest_through_the_console_script(name: str) -> None:
    """The installed `runner` script: exit 2, one line on stderr, no traceback."""
    path = FIXTURES / name
    proc = subprocess.run(
        [str(RUNNER_BIN), "validate", str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {path}:{expectations(path)['line']}:")


def test_deep_nesting_through_the_console_script(tmp_path: Path) -> None:
    """Even a 10,000-deep document never reaches Python's recursion limit in a real process."""
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\ncampaigns: " + "[" * 10_000 + "]" * 10_000 + "\n")
    proc = subprocess.run(
        [str(RUNNER_BIN), "validate", str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    assert f"{path}:2:" in proc.stderr


def test_validate_good_manifest(tmp_path: Path) -> None:
    """A good manifest prints exactly `ok: N jobs`."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 4 jobs\n"
    assert result.stderr == ""


def test_validate_several_names_each_and_fails_if_one_is_bad(tmp_path: Path) -> None:
    """With several files every one is reported; one bad file makes the exit status 2."""
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = FIXTURES / "wrong_type.yaml"
    result = invoke("validate", str(good), str(bad), str(good))
    assert result.exit_code == 2
    assert result.stdout == f"{good}: ok: 4 jobs\n{good}: ok: 4 jobs\n"
    assert result.stderr.startswith(f"error: {bad}:7:15: campaigns[0].duration: ")
    assert "Traceback" not in result.output


def test_validate_needs_a_manifest() -> None:
    """No argument is a usage error (exit 2)."""
    assert invoke("validate").exit_code == 2


def test_example_manifests_validate() -> None:
    """Every manifest in manifests/ validates (the acceptance command)."""
    assert {p.name for p in EXAMPLES} >= {
        "demo.yaml",
        "nightly.yaml",
        "image-to-video.yaml",
        "soul-csv.yaml",
    }
    result = invoke("validate", *map(str, EXAMPLES))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXAMPLES)
    for path, line in zip(EXAMPLES, lines, strict=True):
        assert re.fullmatch(rf"{re.escape(str(path))}: ok: [1-9][0-9]* jobs", line), line


def test_example_manifests_point_editors_at_the_committed_schema() -> None:
    """Each example starts with the yaml-language-server modeline."""
    for path in EXAMPLES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../runner/schema/manifest.schema.json"


def test_demo_manifest_is_small_and_mixed() -> None:
    """The demo: about a dozen short jobs, both video types, no soul."""
    result = invoke("plan", "--json", str(ROOT / "manifests" / "demo.yaml"))
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)["jobs"]
    assert 10 <= len(jobs) <= 14
    assert {j["request"]["type"] for j in jobs} == {"text-to-video", "image-to-video"}
    assert len({j["campaign"] for j in jobs}) >= 3
    assert all(j["request"]["duration"] <= 5 for j in jobs)
    assert "souls" not in (ROOT / "manifests" / "demo.yaml").read_text()


def test_plan_json_is_one_document_in_the_spec_shape(tmp_path: Path) -> None:
    """`plan --json`: one JSON document, summary and jobs with vars and request, manifest order."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = invoke("plan", "--json", str(path))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"summary", "jobs"}
    assert doc["summary"] == {
        "total": 4,
        "new": 4,
        "done": 0,
        "in_flight": 0,
        "failed": 0,
        "orphaned": 0,
        "estimated_credits": 0,
        "charged_credits": 0,
        "estimated_total_credits": 0,
        "max_credits": None,
        "max_total_credits": None,
    }
    assert [(j["campaign"], j["vars"]) for j in doc["jobs"]] == [
        ("walk", {"subject": "A chef", "place": "a kitchen"}),
        ("walk", {"subject": "A dancer", "place": "a kitchen"}),
        ("walk", {"subject": "A dancer", "place": "a park"}),
        ("spin", {"item": "shoe"}),
    ]
    for job in doc["jobs"]:
        assert set(job) == {"key", "campaign", "status", "vars", "request", "path"}
        assert job["status"] == "new"
        assert re.fullmatch(r"[0-9a-f]{16}", job["key"])
        assert job["path"] == f"{job['campaign']}/{job['key']}.mp4"
    assert doc["jobs"][0]["request"] == {
        "type": "text-to-video",
        "prompt": "A chef in a kitchen, Acme",
        "duration": 5,
    }
    assert doc["jobs"][3]["request"] == {
        "type": "image-to-video",
        "prompt": "Product spin",
        "duration": 5,
        "image_url": "https://cdn.example.com/shoe.jpg",
    }


def test_plan_json_with_common_options_after_the_command(tmp_path: Path) -> None:
    """`-v`/`--state` after the command do not add anything to stdout."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = invoke("plan", str(path), "--json", "-v", "--state", str(tmp_path / "state"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["total"] == 4


def test_plan_human_output_lists_jobs_and_summary(tmp_path: Path) -> None:
    """Without --json: one line per job, then the summary; -q keeps only the summary."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    doc = json.loads(invoke("plan", "--json", str(path)).stdout)
    result = invoke("plan", str(path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KEY", "CAMPAIGN", "STATUS", "CREDITS", "PATH", "ROW"]
    for job, line in zip(doc["jobs"], lines[1:5], strict=True):
        assert line.startswith(f"{job['key']}  {job['campaign']}")
        assert job["path"] in line
    summary = (
        "4 jobs: 4 new, 0 done, 0 in flight, 0 failed, 0 orphaned; "
        "estimated credits for new jobs: 0 (no cap per run); "
        "manifest total with them: 0 (0 charged so far, no cap)"
    )
    assert lines[5:] == [summary]
    quiet = invoke("plan", "-q", str(path))
    assert quiet.stdout.splitlines() == [summary]


def test_schema_prints_the_committed_schema() -> None:
    """runner/schema/manifest.schema.json is exactly `runner schema` (so it cannot drift)."""
    result = invoke("schema")
    assert result.exit_code == 0
    committed = (ROOT / "runner" / "schema" / "manifest.schema.json").read_text(encoding="utf-8")
    assert result.stdout == committed
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"version", "campaigns"}


def test_every_problem_of_a_manifest_is_listed(tmp_path: Path) -> None:
    """Several schema problems: each gets its own located paragraph, first one first."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\ncampaigns: []\nlimits: {concurrency: x}\n")
    result = invoke("validate", str(bad))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 3
    assert lines[0].startswith(f"error: {bad}:1:10: version:")
    assert "(and 2 more problems)" in lines[0]
    assert lines[1].startswith(f"error: {bad}:2:1: campaigns:")
    assert lines[2].startswith(f"error: {bad}:3:23: limits.concurrency:")

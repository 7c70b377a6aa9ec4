"""The ledger read commands (status, jobs, show, export) and plan's ledger diff, through the CLI."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result

from runner.cli import cli
from runner.jobs import Job, expand
from runner.ledger import default_ledger_url, open_ledger
from runner.manifest import load_manifest

MANIFEST = """\
version: 1
defaults: {type: text-to-video, duration: 4, resolution: 720p}
budget:
  prices:
    - {match: {}, credits_per_second: 2}
campaigns:
  - name: walk
    tags: [nightly]
    prompt: "{subject} in {place}"
    matrix:
      subject: [a dancer, a chef]
      place: [a park, a market]
  - name: spin
    prompt: "spin of the {product}"
    matrix:
      product: [shoe, bag, hat]
"""


def invoke(state: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--state", str(state), *args])


def invoke_json(state: Path, *args: str) -> Any:
    result = invoke(state, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class World:
    """A manifest on disk and a ledger that has run part of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.manifest_file = tmp_path / "m.yaml"
        self.manifest_file.write_text(MANIFEST)
        manifest = load_manifest(self.manifest_file)
        self.path = str(manifest.path)
        self.jobs = expand(manifest)
        self.walk = [j for j in self.jobs if j.campaign == "walk"]
        self.spin = [j for j in self.jobs if j.campaign == "spin"]
        with open_ledger(default_ledger_url(self.state)) as led:
            led.record_plan(self.path, self.jobs)
            shoe = self.spin[0].key
            for status in ("submitting", "queued", "running", "completed"):
                led.transition(shoe, status, generation_id="gen-1")
            self.shoe_file = self.state.absolute() / "videos" / self.spin[0].path
            led.transition(
                shoe, "downloaded", bytes=2048, sha256="ab" * 32, location=str(self.shoe_file)
            )
            led.transition(self.spin[1].key, "submitting")
            led.transition(self.spin[1].key, "failed", error="nsfw")
            led.transition(self.walk[0].key, "submitting")
            led.transition(self.walk[0].key, "queued", generation_id="gen-2")
            other = Job(
                key="f" * 16, campaign="elsewhere", manifest="/other.yaml", index=0,
                vars={}, request={"prompt": "x"}, path="elsewhere/x.mp4", credits=1.0,
            )  # fmt: skip
            led.record_plan("/other.yaml", [other])


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# --- status -------------------------------------------------------------------------------


def test_status_json(world: World) -> None:
    """status --json counts per campaign and status, with totals."""
    doc = invoke_json(world.state, "status")
    assert doc == {
        "campaigns": {
            "elsewhere": {"pending": 1},
            "spin": {"pending": 1, "downloaded": 1, "failed": 1},
            "walk": {"pending": 3, "queued": 1},
        },
        "totals": {"pending": 5, "queued": 1, "downloaded": 1, "failed": 1},
    }


def test_status_of_one_manifest_resolves_a_relative_path(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status MANIFEST filters to that manifest, named relative to the current directory."""
    monkeypatch.chdir(world.manifest_file.parent)
    doc = invoke_json(world.state, "status", "m.yaml")
    assert set(doc["campaigns"]) == {"spin", "walk"}
    assert doc["totals"] == {"pending": 4, "queued": 1, "downloaded": 1, "failed": 1}


def test_status_human(world: World) -> None:
    """Without --json, a table with a row per campaign and a total row."""
    result = invoke(world.state, "status")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CAMPAIGN", "PENDING", "QUEUED", "DOWNLOADED", "FAILED", "TOTAL"]
    assert lines[1].split() == ["elsewhere", "1", "0", "0", "0", "1"]
    assert lines[-1].split() == ["total", "5", "1", "1", "1", "8"]


# --- jobs ---------------------------------------------------------------------------------


def test_jobs_json_has_the_ledger_columns(world: World) -> None:
    """jobs --json lists every job with its ledger columns, in manifest order."""
    doc = invoke_json(world.state, "jobs")
    assert [d["key"] for d in doc] == ["f" * 16] + [j.key for j in world.jobs]
    shoe = next(d for d in doc if d["key"] == world.spin[0].key)
    assert {k: shoe[k] for k in ("campaign", "status", "bytes", "sha256", "generation_id")} == {
        "campaign": "spin",
        "status": "downloaded",
        "bytes": 2048,
        "sha256": "ab" * 32,
        "generation_id": "gen-1",
    }
    assert shoe["vars"] == {"product": "shoe"}
    assert shoe["request"]["prompt"] == "spin of the shoe"
    assert shoe["manifest"] == world.path
    assert {"idempotency_key", "attempts", "error", "video_url", "path", "credits"} <= set(shoe)


def test_jobs_filters(world: World) -> None:
    """--status and --campaign filter (and repeat)."""
    assert [d["key"] for d in invoke_json(world.state, "jobs", "--status", "failed")] == [
        world.spin[1].key
    ]
    walk = invoke_json(world.state, "jobs", "--campaign", "walk")
    assert [d["key"] for d in walk] == [j.key for j in world.walk]
    both = invoke_json(
        world.state, "jobs", "--campaign", "walk", "--status", "queued", "--status", "failed"
    )
    assert [d["key"] for d in both] == [world.walk[0].key]
    result = invoke(world.state, "jobs", "--status", "bogus")
    assert result.exit_code == 2


def test_jobs_human_is_one_line_per_job(world: World) -> None:
    """Without --json: a header, then one line per job with key, campaign and status."""
    result = invoke(world.state, "jobs", "--campaign", "spin")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(world.spin)
    assert lines[2].split()[:4] == [world.spin[1].key, "spin", "failed", "0"]
    assert lines[2].endswith("nsfw")


# --- show ---------------------------------------------------------------------------------


def test_show_prints_request_state_file_and_events(world: World) -> None:
    """show KEY prints the request, the state, the file and every event."""
    shoe = world.spin[0]
    result = invoke(world.state, "show", shoe.key)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "spin of the shoe" in out
    assert "downloaded (attempts 0)" in out
    assert f"{world.shoe_file} (not on disk); 2048 bytes, sha256 {'ab' * 32}" in out
    world.shoe_file.parent.mkdir(parents=True)
    world.shoe_file.write_bytes(b"x" * 2048)
    out = invoke(world.state, "show", shoe.key).stdout
    assert f"location         {world.shoe_file}; 2048 bytes" in out
    events = out.split("\nevents\n")[1].splitlines()
    assert [line.split()[1:4] for line in events] == [
        ["-", "→", "pending"],
        ["pending", "→", "submitting"],
        ["submitting", "→", "queued"],
        ["queued", "→", "running"],
        ["running", "→", "completed"],
        ["completed", "→", "downloaded"],
    ]


def test_show_accepts_a_unique_prefix_and_json(world: World) -> None:
    """A unique prefix of the key works; --json gives the job and its events."""
    key = world.spin[1].key
    prefix = next(
        key[:n] for n in range(1, 17) if sum(j.key.startswith(key[:n]) for j in world.jobs) == 1
    )
    doc = invoke_json(world.state, "show", prefix)
    assert doc["job"]["key"] == key
    assert doc["job"]["error"] == "nsfw"
    assert [e["to_status"] for e in doc["events"]] == ["pending", "submitting", "failed"]


def test_show_unknown_key_is_a_clear_error(world: World, tmp_path: Path) -> None:
    """An unknown key exits 2 with a one-line message, no traceback; so does an empty state."""
    result = invoke(world.state, "show", "0123456789zz")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no job '0123456789zz'")
    assert "Traceback" not in result.output
    result = invoke(tmp_path / "empty", "show", "abc")
    assert result.exit_code == 2
    assert "no ledger" in result.stderr


# --- export -------------------------------------------------------------------------------


def test_export_csv(world: World) -> None:
    """export (CSV by default) has a header of ledger columns and one row per job."""
    result = invoke(world.state, "export")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["key"] for r in rows] == ["f" * 16] + [j.key for j in world.jobs]
    shoe = next(r for r in rows if r["key"] == world.spin[0].key)
    assert (shoe["status"], shoe["bytes"], shoe["error"]) == ("downloaded", "2048", "")
    assert json.loads(shoe["request"])["prompt"] == "spin of the shoe"
    walk = next(r for r in rows if r["key"] == world.walk[0].key)
    assert json.loads(walk["tags"]) == ["nightly"]


def test_export_jsonl(world: World) -> None:
    """export --format jsonl prints one JSON object per job."""
    result = invoke(world.state, "export", "--format", "jsonl")
    assert result.exit_code == 0
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert docs == invoke_json(world.state, "jobs")


def test_export_json_is_the_jobs_document_written_a_job_at_a_time(world: World) -> None:
    """export --format json streams its rows, yet prints exactly the document ``jobs --json``
    prints (the same bytes), with every filter; jsonl holds the same rows."""
    for filters in ([], ["--status", "downloaded"], ["--campaign", "walk"], ["--tag", "nightly"],
                    ["--status", "failed", "--campaign", "spin"]):  # fmt: skip
        exported = invoke(world.state, "export", "--format", "json", *filters)
        listed = invoke(world.state, "jobs", "--json", *filters)
        assert exported.exit_code == listed.exit_code == 0, exported.output
        assert exported.stdout == listed.stdout, filters
        lines = invoke(world.state, "export", "--format", "jsonl", *filters).stdout.splitlines()
        assert [json.loads(line) for line in lines] == json.loads(listed.stdout)
    everything = json.loads(invoke(world.state, "export", "--format", "json").stdout)
    assert [doc["key"] for doc in everything] == ["f" * 16] + [j.key for j in world.jobs]


# --- no ledger, and during a run ----------------------------------------------------------


SEED_KEY = "sk-live-0123456789abcdef"
PLATFORM_ID, PLATFORM_SECRET = "kid-4242", "s3cr3t/abc+def=="


@pytest.mark.parametrize(
    "command",
    [
        ("show", "KEY"),
        ("show", "KEY", "--json"),
        ("jobs", "--json"),
        ("jobs",),
        ("export",),
        ("export", "--format", "jsonl"),
        ("export", "--format", "json"),
        ("report",),
    ],
)
def test_keys_stored_by_an_older_ledger_are_hidden_when_shown(
    world: World, command: tuple[str, ...]
) -> None:
    """A ledger written before redaction existed holds a key the provider echoed into a video
    URL, an error and an event: show, jobs, export and the report mask every credential of the
    environment (as written and percent-encoded, an ``id:secret`` key's halves too); the rest
    is shown."""
    hat = world.spin[2].key
    url = f"https://cdn.example.com/v.mp4?token={SEED_KEY}&sig={quote(PLATFORM_SECRET, safe='')}"
    with open_ledger(default_ledger_url(world.state)) as led:
        for status in ("submitting", "queued", "running"):
            led.transition(hat, status, generation_id="gen-3")
        led.transition(hat, "completed", video_url=url)
        led.transition(hat, "failed", error=f"403 from {PLATFORM_ID}:{PLATFORM_SECRET}")
        led.note(hat, f"download of {url} failed")
        stored = led.get(hat)
    assert stored is not None and stored.video_url == url  # as an older runner stored it
    env = {"HIGGSFIELD_API_KEY": SEED_KEY, "HF_KEY": f"{PLATFORM_ID}:{PLATFORM_SECRET}"}
    args = [a.replace("KEY", hat) for a in command]
    result = CliRunner().invoke(cli, ["--state", str(world.state), *args], env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    if command == ("report",):  # the page, which shows errors but no video URLs
        out = (world.state / "report.html").read_text(encoding="utf-8")
        assert "403 from ***" in out
    for secret in (SEED_KEY, PLATFORM_SECRET, quote(PLATFORM_SECRET, safe=""), PLATFORM_ID):
        assert secret not in out, f"{secret!r} shown by {command}"
    if command[0] in ("show", "export") or "--json" in command:  # tables have no URL column
        assert "https://cdn.example.com/v.mp4?token=***&sig=***" in out
    assert "***" in out


def test_redacting_masks_the_columns_asked_for(world: World) -> None:
    """``redacting`` masks the video URL and the error, or only the columns a reader shows
    (the report: the error); a row with nothing to hide comes back as it is."""
    from runner.app.queries import redacting

    hat = world.spin[2].key
    with open_ledger(default_ledger_url(world.state)) as led:
        led.transition(hat, "submitting", generation_id="gen-3")
        led.transition(hat, "completed", video_url=f"https://cdn.example.com/v?t={SEED_KEY}")
        led.transition(hat, "failed", error=f"403 for {SEED_KEY}")
        row, clean = led.get(hat), led.get(world.spin[0].key)
    assert row is not None and clean is not None
    env = {"HIGGSFIELD_API_KEY": SEED_KEY}
    both, error_only = redacting(env)(row), redacting(env, columns=("error",))(row)
    assert (both.video_url, both.error) == ("https://cdn.example.com/v?t=***", "403 for ***")
    assert (error_only.video_url, error_only.error) == (row.video_url, "403 for ***")
    assert both.to_dict() | {"video_url": None, "error": None} == row.to_dict() | {
        "video_url": None, "error": None,
    }  # fmt: skip
    assert redacting(env)(clean) is clean


def test_read_commands_without_a_ledger_print_empty_results(tmp_path: Path) -> None:
    """With no ledger yet: empty results, exit 0, and no state directory created."""
    state = tmp_path / "state"
    assert invoke_json(state, "status") == {"campaigns": {}, "totals": {}}
    assert invoke_json(state, "jobs") == []
    assert invoke(state, "status").stdout.startswith(f"no ledger at {state / 'ledger.db'} ")
    assert invoke(state, "export").stdout.startswith("key,campaign,manifest,")
    assert len(invoke(state, "export").stdout.splitlines()) == 1
    assert invoke(state, "export", "--format", "jsonl").stdout == ""
    assert not state.exists()


def test_read_commands_work_during_a_run(world: World) -> None:
    """With the executor lock held and a write transaction open, reads still answer."""
    writer = sqlite3.connect(world.state / "ledger.db", isolation_level=None)
    with open_ledger(default_ledger_url(world.state)) as held, held.executor_lock():
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE jobs SET status = 'failed'")
        try:
            assert invoke_json(world.state, "status")["totals"]["queued"] == 1
            assert len(invoke_json(world.state, "jobs")) == 8
            assert invoke(world.state, "show", world.walk[0].key).exit_code == 0
            assert invoke(world.state, "export").exit_code == 0
            plan = invoke_json(world.state, "plan", str(world.manifest_file))
            assert plan["summary"]["in_flight"] == 1
        finally:
            writer.execute("ROLLBACK")
            writer.close()


# --- plan ---------------------------------------------------------------------------------


def test_plan_without_a_ledger_is_all_new_and_writes_nothing(tmp_path: Path) -> None:
    """plan with no ledger: every job new, no state directory or ledger created."""
    (tmp_path / "m.yaml").write_text(MANIFEST)
    state = tmp_path / "state"
    doc = invoke_json(state, "plan", str(tmp_path / "m.yaml"))
    assert doc["summary"] == {
        "total": 7, "new": 7, "done": 0, "in_flight": 0, "failed": 0, "orphaned": 0,
        "estimated_credits": 56, "charged_credits": 0, "estimated_total_credits": 56,
        "max_credits": None, "max_total_credits": None,
    }  # fmt: skip
    assert {j["status"] for j in doc["jobs"]} == {"new"}
    assert not state.exists()


def test_plan_diffs_an_edited_manifest_against_the_ledger(world: World) -> None:
    """After an edit, plan shows ledger statuses, new jobs and orphans, and writes nothing."""
    world.manifest_file.write_text(
        MANIFEST.replace("{subject} in {place}", "{subject} at {place}").replace(
            "[shoe, bag, hat]", "[shoe, bag, scarf]"
        )
    )
    rows_before = invoke(world.state, "export").stdout
    doc = invoke_json(world.state, "plan", str(world.manifest_file))
    assert doc["summary"] == {
        # the queued walk job is no longer produced but was sent: it counts in flight until a
        # run finishes it (SPEC v2 §4); the other 4 jobs gone from the manifest are orphaned
        "total": 7, "new": 5, "done": 1, "in_flight": 1, "failed": 1, "orphaned": 4,
        "estimated_credits": 40, "charged_credits": 16, "estimated_total_credits": 56,
        "max_credits": None, "max_total_credits": None,
    }  # fmt: skip
    statuses = {(j["campaign"], j["vars"].get("product")): j["status"] for j in doc["jobs"]}
    assert statuses[("spin", "shoe")] == "downloaded"
    assert statuses[("spin", "bag")] == "failed"
    assert statuses[("spin", "scarf")] == "new"
    assert invoke(world.state, "export").stdout == rows_before  # nothing written

"""`runner enqueue` resolves what only its host's disk can tell (SPEC §8): local `image_url`
files and soul images are uploaded once and their URLs recorded, CSV values are already in
the recorded jobs, and the jobs an edited manifest no longer produces are recorded too. So
`runner worker` on another host — another state dir and working directory, the manifest's
folder gone — needs only the ledger URL and the key. Real processes over loopback against
the mock, on PostgreSQL and on SQLite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.ledger import JobStatus, open_ledger
from runner.mock import MockOptions
from runner.mock.server import MockServerThread
from tests.test_cli_run import HANG_GUARD, Factory
from tests.test_fleet import fleet_env, start

PROJECT = """\
version: 1
provider: {{name: higgsfield, base_url: "{base}"}}
limits: {{concurrency: 3, requests_per_second: 40, max_attempts: 10,
          poll_initial: 0.05, poll_max: 0.2}}
souls: {{ava: {{name: ava_v1, images: [refs/*.jpg]}}}}
defaults: {{model: higgsfield-ai/dop/standard, duration: 4}}
campaigns:
  - name: looks
    type: image-to-video
    prompt: "{{mood}} push-in"
    image_url: "{{image}}"
    rows: shots.csv
  - name: portraits
    type: text-to-video
    soul: ava
    prompt: "ava {{place}}"
    matrix: {{place: [in a park, on a roof]}}
"""
SHOTS = "image,mood\nimg/a.jpg,slow\nimg/b.jpg,slow\nimg/a.jpg,fast\nimg/b.jpg,fast\n"


def project(folder: Path, server: MockServerThread) -> tuple[Path, dict[str, bytes]]:
    """The manifest (4 CSV rows over 2 local images, a soul of 2 local images: 6 jobs) and
    the content of every local file it names, by path relative to its folder."""
    files = {
        "img/a.jpg": b"\xff\xd8 image a",
        "img/b.jpg": b"\xff\xd8 image b",
        "refs/1.jpg": b"\xff\xd8 soul one",
        "refs/2.jpg": b"\xff\xd8 soul two",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / "shots.csv").write_text(SHOTS)
    manifest = folder / "m.yaml"
    manifest.write_text(PROJECT.format(base=server.platform_base_url.rstrip("/")))
    return manifest, files


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=HANG_GUARD)
    return proc.returncode, out + err


@pytest.fixture(params=["postgresql", "sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger both hosts reach: a PostgreSQL database, or a SQLite file outside either
    host's state dir."""
    if request.param == "sqlite":
        return str(tmp_path / "shared" / "ledger.db")
    return str(request.getfixturevalue("pg_url"))


def test_a_worker_elsewhere_needs_only_the_ledger(
    tmp_path: Path, mock_server_factory: Factory, ledger_url: str
) -> None:
    """Enqueue, then delete the manifest's folder; a worker in another directory with another
    state dir does every job: the mock saw each local file uploaded once (at enqueue), the
    soul trained once, one generation per job, each image-to-video body carrying the URL of
    its own file."""
    server = mock_server_factory(MockOptions(latency_min=0.02, latency_max=0.05, seed=70))
    folder = tmp_path / "project"
    manifest, files = project(folder, server)
    env = fleet_env(ledger_url, HF_KEY="test-id:test-secret")
    code, out = finish(start("enqueue", str(manifest), "--state", str(tmp_path / "q"), env=env))
    assert code == 0, out
    stats = server.state.stats()
    assert (stats["uploads"], stats["generations_created"], stats["souls_created"]) == (4, 0, 0)
    shutil.rmtree(folder)
    elsewhere = tmp_path / "host2"
    elsewhere.mkdir()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "worker",
            "--idle-exit",
            "--state",
            str(elsewhere / "state"),
        ],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, out = finish(worker)
    assert code == 0, out
    stats = server.state.stats()
    assert stats["uploads"] == 4 and stats["souls_created"] == 1
    assert stats["generations_created"] == 6 and stats["idempotent_replays"] == 0
    uploaded = sorted(u.data or b"" for u in server.state.uploads.values())
    assert uploaded == sorted(files.values())  # each file once, none other
    with open_ledger(ledger_url) as led:
        rows = led.jobs()
    assert {r.status for r in rows} == {JobStatus.DOWNLOADED} and len(rows) == 6
    by_url = {token: upload.data for token, upload in server.state.uploads.items() if upload.data}
    for row in rows:
        body = server.state.generations[row.generation_id or ""].body
        if row.campaign == "looks":
            local = row.request["image_url"]  # the ledger keeps the request as planned
            assert by_url[body["image_url"].rsplit("/", 1)[1]] == files[local]
        else:
            assert body.get("custom_reference_id")


def test_a_file_enqueue_cannot_upload_stops_it_before_anything_is_recorded(
    tmp_path: Path, mock_server_factory: Factory
) -> None:
    """A CSV row naming a file outside the manifest's folder: `enqueue` exits 2 with one
    paragraph naming the manifest, the job and the file; nothing is recorded or uploaded."""
    server = mock_server_factory(MockOptions(latency_min=0, latency_max=0, seed=71))
    folder = tmp_path / "project"
    manifest, _ = project(folder, server)
    (tmp_path / "secret.jpg").write_bytes(b"not for the provider")
    (folder / "shots.csv").write_text(SHOTS.replace("img/b.jpg,fast", "../secret.jpg,fast"))
    ledger = str(tmp_path / "shared" / "ledger.db")
    env = fleet_env(ledger, HF_KEY="test-id:test-secret")
    code, out = finish(start("enqueue", str(manifest), "--state", str(tmp_path / "q"), env=env))
    assert code == 2, out
    assert "Traceback" not in out
    assert str(manifest) in out and "'../secret.jpg'" in out
    assert "outside the manifest's folder" in out and "nothing was enqueued" in out
    with open_ledger(ledger) as led:
        assert led.jobs() == [] and led.recorded_manifests() == []
    assert all(u.data != b"not for the provider" for u in server.state.uploads.values())


EDITED = """\
version: 1
provider: {{base_url: "{base}"}}
limits: {{concurrency: 4, requests_per_second: 40, poll_initial: 0.05, poll_max: 0.2}}
defaults: {{type: text-to-video, duration: 2}}
campaigns:
  - name: shots
    prompt: "shot {{n}}"
    rows: shots.csv
"""


def test_a_worker_finishes_what_the_recorded_plan_no_longer_produces(
    tmp_path: Path, mock_server_factory: Factory, ledger_url: str
) -> None:
    """Three CSV rows submitted (`run --submit-only`), then one row dropped and the manifest
    enqueued again, then its folder deleted: a worker elsewhere downloads the two jobs still
    wanted and finishes the dropped one (this dialect cannot cancel: downloaded, then
    orphaned), knowing it from the enqueued record, not from a CSV it does not have."""
    server = mock_server_factory(MockOptions(latency_min=0.3, latency_max=0.5, seed=72))
    folder = tmp_path / "project"
    folder.mkdir()
    manifest = folder / "m.yaml"
    manifest.write_text(EDITED.format(base=server.seed_base_url.rstrip("/")))
    (folder / "shots.csv").write_text("n\n1\n2\n3\n")
    env = fleet_env(ledger_url)
    state = str(tmp_path / "q")
    code, out = finish(start("run", str(manifest), "--submit-only", "--state", state, env=env))
    assert code == 0, out
    assert server.state.stats()["generations_created"] == 3
    (folder / "shots.csv").write_text("n\n1\n2\n")
    code, out = finish(start("enqueue", str(manifest), "--state", state, env=env))
    assert code == 0, out
    with open_ledger(ledger_url) as led:
        [record] = led.recorded_manifests()
        [dropped] = [r.key for r in led.jobs() if r.vars == {"n": "3"}]
    assert record.resolved.finishing == (dropped,)
    shutil.rmtree(folder)
    elsewhere = tmp_path / "host2"
    elsewhere.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-m", "runner", "worker", "--idle-exit", "--state", "state"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, out = finish(worker)
    assert code == 0, out
    assert server.state.stats()["generations_created"] == 3
    with open_ledger(ledger_url) as led:
        statuses = {r.key: r.status for r in led.jobs()}
        orphaned = [e.to_status for e in led.events(dropped)][-2:]
    assert statuses.pop(dropped) is JobStatus.ORPHANED
    assert orphaned == [JobStatus.DOWNLOADED, JobStatus.ORPHANED]
    assert set(statuses.values()) == {JobStatus.DOWNLOADED}

"""`run --summary FILE` and `run --json`: the run document (SPEC v2 §5) is written however the
run ends — success, failures, a budget stop, Ctrl-C, or an error before anything ran."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from runner.mock import MockOptions
from runner.mock.testing import INSTANT
from tests.cli_support import make_world, wait_until
from tests.conftest import MockServerFactory

SPEC_KEYS = {
    "manifests", "started", "finished", "exit_code", "counts", "submitted", "downloaded",
    "failed", "held", "credits", "budget_stop", "videos",
}  # fmt: skip


def read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    assert set(doc) >= SPEC_KEYS
    assert set(doc["credits"]) == {"estimated_this_run", "estimated_total"}
    return doc


def test_success(tmp_path: Path, mock_server_factory: MockServerFactory) -> None:
    """Every job downloaded: exit 0, counts, this run's videos and credits; same as --json."""
    w = make_world(tmp_path, mock_server_factory(INSTANT))
    out = tmp_path / "reports" / "run.json"
    done = w.invoke("run", str(w.manifest), "--summary", str(out))
    assert done.exit_code == 0, done.output
    doc = read(out)
    assert doc["manifests"] == [str(w.manifest.resolve())]
    assert doc["exit_code"] == 0 and doc["counts"] == {"downloaded": 5}
    assert (doc["submitted"], doc["downloaded"], doc["failed"]) == (5, 5, 0)
    assert doc["credits"] == {"estimated_this_run": 20, "estimated_total": 20}
    assert len(doc["videos"]) == 5 and all(Path(v).is_file() for v in doc["videos"])
    assert doc["budget_stop"] is None and doc["held"] == {} and doc["left"] == 0
    assert doc["started"] <= doc["finished"] and doc["resume"] is None
    again = w.invoke("run", str(w.manifest), "--json")
    assert again.exit_code == 0
    doc = json.loads(again.stdout)
    assert doc["submitted"] == 0 and doc["videos"] == [] and doc["counts"] == {"downloaded": 5}
    assert doc["credits"] == {"estimated_this_run": 0, "estimated_total": 20}


def test_failures(tmp_path: Path, mock_server_factory: MockServerFactory) -> None:
    """Generations that fail: exit 1 in the process and in the document, refunds counted."""
    w = make_world(tmp_path, mock_server_factory(MockOptions(fail_rate=1.0, seed=3)))
    out = tmp_path / "run.json"
    done = w.invoke("run", str(w.manifest), "--only", "spin", "--summary", str(out))
    assert done.exit_code == 1
    doc = read(out)
    assert doc["exit_code"] == 1 and doc["failed"] == 2 and doc["counts"] == {"failed": 2}
    assert doc["credits"]["estimated_this_run"] == 0  # failed generations are not charged


def test_budget_stop(tmp_path: Path, mock_server_factory: MockServerFactory) -> None:
    """--max-credits 9 lets two 4-credit jobs through: exit 1, the stop said, the rest left."""
    w = make_world(tmp_path, mock_server_factory(INSTANT))
    out = tmp_path / "run.json"
    done = w.invoke("run", str(w.manifest), "--max-credits", "9", "--summary", str(out))
    assert done.exit_code == 1
    doc = read(out)
    assert doc["exit_code"] == 1 and doc["budget_stop"]
    assert doc["downloaded"] == 2 and doc["counts"] == {"downloaded": 2, "pending": 3}
    assert doc["left"] == 3 and doc["credits"]["estimated_this_run"] == 8
    assert "--max-credits 9" in doc["resume"]


def test_ctrl_c(tmp_path: Path, mock_server_factory: MockServerFactory) -> None:
    """SIGINT mid-run: exit 130; the document says interrupted, with the command that resumes
    it keeping --tag and --max-credits; stderr says the same command."""
    server = mock_server_factory(MockOptions(latency_min=5.0, latency_max=5.0, seed=4))
    w = make_world(tmp_path, server)
    out = tmp_path / "run.json"
    flags = ["--tag", "nightly", "--max-credits", "100"]
    proc = w.process("run", str(w.manifest), *flags, "--summary", str(out))
    wait_until(lambda: server.state.stats()["generations_created"] >= 1, what="a submit")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = read(out)
    assert doc["exit_code"] == 130 and doc["interrupted"] is True
    resume = f"runner run {w.manifest} --tag nightly --max-credits 100 --state {w.state}"
    assert doc["resume"] == resume
    assert f"`{resume}` resumes" in err
    assert doc["left"] == 3 and doc["downloaded"] == 0


def test_an_error_before_the_run_still_writes_the_document(
    tmp_path: Path, mock_server_factory: MockServerFactory
) -> None:
    """No API key: exit 2 with the error on stderr, and a document that says so."""
    w = make_world(tmp_path, mock_server_factory(INSTANT))
    out = tmp_path / "run.json"
    done = w.invoke(
        "run", str(w.manifest), "--summary", str(out), "--json", env={"HIGGSFIELD_API_KEY": ""}
    )
    assert done.exit_code == 2
    assert done.stderr.startswith("error: ")
    doc = read(out)
    assert doc["exit_code"] == 2 and "HIGGSFIELD_API_KEY" in doc["error"]
    assert json.loads(done.stdout) == doc

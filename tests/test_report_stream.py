"""The report of many jobs: rows read once and dropped, cards spooled and put back in their
sections, memory that does not grow with the number of jobs."""

from __future__ import annotations

import os
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.jobs import expand
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.manifest import load_manifest
from runner.report import build_report
from tests.test_report import cards, parse

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
MANIFEST = """\
version: 1
output: {{dir: {out}}}
defaults: {{type: text-to-video, duration: 4}}
campaigns:
  - name: first
    prompt: "{{n}} <first> of {name}"
    matrix: {{n: {first}}}
  - name: second
    tags: [weekly]
    prompt: "{{n}} second of {name}"
    matrix: {{n: {second}}}
"""


def record(tmp: Path, name: str, first: int, second: int) -> tuple[Path, Path, list[str]]:
    """A manifest of ``first`` + ``second`` jobs recorded in ``tmp/state`` (every fifth one
    downloaded, its file on disk); the state, the manifest and its keys in manifest order."""
    out = tmp / "videos"
    tmp.mkdir(exist_ok=True)
    manifest_file = tmp / name
    manifest_file.write_text(
        MANIFEST.format(out=out, name=name, first=list(range(first)), second=list(range(second))),
        encoding="utf-8",
    )
    manifest = load_manifest(manifest_file)
    state = tmp / "state"
    with open_ledger(default_ledger_url(state)) as ledger:
        ledger.record_plan(str(manifest.path), expand(manifest))
        rows = ledger.jobs(manifest=str(manifest.path))
        for row in rows[::5]:
            file = out / row.path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"video")
            ledger.transition(row.key, JobStatus.SUBMITTING)
            ledger.transition(row.key, JobStatus.QUEUED, generation_id=f"g-{row.key}")
            ledger.transition(row.key, JobStatus.COMPLETED)
            ledger.transition(row.key, JobStatus.DOWNLOADED, location=str(file))
    return state, manifest_file, [row.key for row in rows]


def test_many_cards_land_in_their_sections_in_order(tmp_path: Path) -> None:
    """Hundreds of cards per section (several spool batches), two manifests: every card is
    in its own section, in manifest order, and the header counts them all."""
    state, _, keys = record(tmp_path, "a.yaml", 700, 300)
    _, _, other = record(tmp_path, "b.yaml", 3, 2)
    out = tmp_path / "report.html"
    summary = build_report(state, out_file=out, now=NOW)
    assert summary.jobs == 1005 and summary.videos == 200 + 1
    assert summary.counts == {"pending": 804, "downloaded": 201}
    doc = parse(out.read_text(encoding="utf-8"))
    sections = doc.find("section")
    shown = [[a.attrs["data-key"] for a in s.find("article")] for s in sections]
    assert shown == [keys[:700], keys[700:], other[:3], other[3:]]
    assert len(cards(doc)) == 1005
    nav = [[s.all_text() for s in li.find("small")] for li in doc.find("nav")[0].find("li")]
    a, b = str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    assert nav == [[a, "700 jobs"], [a, "300 jobs"], [b, "3 jobs"], [b, "2 jobs"]]
    tagged = build_report(state, out_file=tmp_path / "tagged.html", now=NOW, tags=["weekly"])
    assert tagged.jobs == 302


def test_the_page_is_the_same_without_an_in_kernel_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where copy_file_range is missing (or refused), the spooled cards are copied by reads
    and writes: the same page."""
    state, _, _ = record(tmp_path, "a.yaml", 400, 100)
    build_report(state, out_file=tmp_path / "kernel.html", now=NOW)
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    build_report(state, out_file=tmp_path / "plain.html", now=NOW)

    def refuse(*args: object) -> int:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    build_report(state, out_file=tmp_path / "refused.html", now=NOW)
    kernel = (tmp_path / "kernel.html").read_bytes()
    assert (tmp_path / "plain.html").read_bytes() == kernel
    assert (tmp_path / "refused.html").read_bytes() == kernel
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "a.yaml",
        "kernel.html",
        "plain.html",
        "refused.html",
    ]  # no spool left behind


def peak_bytes(state: Path, out: Path) -> int:
    """The most Python memory build_report held at once (tracemalloc)."""
    build_report(state, out_file=out, now=NOW)  # caches and imports warm
    tracemalloc.start()
    try:
        build_report(state, out_file=out, now=NOW)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_jobs(tmp_path: Path) -> None:
    """Four times the jobs, about the same peak: rows and cards are not held (holding them
    would take ~2 KB a job, ~6 MB more here)."""
    small, _, _ = record(tmp_path / "small", "a.yaml", 800, 200)
    large, _, _ = record(tmp_path / "large", "a.yaml", 3200, 800)
    small_peak = peak_bytes(small, tmp_path / "small.html")
    large_peak = peak_bytes(large, tmp_path / "large.html")
    assert large_peak < small_peak + 512 * 1024, (small_peak, large_peak)


def test_a_campaign_whose_jobs_interleave_with_anothers_keeps_them_together(
    tmp_path: Path,
) -> None:
    """Jobs of two campaigns alternating in the ledger's order (a manifest edited between
    plans can do that) still show as two sections, each in the ledger's order."""
    import sqlite3

    state, _, keys = record(tmp_path, "a.yaml", 300, 300)
    with sqlite3.connect(state / "ledger.db") as conn:  # first, second, first, second, ...
        for i, key in enumerate(keys):
            conn.execute(
                "UPDATE jobs SET job_index = ? WHERE key = ?", [2 * (i % 300) + i // 300, key]
            )
    with open_ledger(default_ledger_url(state), readonly=True) as ledger:
        order = [row.campaign for row in ledger.iter_jobs()]
    assert order[:4] == ["first", "second", "first", "second"]
    out = tmp_path / "report.html"
    build_report(state, out_file=out, now=NOW)
    doc = parse(out.read_text(encoding="utf-8"))
    shown = [[a.attrs["data-key"] for a in s.find("article")] for s in doc.find("section")]
    assert shown == [keys[:300], keys[300:]]

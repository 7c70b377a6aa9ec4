"""A run over a ledger of many jobs (issue 11): what the re-checks and reads of a run start
must still do when they are batched — observable results only, never timings."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.app.common import bulk
from runner.ledger import (
    EventRow,
    JobBrief,
    JobStatus,
    PlanDiff,
    default_ledger_url,
    open_ledger,
)
from runner.ledger.sqlite import SqliteLedger
from runner.mock import MockOptions
from tests.test_executor import FAST_LIMITS, Harness, assert_files_match_mock

MANY = """
version: 1
{limits}
defaults: {{type: text-to-video, duration: 1}}
campaigns:
  - name: many
    prompt: "shot {{a}} {{b}}"
    matrix:
      a: {a}
      b: [x, y, z]
"""
JOBS = 120


def test_rechecking_many_missing_files_sends_each_back_once(tmp_path: Path) -> None:
    """Of 120 downloaded jobs, the 60 whose files are gone (40) or cut short (20) go back to
    be downloaded, each with its own event saying why, and are fetched again without being
    sent again; the 60 whose files are intact are left alone."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=21))
    h.write(MANY.format(limits=FAST_LIMITS, a=list(range(JOBS // 3))))
    assert h.run().counts == {"downloaded": JOBS}
    rows = h.rows()
    out = h.state_dir / "videos"
    gone, cut = rows[0::3], rows[1::3][::2]
    kept = [row for row in rows if row not in gone + cut]
    assert (len(gone), len(cut), len(kept)) == (40, 20, 60)
    for row in gone:
        (out / row.path).unlink()
    for row in cut:
        (out / row.path).write_bytes(b"short")
    result = h.run()
    assert result.counts == {"downloaded": JOBS}
    assert result.outcome.submitted == 0
    assert len(h.submits()) == JOBS  # the first run's only
    with open_ledger(default_ledger_url(h.state_dir)) as ledger:

        def completed(key: str) -> list[EventRow]:
            return [e for e in ledger.events(key) if e.to_status is JobStatus.COMPLETED]

        for row in gone + cut:
            rechecked = completed(row.key)
            assert len(rechecked) == 2, row.key  # the first download's, then the re-check's
            assert rechecked[-1].from_status is JobStatus.DOWNLOADED
            problem = "missing" if row in gone else f"5 bytes, expected {row.bytes}"
            assert rechecked[-1].detail == f"video {row.location} {problem}; downloading again"
        for row in kept:
            assert len(completed(row.key)) == 1
            assert ledger.get(row.key) == row
    assert_files_match_mock(h)


def _spy_on_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], list[str]]:
    """What the SQLite ledger is asked from now on: each ``briefs`` read (its filters), and
    each plan recorded — ``checked`` or ``held`` by ``record_plan_checked``, ``plain`` by
    ``record_plan``."""
    reads: list[dict[str, Any]] = []
    recordings: list[str] = []
    briefs = SqliteLedger.briefs
    checked, plain = SqliteLedger.record_plan_checked, SqliteLedger.record_plan

    def counted(self: SqliteLedger, **where: Any) -> Iterator[JobBrief]:
        reads.append(where)
        return briefs(self, **where)

    def counted_checked(self: SqliteLedger, *args: Any) -> PlanDiff | None:
        diff = checked(self, *args)
        recordings.append("held" if diff is None else "checked")
        return diff

    def counted_plain(self: SqliteLedger, *args: Any) -> PlanDiff:
        recordings.append("plain")
        return plain(self, *args)

    monkeypatch.setattr(SqliteLedger, "briefs", counted)
    monkeypatch.setattr(SqliteLedger, "record_plan_checked", counted_checked)
    monkeypatch.setattr(SqliteLedger, "record_plan", counted_plain)
    return reads, recordings


def test_a_no_op_rerun_reads_the_manifests_briefs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-running a manifest whose jobs are all downloaded writes nothing: its briefs, read
    with the plan in the transaction that records it (no other read of them), serve the
    relocation check, the selection, the credits spent and the engine's counts. When
    recording does write (a job more), they are read again after it."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=22))
    h.write(MANY.format(limits=FAST_LIMITS, a=[1, 2]))
    assert h.run().counts == {"downloaded": 6}
    reads, recordings = _spy_on_reads(monkeypatch)
    result = h.run()
    assert (result.counts, result.outcome.unfinished, result.outcome.submitted) == (
        {"downloaded": 6},
        0,
        0,
    )
    assert result.outcome.statuses == {"downloaded": 6}
    manifest = str(h.manifest.resolve())
    assert reads == []
    assert recordings == ["checked"]
    reads.clear()
    recordings.clear()
    h.write(MANY.format(limits=FAST_LIMITS, a=[1, 2, 3]))  # three jobs more
    result = h.run()
    assert result.counts == {"downloaded": 9}
    assert result.outcome.submitted == 3
    # new jobs: held, for their relocation (a read by keys), then recorded, then read after
    assert recordings == ["held", "plain"]
    assert [r for r in reads if "keys" not in r] == [{"manifest": manifest}]


def test_a_rerun_with_a_video_that_cannot_move_still_reads_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A video whose new place is taken stays where it is (and keeps the plan held on every
    re-run); a re-run that moves nothing and records nothing reads no briefs after it."""
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=23))
    h.write(MANY.format(limits=FAST_LIMITS, a=[1, 2]) + 'output: {filename: "{key}.mp4"}\n')
    assert h.run().counts == {"downloaded": 6}
    opened = open_ledger(default_ledger_url(h.state_dir), readonly=True)
    assert opened is not None
    with opened as ledger:
        first = next(iter(ledger.briefs(manifest=str(h.manifest.resolve()))))
    assert first.location is not None
    taken = Path(first.location).parent / "moved" / f"{first.key}.mp4"
    taken.parent.mkdir()
    taken.write_bytes(b"someone else's")
    h.write(MANY.format(limits=FAST_LIMITS, a=[1, 2]) + 'output: {filename: "moved/{key}.mp4"}\n')
    assert h.run().counts == {"downloaded": 6}  # five moved, the first left where it was
    assert len(list(taken.parent.glob("*.mp4"))) == 6
    assert taken.read_bytes() == b"someone else's"
    reads, recordings = _spy_on_reads(monkeypatch)
    result = h.run()
    assert (result.counts, result.outcome.submitted) == ({"downloaded": 6}, 0)
    assert recordings == ["held", "plain"]  # the first video still cannot move
    assert reads == []  # nothing moved, nothing recorded: the briefs read with the plan serve


def test_plan_and_a_dry_run_read_the_ledger_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plan`` and ``run --dry-run`` on a recorded ledger read its jobs once, for the diff:
    the credits charged so far come from that read (no briefs), the same figure as summing
    the manifest's briefs."""
    from runner import app
    from runner.engine import charged_credits

    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=23))
    prices = "budget: {prices: [{match: {}, credits: 10}]%s}\n"
    h.write(MANY.format(limits=prices % "" + FAST_LIMITS, a=[1, 2]))
    assert h.run().counts == {"downloaded": 6}
    manifest = str(h.manifest.resolve())
    with open_ledger(default_ledger_url(h.state_dir)) as ledger:
        spent = charged_credits(ledger.briefs(manifest=manifest))
    assert spent == 60

    def refused(self: SqliteLedger, **where: Any) -> Iterator[JobBrief]:
        raise AssertionError(f"briefs read: {where}")

    monkeypatch.setattr(SqliteLedger, "briefs", refused)
    summary = app.plan(h.manifest, h.state_dir).document["summary"]
    assert (summary["charged_credits"], summary["estimated_credits"]) == (spent, 0)
    h.write(MANY.format(limits=prices % ", max_total_credits: 75" + FAST_LIMITS, a=[1, 2, 3]))
    dry = h.run(app.RunOptions(dry_run=True))  # three jobs more: room for one
    assert len(dry.would_submit) == 1
    assert "(70 charged so far" in str(dry.outcome.budget_stop)


def test_bulk_steps_pause_garbage_collection_and_restore_it() -> None:
    """bulk() pauses cyclic collection inside (the rows it builds hold no cycles) and leaves
    it as it found it, on or off, an error or not."""
    assert gc.isenabled()
    with bulk():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), bulk():
        raise KeyError("x")
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


class _Built:
    """An object a bulk step builds (one that a weak reference can follow)."""


def test_bulk_steps_leave_what_they_built_out_of_later_collections() -> None:
    """What is alive when bulk() ends is frozen: later collections do not walk it again; it
    is still freed as soon as nothing refers to it."""
    gc.unfreeze()
    try:
        with bulk():
            built = [_Built() for _ in range(1000)]
        ids = {id(b) for b in built}
        assert ids.isdisjoint(id(o) for o in gc.get_objects())  # what collections walk
        gc.collect()  # a later collection leaves the frozen objects where they are
        assert ids.isdisjoint(id(o) for o in gc.get_objects())
        first = weakref.ref(built[0])
        del built
        assert first() is None
    finally:
        gc.unfreeze()

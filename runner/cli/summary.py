"""How a run ended, for people and for scripts: the summary lines and the run document.

The run document (``run --json``, ``run --summary FILE``, ``collect --json``; SPEC v2 §5) is
what a cron wrapper or a notification hook reads; it is written however the run ended — done,
failed, stopped by the budget, interrupted, or refused before it began (``error``).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import exit_code, plural

if TYPE_CHECKING:
    from runner.app import RunResult

HELD_SHOWN = 5  # jobs left for the next run whose reason the summary prints
NOT_LEFT = ("downloaded", "failed", "orphaned")  # statuses that no further run changes


@dataclass
class Ending:
    """One ``run`` (or ``collect``) as the CLI saw it: the results, when it started and
    ended, the selected jobs' statuses afterwards, and the commands that continue it."""

    results: list[RunResult]
    started: datetime
    finished: datetime
    # manifest → status → its selected jobs (--only, --tag), after the run
    selection: dict[str, dict[str, int]] = field(default_factory=dict)
    resume: str = ""  # the command that continues this run (same flags)
    retry: str = ""  # the command that puts its failed jobs back
    limit: int | None = None  # --limit, to say what it left
    submit_only: bool = False
    collect: str = ""  # the command that collects what --submit-only left in flight
    error: BaseException | None = None  # raised before or instead of a result

    @property
    def code(self) -> int:
        """The exit code: the error's, else the worst of the results'."""
        if self.error is not None:
            return exit_code(error=self.error)
        return max((exit_code(result=r) for r in self.results), default=0)

    @property
    def elapsed(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def left(self) -> int:
        """Selected jobs that a later run still has work for (pending or in flight)."""
        return sum(n for c in self.selection.values() for s, n in c.items() if s not in NOT_LEFT)


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _credits(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 3)


def document(ending: Ending) -> dict[str, Any]:
    """The run document of SPEC v2 §5, plus ``elapsed_seconds``, ``left``, ``interrupted``,
    ``error`` and ``resume`` (the command that continues the run, when something is left)."""
    results = ending.results
    outcomes = [r.outcome for r in results]
    counts: dict[str, int] = {}
    for r in results:
        for status, n in ending.selection.get(r.manifest, r.counts).items():
            counts[status] = counts.get(status, 0) + n
    held: dict[str, str] = {}
    for o in outcomes:
        held.update(o.held)
    errors = [f"{r.manifest}: {r.error}" for r in results if r.error]
    if ending.error is not None:
        errors.insert(0, str(ending.error) or type(ending.error).__name__)
    fatal = next((str(o.fatal) for o in outcomes if o.fatal is not None), None)
    return {
        "manifests": [r.manifest for r in results],
        "started": ending.started.isoformat(timespec="seconds"),
        "finished": ending.finished.isoformat(timespec="seconds"),
        "elapsed_seconds": round(ending.elapsed, 3),
        "exit_code": ending.code,
        "counts": counts,
        "submitted": sum(o.submitted for o in outcomes),
        "downloaded": sum(o.downloaded for o in outcomes),
        "failed": sum(o.failed for o in outcomes),
        "held": held,
        "left": ending.left,
        "credits": {
            "estimated_this_run": _credits(sum(o.credits_this_run for o in outcomes)),
            "estimated_total": _credits(sum(o.credits_total for o in outcomes)),
        },
        "budget_stop": next((o.budget_stop for o in outcomes if o.budget_stop), None),
        "stopped": next((o.stopped for o in outcomes if o.stopped), None),
        "interrupted": any(o.interrupted for o in outcomes)
        or isinstance(ending.error, KeyboardInterrupt),
        "fatal": fatal,
        "error": "; ".join(errors) or None,
        "videos": [v for o in outcomes for v in o.videos],
        "resume": ending.resume if ending.left or ending.code else None,
    }


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """Write the run document so that a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def print_summary(ending: Ending, *, stdout: bool = True) -> None:
    """The summary lines: what happened on stdout (unless ``stdout`` is false, as with
    ``--json``), what needs attention and the commands that follow on stderr."""
    for result in ending.results:
        _print_result(result, ending, stdout=stdout)


def _print_result(result: RunResult, ending: Ending, *, stdout: bool) -> None:
    def out(line: str) -> None:
        if stdout:
            click.echo(line)

    def err(line: str) -> None:
        click.echo(line, err=True)

    if result.error is not None:
        err(f"error: cannot collect {result.manifest}: {result.error}")
        return
    o = result.outcome
    counts = ", ".join(f"{n:,} {s}" for s, n in sorted(result.counts.items())) or "nothing to do"
    out(f"{result.manifest}: {plural(result.selected, 'job')}: {counts}")
    spent = f"~{_credits(o.credits_this_run):,} credits estimated this run"
    total = f"~{_credits(o.credits_total):,} for this manifest in all"
    out(f"elapsed {duration(ending.elapsed)}; {spent}, {total}")
    if result.counts.get("downloaded"):
        out(f"videos: {result.output_dir}")
    if o.fatal is not None:
        err(f"error: the provider refused the credentials or account: {o.fatal}")
        return
    if o.interrupted:
        err(f"interrupted: nothing is lost; `{ending.resume}` resumes")
        return
    if o.budget_stop:
        err(o.budget_stop)
    if o.stopped:
        err(o.stopped)
    pending = ending.selection.get(result.manifest, {}).get("pending", 0)
    if pending and not (o.budget_stop or o.stopped):
        why = f" (--limit {ending.limit})" if ending.limit is not None else ""
        err(f"{plural(pending, 'job')} not submitted yet{why}: `{ending.resume}` continues")
    if ending.submit_only and o.submitted:
        err(f"{plural(o.submitted, 'job')} submitted: `{ending.collect}` downloads them")
    if o.unfinished and not ending.submit_only:
        err(
            f"{plural(o.unfinished, 'job')} not finished in this run; "
            f"`{ending.resume}` picks them up"
        )
        for key, reason in list(o.held.items())[:HELD_SHOWN]:
            err(f"  {key}: {reason}")
        if len(o.held) > HELD_SHOWN:
            err(f"  ... and {len(o.held) - HELD_SHOWN} more (`runner show KEY`)")
    failed = result.counts.get("failed")
    if failed:
        err(
            f"{plural(failed, 'job')} failed: `runner jobs --status failed` lists them, "
            f"`{ending.retry}` puts them back for the next run"
        )

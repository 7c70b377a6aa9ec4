"""Executor commands: run, collect, retry, souls — and the progress display."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import cli, common_options, exit_code, get_ctx, handle_errors

if TYPE_CHECKING:
    from runner.app import RunResult
    from runner.engine import Progress



HELD_SHOWN = 5  # jobs left for the next run whose reason the summary prints
PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


class ProgressView:
    """A live rich progress bar on a terminal; one plain line every few seconds otherwise."""

    def __init__(self, *, quiet: bool, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.bar: Any = None
        self.task: Any = None
        self.last: Progress | None = None
        self._last_line = 0.0

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:
            from rich import progress as rp

            self.bar = rp.Progress(
                rp.TextColumn("[bold]videos"),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TextColumn("{task.fields[detail]}"),
                rp.TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=4,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("videos", total=None, detail="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        elif self.last is not None and not self.quiet:
            click.echo(self.line(self.last), err=True)

    @staticmethod
    def detail(p: Progress) -> str:
        pause = f", paused {p.paused_for:.1f}s (Retry-After)" if p.paused_for > 0 else ""
        return (
            f"submitted {p.submitted}, in flight {p.running}, downloaded {p.downloaded}, "
            f"failed {p.failed}, retries {p.retries}, throttled {p.throttled}, "
            f"concurrency {p.concurrency_limit}, {p.rate:.2f} jobs/s{pause}"
        )

    @classmethod
    def line(cls, p: Progress) -> str:
        eta = f", ETA {p.eta:.0f}s" if p.eta is not None else ""
        return f"{p.downloaded + p.failed}/{p.total} done: {cls.detail(p)}{eta}"

    def __call__(self, p: Progress) -> None:
        self.last = p
        if self.quiet:
            return
        if self.bar is not None:
            done = p.downloaded + p.failed
            self.bar.update(self.task, total=p.total, completed=done, detail=self.detail(p))
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_PROGRESS_EVERY:
            self._last_line = now
            click.echo(self.line(p), err=True)


def _summarize(result: RunResult, *, resume_hint: str) -> int:
    """Print a run's summary; return its exit code."""
    code = exit_code(result=result)
    if result.error is not None:
        click.echo(f"error: cannot collect {result.manifest}: {result.error}", err=True)
        return code
    out = result.outcome
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items())) or "nothing to do"
    click.echo(f"{result.manifest}: {result.selected} jobs: {counts}")
    if result.counts.get("downloaded"):
        click.echo(f"videos: {result.output_dir}")
    if out.fatal is not None:
        click.echo(f"error: the provider refused the credentials or account: {out.fatal}", err=True)
        return code
    if out.interrupted:
        click.echo(f"interrupted: nothing is lost; run `{resume_hint}` to resume", err=True)
        return code
    if out.budget_stop:
        click.echo(out.budget_stop, err=True)
    if out.unfinished:
        click.echo(
            f"{out.unfinished} jobs not finished in this run; `{resume_hint}` picks them up",
            err=True,
        )
        for key, reason in list(out.held.items())[:HELD_SHOWN]:
            click.echo(f"  {key}: {reason}", err=True)
        if len(out.held) > HELD_SHOWN:
            click.echo(f"  ... and {len(out.held) - HELD_SHOWN} more (`runner show KEY`)", err=True)
    if result.counts.get("failed"):
        click.echo(
            f"{result.counts['failed']} jobs failed: `runner jobs --status failed` lists them, "
            f"`runner retry MANIFEST` sends them again",
            err=True,
        )
    return code


@cli.command("run")
@click.argument(
    "manifests", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--only", multiple=True, metavar="CAMPAIGN", help="Only this campaign (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only campaigns with this tag.")
@click.option("--limit", type=click.IntRange(min=0), help="Submit at most N new jobs.")
@click.option("--submit-only", is_flag=True, help="Submit, then stop; `collect` finishes.")
@click.option("--retry-failed", is_flag=True, help="Send failed jobs again (new key).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Generations in flight.")
@click.option("--rps", type=click.FloatRange(min=0.01), help="API calls per second.")
@click.option("--max-credits", type=click.FloatRange(min=0), help="Credit cap for this run.")
@click.option("--dry-run", is_flag=True, help="Show what would be submitted; write nothing.")
@common_options
@handle_errors
def run_cmd(manifests: tuple[Path, ...], **flags: Any) -> None:
    """Submit, poll and download manifests' jobs until each is done or failed."""
    from runner import app

    ctx = get_ctx()
    options = app.RunOptions(
        only=tuple(flags["only"]),
        tags=tuple(flags["tags"]),
        limit=flags["limit"],
        submit_only=flags["submit_only"],
        retry_failed=flags["retry_failed"],
        concurrency=flags["concurrency"],
        rps=flags["rps"],
        max_credits=flags["max_credits"],
        dry_run=flags["dry_run"],
    )
    if options.dry_run:
        for result in app.run_many(manifests, ctx.state_dir, options):
            credits = sum(j.credits for j in result.would_submit)
            if len(manifests) > 1:
                click.echo(f"{result.manifest}:")
            for job in result.would_submit:
                click.echo(f"{job.key}  {job.campaign}  {job.request.get('prompt', '')}")
            click.echo(f"would submit {len(result.would_submit)} jobs, ~{credits:g} credits")
            if result.outcome.budget_stop:
                click.echo(f"then stop: {result.outcome.budget_stop}")
        return
    with ProgressView(quiet=ctx.quiet) as view:
        env = app.Environment(handle_signals=True, on_progress=view)
        results = app.run_many(manifests, ctx.state_dir, options, env)
    hint = "runner run " + " ".join(str(m) for m in manifests)
    sys.exit(max(_summarize(result, resume_hint=hint) for result in results))


@cli.command("collect")
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@common_options
@handle_errors
def collect_cmd(manifest: Path | None) -> None:
    """Poll and download what is already in flight; submit nothing."""
    from runner import app

    ctx = get_ctx()
    with ProgressView(quiet=ctx.quiet) as view:
        env = app.Environment(handle_signals=True, on_progress=view)
        results = app.collect(manifest, ctx.state_dir, env)
    if not results:
        click.echo("nothing in flight")
        return
    code = max(_summarize(r, resume_hint="runner collect") for r in results)
    sys.exit(code)


@cli.command("retry")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--job", "keys", multiple=True, metavar="KEY", help="Only this job (repeatable).")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign.")
@common_options
@handle_errors
def retry_cmd(manifest: Path, keys: tuple[str, ...], campaigns: tuple[str, ...]) -> None:
    """Put failed jobs back to pending with a new idempotency key; `run` sends them."""
    from runner import app

    count = app.retry(manifest, get_ctx().state_dir, keys=keys, campaigns=campaigns)
    click.echo(f"{count} failed jobs back to pending; `runner run {manifest}` sends them")



@cli.command("souls")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@common_options
@handle_errors
def souls_cmd(manifest: Path) -> None:
    """Train the manifest's soul models that are not ready yet, and list them all."""
    from runner import app

    result = app.train_souls(manifest, get_ctx().state_dir)
    records, failures = result.souls, result.failures
    for soul in records:
        error = f"  {soul.error}" if soul.error else ""
        click.echo(f"{soul.name}  {soul.status}  {soul.model_id or '-'}{error}")
    recorded = {soul.name for soul in records}
    for name, reason in failures.items():
        if name not in recorded:  # failed before the provider took it (e.g. an upload)
            click.echo(f"{name}  failed  -  {reason}")
    if not records and not failures:
        click.echo("this manifest defines no souls")
    sys.exit(exit_code(failed=bool(failures)))



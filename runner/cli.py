"""The command line: parses options, calls the library, prints, maps errors to exit codes.

This is the only module that imports click or prints. Every command is a thin layer over a
library function that tests can call directly.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runner.errors import (
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RunnerError,
)

if TYPE_CHECKING:
    from runner.executor import Progress
    from runner.runs import RunResult

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATE = "state"


@dataclass
class Context:
    """Options common to every command, accepted before or after the command name."""

    state: Path | None = None
    verbose: int = 0
    quiet: bool = False

    @property
    def state_dir(self) -> Path:
        """``--state`` wins over ``RUNNER_STATE``, which wins over ``./state``."""
        if self.state is not None:
            return self.state
        return Path(os.environ.get("RUNNER_STATE") or DEFAULT_STATE)


def _set_state(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).state = value


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        ctx.ensure_object(Context).verbose += value


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).quiet = True


def common_options(f: F) -> F:
    """``--state``, ``-v`` and ``-q`` on the group and on every command."""
    f = click.option(
        "--state",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_set_state,
        expose_value=False,
        is_eager=True,
        help="State directory (default $RUNNER_STATE or ./state).",
    )(f)
    f = click.option(
        "-v",
        "--verbose",
        count=True,
        callback=_set_verbose,
        expose_value=False,
        help="More detail (repeatable). Never shows secrets.",
    )(f)
    f = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        callback=_set_quiet,
        expose_value=False,
        help="Only errors and the final summary.",
    )(f)
    return f


def get_ctx() -> Context:
    return click.get_current_context().ensure_object(Context)


def handle_errors(f: F) -> F:
    """Turn library errors into one-paragraph messages and the SPEC's exit codes."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except RunnerError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def echo_json(doc: Any) -> None:
    """Print exactly one JSON document on stdout."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def _configure_logging(ctx: Context) -> None:
    level = logging.WARNING
    if ctx.verbose >= 2:
        level = logging.DEBUG
    elif ctx.verbose == 1:
        level = logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # httpx/httpcore log request lines and headers at DEBUG; keep them out of our output
    # whatever -v says, so an Authorization header can never reach a log.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="runner")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Batch runner for Higgsfield AI video generation, driven by YAML manifests."""
    _configure_logging(ctx.ensure_object(Context))


# --- manifest commands: validate, plan, schema -------------------------------------------
# Library imports stay inside the commands so this section does not touch the shared header.


@cli.command()
@common_options
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
@handle_errors
def validate(manifests: tuple[Path, ...]) -> None:
    """Check manifests: print `ok: N jobs` for each, or its error (exit 2)."""
    from runner.errors import EXIT_USAGE, ManifestError
    from runner.jobs import expand
    from runner.manifest import load_manifest

    several = len(manifests) > 1
    failed = False
    for path in manifests:
        try:
            jobs = expand(load_manifest(path))
        except ManifestError as err:
            if not several:
                raise
            click.echo(f"error: {err}", err=True)
            failed = True
            continue
        click.echo(f"{path}: ok: {len(jobs)} jobs" if several else f"ok: {len(jobs)} jobs")
    if failed:
        click.get_current_context().exit(EXIT_USAGE)


def _plan_statuses(
    state_dir: Path, manifest_path: Path, jobs: list[Any]
) -> tuple[dict[str, str], int]:
    """Ledger statuses of these jobs (``runner.jobs.Job``), and how many of the manifest's
    ledger jobs are orphaned.

    Reads the ledger without the executor lock and writes nothing; no ledger: every job is new.
    """
    from runner.ledger import Ledger

    ledger = Ledger.open_readonly(state_dir)
    if ledger is None:
        return {}, 0
    with ledger:
        diff = ledger.diff(str(manifest_path), jobs)
    return diff.statuses, diff.orphaned


@cli.command()
@common_options
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def plan(manifest: Path, as_json: bool) -> None:
    """Expand a manifest and compare it with the ledger. Writes nothing."""
    from runner.jobs import expand, plan_document
    from runner.manifest import load_manifest

    loaded = load_manifest(manifest)
    jobs = expand(loaded)
    statuses, orphaned = _plan_statuses(get_ctx().state_dir, loaded.path, jobs)
    doc = plan_document(jobs, statuses, orphaned)
    if as_json:
        echo_json(doc)
        return
    if not get_ctx().quiet:
        _print_plan_table(doc, [j.credits for j in jobs])
    s = doc["summary"]
    click.echo(
        f"{s['total']} jobs: {s['new']} new, {s['done']} done, {s['in_flight']} in flight, "
        f"{s['failed']} failed, {s['orphaned']} orphaned; "
        f"estimated credits for new jobs: {s['estimated_credits']}"
    )


def _print_plan_table(doc: dict[str, Any], credits: list[float]) -> None:
    def row_text(values: dict[str, Any]) -> str:
        text = ", ".join(f"{k}={v}" for k, v in values.items())
        return text if len(text) <= 60 else text[:57] + "..."

    rows = [
        (j["key"], j["campaign"], j["status"], f"{c:g}", j["path"], row_text(j["vars"]))
        for j, c in zip(doc["jobs"], credits, strict=True)
    ]
    headers = ("KEY", "CAMPAIGN", "STATUS", "CREDITS", "PATH", "ROW")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        # Keys, campaigns, statuses and paths stay whole (people copy them); the row is cut
        # short, and the path column is left out when the terminal is too narrow for it.
        shown = [0, 1, 2, 3, 4, 5] if sum(widths[:5]) + 30 <= console.width else [0, 1, 2, 3, 5]
        table = Table(box=None, pad_edge=False)
        for i in shown:
            table.add_column(
                headers[i],
                no_wrap=True,
                min_width=widths[i] if i != 5 else None,
                justify="right" if headers[i] == "CREDITS" else "left",
                overflow="ellipsis",
            )
        for r in rows:
            table.add_row(*(r[i] for i in shown))
        console.print(table)
        return
    for r in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@cli.command()
@common_options
@handle_errors
def schema() -> None:
    """Print the manifest's JSON Schema (for yaml-language-server and other editors)."""
    from runner.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False))


# --- ledger read commands: status, jobs, show, export -------------------------------------
# All read-only: they open the ledger with ``Ledger.open_readonly`` (no lock, no writes, no
# files created) so they work during a run, and print empty results when there is no ledger.

_JOB_STATUSES = (
    "pending", "submitting", "queued", "running", "completed", "downloaded", "failed", "orphaned",
)  # fmt: skip
_STATUS_CHOICE = click.Choice(_JOB_STATUSES)


def _ledger_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Rows under headers: a rich table on a terminal, aligned plain text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _manifest_column(manifest: Path) -> str:
    """The ledger's name for a manifest: its absolute path, as ``Manifest.path`` has it."""
    return str(manifest.expanduser().absolute())


@cli.command()
@common_options
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def status(manifest: Path | None, as_json: bool) -> None:
    """Job counts per campaign and status (of one manifest, if given)."""
    from runner.ledger import Ledger

    counts: dict[str, dict[str, int]] = {}
    ledger = Ledger.open_readonly(get_ctx().state_dir)
    if ledger is not None:
        with ledger:
            counts = ledger.counts(_manifest_column(manifest) if manifest else None)
    totals = {
        s: n for s in _JOB_STATUSES if (n := sum(c.get(s, 0) for c in counts.values()))
    }
    if as_json:
        echo_json({"campaigns": counts, "totals": totals})
        return
    if not counts:
        click.echo("no jobs in the ledger")
        return
    headers = ("CAMPAIGN", *(s.upper() for s in totals), "TOTAL")
    rows = [
        (name, *(str(c.get(s, 0)) for s in totals), str(sum(c.values())))
        for name, c in counts.items()
    ]
    rows.append(("total", *(str(n) for n in totals.values()), str(sum(totals.values()))))
    _ledger_table(headers, rows)


@cli.command()
@common_options
@click.option("--status", "statuses", multiple=True, type=_STATUS_CHOICE, help="Repeatable.")
@click.option("--campaign", "campaigns", multiple=True, help="Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def jobs(statuses: tuple[str, ...], campaigns: tuple[str, ...], as_json: bool) -> None:
    """One line per job in the ledger: key, campaign, status, attempts, file, error."""
    from runner.ledger import Ledger

    ledger = Ledger.open_readonly(get_ctx().state_dir)
    rows = []
    if ledger is not None:
        with ledger:
            rows = ledger.jobs(status=statuses or None, campaign=campaigns or None)
    if as_json:
        echo_json([row.to_dict() for row in rows])
        return
    if not rows:
        if not get_ctx().quiet:
            click.echo("no jobs", err=True)
        return
    _ledger_table(
        ("KEY", "CAMPAIGN", "STATUS", "ATTEMPTS", "PATH", "ERROR"),
        [
            (r.key, r.campaign, r.status.value, str(r.attempts), r.path, r.error or "")
            for r in rows
        ],
    )


def _video_file(state_dir: Path, manifest: str, path: str) -> str:
    """Where a job's video lives: absolute when its manifest still loads, else relative."""
    from runner.errors import RunnerError
    from runner.manifest import load_manifest

    try:
        folder = load_manifest(manifest).output_dir(state_dir)
    except (RunnerError, OSError):
        return f"{path} (relative to the manifest's output.dir)"
    file = folder / path
    return f"{file}{'' if file.is_file() else ' (not on disk)'}"


@cli.command()
@common_options
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def show(key: str, as_json: bool) -> None:
    """A job's request, state, file and full event history (KEY may be a unique prefix)."""
    from runner.errors import LedgerError
    from runner.ledger import Ledger

    state_dir = get_ctx().state_dir
    ledger = Ledger.open_readonly(state_dir)
    if ledger is None:
        raise LedgerError(f"no job {key!r}: there is no ledger in {state_dir} yet")
    with ledger:
        row = ledger.get(ledger.match_key(key))
        assert row is not None
        events = ledger.events(row.key)
    if as_json:
        echo_json({"job": row.to_dict(), "events": [e.to_dict() for e in events]})
        return
    size = f"{row.bytes} bytes, sha256 {row.sha256}" if row.bytes is not None else "not downloaded"
    fields = [
        ("key", row.key),
        ("campaign", row.campaign),
        ("manifest", row.manifest),
        ("status", f"{row.status.value} (attempts {row.attempts})"),
        ("error", row.error or "-"),
        ("idempotency key", row.idempotency_key),
        ("generation id", row.generation_id or "-"),
        ("video url", row.video_url or "-"),
        ("file", f"{_video_file(state_dir, row.manifest, row.path)}; {size}"),
        ("credits", f"{row.credits:g}"),
        ("soul", row.soul or "-"),
        ("tags", ", ".join(row.tags) or "-"),
        ("vars", json.dumps(row.vars, ensure_ascii=False)),
        ("updated", row.updated_at),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name.ljust(width)}  {value}")
    click.echo("request")
    for line in json.dumps(row.request, indent=2, ensure_ascii=False).splitlines():
        click.echo(f"  {line}")
    click.echo("events")
    for e in events:
        change = (
            f"{e.from_status or '-'} → {e.to_status}"
            if e.from_status != e.to_status
            else f"({e.to_status})"
        )
        click.echo(f"  {e.at}  {change}  {e.detail or ''}".rstrip())


@cli.command()
@common_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="CSV (JSON columns as JSON text) or one JSON object per line.",
)
@handle_errors
def export(fmt: str) -> None:
    """Print the ledger's jobs table to stdout, for spreadsheets and scripts."""
    import csv
    import dataclasses

    from runner.ledger import JobRow, Ledger

    ledger = Ledger.open_readonly(get_ctx().state_dir)
    rows = []
    if ledger is not None:
        with ledger:
            rows = ledger.jobs()
    out = sys.stdout
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        return
    names = [f.name for f in dataclasses.fields(JobRow)]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        doc = row.to_dict()
        writer.writerow(
            [
                "" if doc[n] is None
                else json.dumps(doc[n], ensure_ascii=False) if isinstance(doc[n], dict | list)
                else doc[n]
                for n in names
            ]
        )  # fmt: skip


# --- executor commands: run, collect, retry, souls ----------------------------------------

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


def _run_exit(result: RunResult, *, resume_hint: str) -> int:
    """Print a run's summary; return the SPEC's exit code."""
    out = result.outcome
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items())) or "nothing to do"
    click.echo(f"{result.manifest}: {result.selected} jobs: {counts}")
    if result.counts.get("downloaded"):
        click.echo(f"videos: {result.output_dir}")
    if out.fatal is not None:
        click.echo(f"error: the provider refused the credentials or account: {out.fatal}", err=True)
        return EXIT_FATAL
    if out.interrupted:
        click.echo(f"interrupted: nothing is lost; run `{resume_hint}` to resume", err=True)
        return EXIT_INTERRUPTED
    if out.budget_stop:
        click.echo(out.budget_stop, err=True)
    if out.unfinished:
        click.echo(
            f"{out.unfinished} jobs not finished in this run; `{resume_hint}` picks them up",
            err=True,
        )
    if result.counts.get("failed"):
        click.echo(
            f"{result.counts['failed']} jobs failed: `runner jobs --status failed` lists them, "
            f"`runner retry MANIFEST` sends them again",
            err=True,
        )
    if out.budget_stop or out.unfinished or result.counts.get("failed"):
        return EXIT_FAILED
    return EXIT_OK


@cli.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
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
def run_cmd(manifest: Path, **flags: Any) -> None:
    """Submit, poll and download a manifest's jobs until each is done or failed."""
    from runner import runs

    ctx = get_ctx()
    options = runs.RunOptions(
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
        result = runs.run(manifest, ctx.state_dir, options)
        credits = sum(j.credits for j in result.would_submit)
        for job in result.would_submit:
            click.echo(f"{job.key}  {job.campaign}  {job.request.get('prompt', '')}")
        click.echo(f"would submit {len(result.would_submit)} jobs, ~{credits:g} credits")
        return
    with ProgressView(quiet=ctx.quiet) as view:
        env = runs.Environment(handle_signals=True, on_progress=view)
        result = runs.run(manifest, ctx.state_dir, options, env)
    sys.exit(_run_exit(result, resume_hint=f"runner run {manifest}"))


@cli.command("collect")
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@common_options
@handle_errors
def collect_cmd(manifest: Path | None) -> None:
    """Poll and download what is already in flight; submit nothing."""
    from runner import runs

    ctx = get_ctx()
    with ProgressView(quiet=ctx.quiet) as view:
        env = runs.Environment(handle_signals=True, on_progress=view)
        results = runs.collect(manifest, ctx.state_dir, env)
    if not results:
        click.echo("nothing in flight")
        return
    code = max(_run_exit(r, resume_hint="runner collect") for r in results)
    sys.exit(code)


@cli.command("retry")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--job", "keys", multiple=True, metavar="KEY", help="Only this job (repeatable).")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign.")
@common_options
@handle_errors
def retry_cmd(manifest: Path, keys: tuple[str, ...], campaigns: tuple[str, ...]) -> None:
    """Put failed jobs back to pending with a new idempotency key; `run` sends them."""
    from runner import runs

    count = runs.retry(manifest, get_ctx().state_dir, keys=keys, campaigns=campaigns)
    click.echo(f"{count} failed jobs back to pending; `runner run {manifest}` sends them")



@cli.command("souls")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@common_options
@handle_errors
def souls_cmd(manifest: Path) -> None:
    """Train the manifest's soul models that are not ready yet, and list them all."""
    from runner import runs

    records, failures = runs.train_souls(manifest, get_ctx().state_dir)
    for soul in records:
        error = f"  {soul.error}" if soul.error else ""
        click.echo(f"{soul.name}  {soul.status}  {soul.model_id or '-'}{error}")
    if not records:
        click.echo("this manifest defines no souls")
    sys.exit(EXIT_FAILED if failures else EXIT_OK)


# --- mock server --------------------------------------------------------------------------


@cli.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8808,
    show_default=True,
    help="Port; 0 picks a free one (printed on stdout).",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="Mean generation time in seconds; each takes a uniform draw from [S/2, 3S/2].",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of generations that fail.",
)
@click.option(
    "--nsfw-rate", type=click.FloatRange(0.0, 1.0), metavar="P", help="Share flagged NSFW."
)
@click.option(
    "--rate-429",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of API calls answered 429.",
)
@click.option(
    "--retry-after-mode",
    type=click.Choice(["seconds", "date", "none", "mixed"]),
    help="Retry-After on 429s: delay-seconds, HTTP-date, absent, or any of them.",
)
@click.option(
    "--retry-after", type=click.FloatRange(min=0), metavar="S", help="Retry-After value in seconds."
)
@click.option(
    "--rate-5xx", type=click.FloatRange(0.0, 1.0), metavar="P", help="Share answered 500/502/503."
)
@click.option(
    "--concurrency-limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Generations queued or running per account (platform: 400, seed: 429 over it).",
)
@click.option(
    "--drop-rate",
    "drop_after_accept_rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of submits accepted, then answered by a dropped connection.",
)
@click.option(
    "--truncate-rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of video bodies cut short.",
)
@click.option(
    "--url-ttl",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Video URLs expire after S seconds.",
)
@click.option(
    "--soul-seconds",
    "soul_training_seconds",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Soul training time.",
)
@click.option(
    "--soul-fail-rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of soul trainings that fail.",
)
@click.option("--seed", type=int, help="Seed for the fault generator (reproducible runs).")
@click.option(
    "--video-size", type=click.IntRange(min=0), metavar="BYTES", help="Pad videos to this size."
)
@click.option(
    "--api-key",
    "seed_api_keys",
    multiple=True,
    metavar="KEY",
    help="Accepted higgsfieldapi key (repeatable; default test-key).",
)
@click.option(
    "--platform-key",
    "platform_api_keys",
    multiple=True,
    metavar="ID:SECRET",
    help="Accepted higgsfield key (repeatable; default test-id:test-secret).",
)
@common_options
@handle_errors
def mock_server_cmd(host: str, port: int, latency: float | None, **knobs: Any) -> None:
    """Serve the built-in mock Higgsfield API (both dialects) until Ctrl-C or SIGTERM.

    Base URLs: {origin}/api/v1 for higgsfieldapi, {origin} for higgsfield.
    """
    import signal

    from runner.errors import EXIT_OK, UsageError
    from runner.mock import base_urls, create_app
    from runner.mock.options import MockOptions
    from runner.mock.server import bind_socket, origin_of, serve

    settings = {k: v for k, v in knobs.items() if v is not None and v != ()}
    if latency is not None:
        settings.update(latency_min=latency / 2, latency_max=latency * 1.5)
    try:
        options = MockOptions(**settings)
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        sock = bind_socket(host, port)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None

    def _stop(_signum: int, _frame: object) -> None:
        raise SystemExit(EXIT_OK)

    # uvicorn catches SIGTERM while serving, then re-raises it once stopped: end quietly then.
    signal.signal(signal.SIGTERM, _stop)
    try:
        origin = origin_of(sock)
        urls = base_urls(origin)
        click.echo(f"mock Higgsfield API listening on {origin}")
        click.echo(f"  higgsfieldapi base URL: {urls['higgsfieldapi']}")
        click.echo(f"  higgsfield base URL:    {urls['higgsfield']}")
        sys.stdout.flush()
        serve(create_app(options), sock, access_log=get_ctx().verbose > 0)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped, not a failure
    finally:
        sock.close()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="runner")

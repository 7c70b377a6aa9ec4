"""Executor commands: run, collect, retry, souls — and the progress display."""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import (
    cli,
    command_line,
    common_options,
    echo_json,
    example,
    exit_code,
    get_ctx,
    handle_errors,
    json_option,
    plural,
    quiet_pipe,
    selection_options,
)
from runner.cli.progress import PLAIN_EVERY, ProgressView, activity
from runner.cli.summary import Ending, document, print_summary, write_document
from runner.errors import UsageError

if TYPE_CHECKING:
    from runner.app import RunOptions


def _view(every: float) -> ProgressView:
    """The progress display on the console that log records share."""
    ctx = get_ctx()
    return ProgressView(console=ctx.console, quiet=ctx.quiet, verbose=ctx.verbose, every=every)


def _continue_flags(options: RunOptions) -> list[str]:
    """The flags of ``run`` that a continuing run must repeat to do the same work (not
    --until: its time has come when a run stops for it)."""
    flags: list[str] = []
    for name in options.only:
        flags += ["--only", name]
    for tag in options.tags:
        flags += ["--tag", tag]
    for flag, value in (
        ("--limit", options.limit),
        ("--concurrency", options.concurrency),
        ("--rps", options.rps),
        ("--max-credits", options.max_credits),
        ("--max-failures", options.max_failures),
    ):
        if value is not None:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if options.submit_only:
        flags.append("--submit-only")
    return flags


def _finish(ending: Ending, *, as_json: bool, summary_file: Path | None) -> None:
    """Print the summary (or the document), write ``--summary``, exit with the run's code."""
    doc = document(ending)
    code = ending.code
    try:
        if summary_file is not None:
            try:
                write_document(summary_file, doc)
            except OSError as err:
                click.echo(f"error: cannot write the summary {summary_file}: {err}", err=True)
                code = code or 2
        print_summary(ending, stdout=not as_json)
        if as_json:
            echo_json(doc)
    except BrokenPipeError:
        quiet_pipe()  # the exit code is the run's, whoever stopped reading
    sys.exit(code)


def _selection(manifest: str, options: RunOptions) -> dict[str, int]:
    """Statuses of the jobs this run selected (its manifest's, through --only and --tag),
    after it: what is done and what is left, --limit or not."""
    from runner import app

    ctx = get_ctx()
    return app.selection_counts(
        ctx.state_dir, manifest, campaigns=options.only, tags=options.tags, ledger=ctx.ledger_url
    )


@cli.command(
    "run",
    short_help="Submit, poll and download a manifest's jobs.",
    epilog=example(
        "runner run manifests/nightly.yaml",
        "runner run nightly.yaml --tag nightly --max-credits 500 --summary last-run.json",
        "runner run nightly.yaml --limit 20 --dry-run",
    ),
)
@click.argument(
    "manifests", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@selection_options
@click.option("--limit", type=click.IntRange(min=0), help="Submit at most N new jobs.")
@click.option("--submit-only", is_flag=True, help="Submit, then stop; `collect` finishes.")
@click.option("--retry-failed", is_flag=True, help="Send failed jobs again (new key).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Generations in flight.")
@click.option("--rps", type=click.FloatRange(min=0.01), help="API calls per second.")
@click.option("--max-credits", type=click.FloatRange(min=0), help="Credit cap for this run.")
@click.option("--until", metavar="TIME", help="No new submissions after TIME (HH:MM or ISO).")
@click.option(
    "--max-failures", type=click.IntRange(min=1), help="No new submissions after N failures."
)
@click.option("--dry-run", is_flag=True, help="Show what would be submitted; write nothing.")
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0),
    default=PLAIN_EVERY,
    metavar="SECONDS",
    help="Seconds between progress lines when stderr is not a terminal (default 30).",
)
@click.option(
    "--summary",
    "summary_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the run document (JSON) here, however the run ends.",
)
@json_option
@common_options
@handle_errors
def run_cmd(
    manifests: tuple[Path, ...],
    summary_file: Path | None,
    as_json: bool,
    progress_every: float,
    **flags: Any,
) -> None:
    """Submit, poll and download manifests' jobs until each is done or failed. Resumable at
    any moment: Ctrl-C (or a crash) loses nothing, and the next run picks up. Several
    manifests run in one process (sharing an account's limits)."""
    from runner import app
    from runner.settings import parse_until

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
        until=parse_until(flags["until"]) if flags["until"] else None,
        max_failures=flags["max_failures"],
    )
    if options.dry_run:
        _dry_run(manifests, options, as_json=as_json)
        return
    ending = Ending(
        [],
        started=datetime.now().astimezone(),
        finished=datetime.now().astimezone(),
        resume=command_line("run", *manifests, *_continue_flags(options)),
        retry=command_line("retry", manifests[0] if len(manifests) == 1 else "MANIFEST"),
        collect=command_line("collect", *manifests),
        limit=options.limit,
        submit_only=options.submit_only,
    )
    try:
        with _view(progress_every) as view:
            env = app.Environment(handle_signals=True, on_progress=view)
            ending.results = app.run_many(
                manifests, ctx.state_dir, options, env, ledger=ctx.ledger_url
            )
        for result in ending.results:
            ending.selection[result.manifest] = _selection(result.manifest, options)
    except BaseException as err:
        if not isinstance(err, Exception | KeyboardInterrupt) or not (as_json or summary_file):
            raise
        ending.error = err
    ending.finished = datetime.now().astimezone()
    if ending.error is not None:
        # Said on stderr as any error is; the document still goes where it was asked for.
        if summary_file is not None:
            write_document(summary_file, document(ending))
        if as_json:
            echo_json(document(ending))
        raise ending.error
    _finish(ending, as_json=as_json, summary_file=summary_file)


def _dry_run(manifests: tuple[Path, ...], options: RunOptions, *, as_json: bool) -> None:
    """What a run would submit, per manifest (with --limit and the budget applied)."""
    from runner import app

    results = app.run_many(manifests, get_ctx().state_dir, options, ledger=get_ctx().ledger_url)
    if as_json:
        echo_json(
            {
                "manifests": [
                    {
                        "manifest": r.manifest,
                        "would_submit": [
                            {"key": j.key, "campaign": j.campaign, "credits": j.credits,
                             "request": j.request}
                            for j in r.would_submit
                        ],
                        "estimated_credits": sum(j.credits for j in r.would_submit),
                        "budget_stop": r.outcome.budget_stop,
                    }
                    for r in results
                ]
            }
        )  # fmt: skip
        return
    for result in results:
        credits = sum(j.credits for j in result.would_submit)
        if len(manifests) > 1:
            click.echo(f"{result.manifest}:")
        for job in result.would_submit:
            click.echo(f"{job.key}  {job.campaign}  {job.request.get('prompt', '')}")
        click.echo(f"would submit {plural(len(result.would_submit), 'job')}, ~{credits:g} credits")
        if result.outcome.budget_stop:
            click.echo(f"then stop: {result.outcome.budget_stop}")


@cli.command(
    "collect",
    short_help="Poll and download what is in flight; submit nothing.",
    epilog=example("runner collect", "runner collect manifests/nightly.yaml --json"),
)
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0),
    default=PLAIN_EVERY,
    metavar="SECONDS",
    help="Seconds between progress lines when stderr is not a terminal (default 30).",
)
@json_option
@common_options
@handle_errors
def collect_cmd(manifest: Path | None, progress_every: float, as_json: bool) -> None:
    """Poll and download what is already in flight (of one manifest, or of every manifest
    in the ledger); submit nothing."""
    from runner import app

    ctx = get_ctx()
    started = datetime.now().astimezone()
    with _view(progress_every) as view:
        env = app.Environment(handle_signals=True, on_progress=view)
        results = app.collect(manifest, ctx.state_dir, env, ledger=ctx.ledger_url)
    again = command_line("collect", *([manifest] if manifest else []))
    ending = Ending(
        results,
        started=started,
        finished=datetime.now().astimezone(),
        resume=again,
        retry=command_line("retry", manifest or "MANIFEST"),
    )
    if not results and not as_json:
        click.echo("nothing in flight")
        return
    _finish(ending, as_json=as_json, summary_file=None)


def _resolve_keys(given: tuple[str, ...], statuses: dict[str, str], manifest: Path) -> list[str]:
    """``--job`` values (full keys or unique prefixes, as ``show`` takes) as the manifest's
    job keys; each must be a failed job, since only those go back."""
    keys: list[str] = []
    for prefix in given:
        matches = [k for k in statuses if k.startswith(prefix)] if prefix else []
        if not matches:
            raise UsageError(f"--job {prefix!r} names no job of {manifest}")
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise UsageError(f"--job {prefix!r} matches several jobs ({shown}); give more of it")
        keys.append(matches[0])
    for key in keys:
        status = statuses[key]
        if status == "failed":
            continue
        if status in ("new", "pending"):
            why = f"has not been sent yet: `{command_line('run', manifest)}` sends it"
        else:
            why = f"is {status}, not failed: only failed jobs go back to pending"
        raise UsageError(f"job {key} {why} (`{command_line('show', key)}`)")
    return keys


@cli.command(
    "retry",
    short_help="Put failed jobs back to pending for the next run.",
    epilog=example(
        "runner retry manifests/nightly.yaml",
        "runner retry nightly.yaml --job 7b8e73 --job 0c1d --campaign teaser",
    ),
)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--job", "keys", multiple=True, metavar="KEY", help="Only this job; a key prefix will do."
)
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign.")
@json_option
@common_options
@handle_errors
def retry_cmd(
    manifest: Path, keys: tuple[str, ...], campaigns: tuple[str, ...], as_json: bool
) -> None:
    """Put failed jobs back to pending with a new idempotency key; `run` sends them."""
    from runner import app

    state, ledger = get_ctx().state_dir, get_ctx().ledger_url
    planned = app.plan(manifest, state, ledger=ledger).document["jobs"]
    statuses = {j["key"]: j["status"] for j in planned}
    full = _resolve_keys(keys, statuses, manifest)
    count = app.retry(manifest, state, keys=full, campaigns=campaigns, ledger=ledger)
    if as_json:
        echo_json({"manifest": str(manifest), "retried": count, "keys": full or None})
        return
    run = command_line("run", manifest)
    if count == 0:
        click.echo(f"no failed jobs to retry in {manifest}")
        return
    click.echo(f"{plural(count, 'failed job')} back to pending; `{run}` sends them")


@cli.command(
    "souls",
    short_help="Train a manifest's soul models ahead of a run.",
    epilog=example("runner souls manifests/soul-csv.yaml"),
)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@common_options
@handle_errors
def souls_cmd(manifest: Path, as_json: bool) -> None:
    """Train the manifest's soul models that are not ready yet, and list them all."""
    from runner import app

    ctx = get_ctx()
    with activity(ctx.console, "training the soul models that are not ready yet", quiet=ctx.quiet):
        result = app.train_souls(manifest, ctx.state_dir, ledger=ctx.ledger_url)
    records, failures = result.souls, result.failures
    if as_json:
        echo_json({"souls": [asdict(s) for s in records], "failures": failures})
        sys.exit(exit_code(failed=bool(failures)))
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

"""Fleet commands (SPEC §8): enqueue work in the ledger, and workers that do it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runner.cli.base import (
    cli,
    common_options,
    echo_json,
    example,
    exit_code,
    get_ctx,
    handle_errors,
    json_option,
    plural,
)


@cli.command(
    "enqueue",
    short_help="Record manifests' plans and settings for workers.",
    epilog=example(
        "runner enqueue nightly.yaml --ledger postgresql://runner@db/runner",
    ),
)
@click.argument(
    "manifests", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@json_option
@common_options
@handle_errors
def enqueue_cmd(manifests: tuple[Path, ...], as_json: bool) -> None:
    """Record the manifests' jobs and settings (provider, the NAME of the key variable,
    limits, budget, output) in the ledger without executing them, their local files (image_url,
    soul images) uploaded first: `runner worker` processes on any host then do the work."""
    from runner import app

    ctx = get_ctx()
    diffs = app.enqueue(manifests, ctx.state_dir, ledger=ctx.ledger_url)
    if as_json:
        echo_json({path: {"new": d.new, "total": d.total} for path, d in diffs})
        return
    for path, diff in diffs:
        click.echo(f"{path}: enqueued {plural(diff.total, 'job')} ({diff.new} new)")


@cli.command(
    "worker",
    short_help="Execute the jobs of every manifest in the ledger.",
    epilog=example(
        "RUNNER_LEDGER=postgresql://runner@db/runner runner worker --until 06:00",
        "runner worker --idle-exit",
    ),
)
@click.option("--until", metavar="TIME", help="Stop at TIME (HH:MM or ISO).")
@click.option("--idle-exit", is_flag=True, help="Exit once nothing is left to do.")
@json_option
@common_options
@handle_errors
def worker_cmd(until: str | None, idle_exit: bool, as_json: bool) -> None:
    """Execute the jobs of every manifest recorded in the ledger (by `run` or `enqueue`),
    claiming them alongside other workers and runs; waits for new work unless --idle-exit."""
    from runner import app
    from runner.settings import parse_until

    ctx = get_ctx()
    env = app.Environment(handle_signals=True)
    result = app.worker(
        ctx.state_dir,
        env,
        ledger=ctx.ledger_url,
        until=parse_until(until) if until else None,
        idle_exit=idle_exit,
    )
    if as_json:
        echo_json(
            {
                "passes": result.passes,
                "submitted": sum(o.submitted for o in result.outcomes),
                "downloaded": result.downloaded,
                "failed": result.failed,
            }
        )
    click.echo(
        f"worker: {plural(result.downloaded, 'job')} downloaded, {result.failed} failed "
        f"in {plural(result.passes, 'pass', 'passes')}",
        err=True,
    )
    sys.exit(exit_code(failed=bool(result.failed)))

"""The report command: a self-contained HTML gallery of the jobs and their videos."""

from __future__ import annotations

from pathlib import Path

import click

from runner.cli.base import (
    cli,
    common_options,
    echo_json,
    example,
    get_ctx,
    handle_errors,
    json_option,
    plural,
    selection_options,
)
from runner.cli.ledger_cmds import STATUS_CHOICE

REPORT_FILE = "report.html"  # written into the state directory unless -o says otherwise


@cli.command(
    "report",
    short_help="Write an HTML gallery of the jobs and their videos.",
    epilog=example(
        "runner report",
        "runner report manifests/nightly.yaml --status downloaded -o nightly.html",
    ),
)
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to write the HTML (default <state>/{REPORT_FILE}).",
)
@click.option("--status", "statuses", multiple=True, type=STATUS_CHOICE, help="Repeatable.")
@selection_options
@json_option
@common_options
@handle_errors
def report_cmd(
    manifest: Path | None,
    output: Path | None,
    statuses: tuple[str, ...],
    only: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write an HTML gallery of the jobs (of one manifest, if given) and their videos."""
    from runner.report import build_report

    state_dir = get_ctx().state_dir
    summary = build_report(
        state_dir,
        manifest,
        out_file=output or state_dir / REPORT_FILE,
        campaigns=only,
        statuses=statuses,
        tags=tags,
    )
    if as_json:
        echo_json(
            {
                "path": str(summary.path),
                "jobs": summary.jobs,
                "videos": summary.videos,
                "counts": summary.counts,
            }
        )
        return
    click.echo(f"{summary.path}: {plural(summary.jobs, 'job')}, {plural(summary.videos, 'video')}")

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
from runner.errors import UsageError

REPORT_FILE = "report.html"  # written into the state directory unless -o says otherwise


@cli.command(
    "report",
    short_help="Write an HTML gallery of the jobs and their videos.",
    epilog=example(
        "runner report",
        "runner report manifests/nightly.yaml --status downloaded -o nightly.html",
        "runner report --bundle night-0501 && zip -r night-0501.zip night-0501",
    ),
)
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to write the HTML (default <state>/{REPORT_FILE}).",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Write DIR/{REPORT_FILE} and copy its videos into DIR/videos (zip it, share it).",
)
@click.option("--status", "statuses", multiple=True, type=STATUS_CHOICE, help="Repeatable.")
@selection_options
@json_option
@common_options
@handle_errors
def report_cmd(
    manifest: Path | None,
    output: Path | None,
    bundle: Path | None,
    statuses: tuple[str, ...],
    only: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write an HTML gallery of the jobs (of one manifest, if given) and their videos: per
    campaign a card per job with its player, seed or variant, soul, credits and status;
    filters by campaign, status and tag."""
    from runner.report import build_report

    if bundle is not None and output is not None:
        raise UsageError("give -o or --bundle, not both (a bundle's page is DIR/report.html)")
    state_dir = get_ctx().state_dir
    summary = build_report(
        state_dir,
        manifest,
        out_file=bundle / REPORT_FILE if bundle else output or state_dir / REPORT_FILE,
        campaigns=only,
        statuses=statuses,
        tags=tags,
        bundle=bundle is not None,
        ledger=get_ctx().ledger_url,
    )
    if as_json:
        echo_json(
            {
                "path": str(summary.path),
                "jobs": summary.jobs,
                "videos": summary.videos,
                "counts": summary.counts,
                "copied": summary.copied,
            }
        )
        return
    click.echo(f"{summary.path}: {plural(summary.jobs, 'job')}, {plural(summary.videos, 'video')}")
    if bundle is not None:
        copied = plural(summary.copied, "video file")
        click.echo(f"bundle: {bundle} ({copied} copied); zip the folder to share it")

"""The report command: a self-contained HTML gallery of the jobs and their videos."""

from __future__ import annotations

from pathlib import Path

import click

from runner.cli.base import cli, common_options, get_ctx, handle_errors

REPORT_FILE = "report.html"  # written into the state directory unless -o says otherwise


@cli.command("report")
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to write the HTML (default <state>/{REPORT_FILE}).",
)
@common_options
@handle_errors
def report_cmd(manifest: Path | None, output: Path | None) -> None:
    """Write an HTML gallery of the jobs (of one manifest, if given) and their videos."""
    from runner.report import build_report

    state_dir = get_ctx().state_dir
    summary = build_report(state_dir, manifest, out_file=output or state_dir / REPORT_FILE)
    click.echo(f"{summary.path}: {summary.jobs} jobs, {summary.videos} videos")

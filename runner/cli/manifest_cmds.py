"""Manifest commands: validate, plan, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import (
    cli,
    common_options,
    echo_error,
    echo_json,
    example,
    exit_code,
    get_ctx,
    handle_errors,
    json_option,
    plural,
    selection_options,
)

if TYPE_CHECKING:
    from runner.app import Planned
    from runner.errors import ManifestError
    from runner.jobs import Job

# Library imports stay inside the commands: `runner --help` and manifest errors stay fast.


@cli.command(
    short_help="Check manifests and count their jobs.",
    epilog=example("runner validate manifests/*.yaml", "runner validate nightly.yaml --json"),
)
@common_options
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@handle_errors
def validate(manifests: tuple[Path, ...], as_json: bool) -> None:
    """Check manifests: print `ok: N jobs` for each, or its errors (exit 2)."""
    from runner import app

    results = app.validate(manifests, get_ctx().state_dir)
    bad = any(r.error is not None for r in results)
    if as_json:
        echo_json(
            {
                "ok": not bad,
                "manifests": [
                    {
                        "path": str(r.path),
                        "ok": r.error is None,
                        "jobs": r.jobs,
                        "errors": _error_docs(r.error),
                    }
                    for r in results
                ],
            }
        )
        click.get_current_context().exit(exit_code(bad_input=bad))
    if len(results) == 1 and results[0].error is not None:
        raise results[0].error
    for result in results:
        if result.error is not None:
            echo_error(result.error)
        elif len(results) > 1:
            click.echo(f"{result.path}: ok: {plural(result.jobs or 0, 'job')}")
        else:
            click.echo(f"ok: {plural(result.jobs or 0, 'job')}")
    click.get_current_context().exit(exit_code(bad_input=bad))


def _error_docs(error: ManifestError | None) -> list[dict[str, Any]]:
    """A manifest's problems as JSON: where (file, line, column, field) and what."""
    if error is None:
        return []
    return [
        {
            "file": e.file,
            "line": e.line,
            "column": e.column,
            "field": e.field,
            "message": e.message,
            "text": str(e),
        }
        for e in (error, *error.also)
    ]


def _cap(value: float | None) -> str:
    return "no cap" if value is None else f"cap {value:g}"


@cli.command(
    short_help="Compare a manifest with the ledger: new, done, credits.",
    epilog=example(
        "runner plan manifests/nightly.yaml", "runner plan nightly.yaml --only teaser --json"
    ),
)
@common_options
@click.argument("manifest", type=click.Path(path_type=Path))
@selection_options
@click.option("--estimate", is_flag=True, help="Price jobs with the provider's estimate endpoint.")
@json_option
@handle_errors
def plan(
    manifest: Path, only: tuple[str, ...], tags: tuple[str, ...], estimate: bool, as_json: bool
) -> None:
    """Expand a manifest and compare it with the ledger: new, done, in flight, failed,
    orphaned, and the estimated credits. Writes nothing."""
    from runner import app

    planned = app.plan(
        manifest, get_ctx().state_dir, estimate=estimate, ledger=get_ctx().ledger_url
    )
    summary, jobs, statuses = planned.summary, planned.jobs, planned.statuses
    if only or tags:
        picked = app.select(jobs, app.RunOptions(only=only, tags=tags))
        summary, jobs, statuses = _selected(planned, picked)
    if as_json:
        from runner.cli.jsonout import Columns
        from runner.jobs import plan_columns

        # the document's jobs a column each: the same bytes, without a mapping per job
        echo_json({"summary": summary, "jobs": Columns(plan_columns(jobs, statuses))})
        return
    if not get_ctx().quiet:
        _print_plan_table(jobs, statuses)
    s = summary
    click.echo(
        f"{plural(s['total'], 'job')}: {s['new']} new, {s['done']} done, "
        f"{s['in_flight']} in flight, {s['failed']} failed, {s['orphaned']} orphaned; "
        f"estimated credits for new jobs: {s['estimated_credits']} ({_cap(s['max_credits'])} "
        f"per run); manifest total with them: {s['estimated_total_credits']} "
        f"({s['charged_credits']} charged so far, {_cap(s['max_total_credits'])})"
    )


def _selected(planned: Planned, picked: list[Job]) -> tuple[dict[str, Any], list[Job], list[str]]:
    """The plan of the jobs ``--only``/``--tag`` picked: their summary (counts and credits,
    against the manifest's budget figures, which stay the manifest's), jobs and statuses."""
    from runner.jobs import number, plan_summary

    status_of = dict(zip([j.key for j in planned.jobs], planned.statuses, strict=True))
    statuses = [status_of[j.key] for j in picked]
    summary = planned.summary
    narrowed = plan_summary(picked, statuses, summary["orphaned"])
    narrowed |= {
        "charged_credits": summary["charged_credits"],
        "estimated_total_credits": number(
            float(summary["charged_credits"] + narrowed["estimated_credits"])
        ),
        "max_credits": summary["max_credits"],
        "max_total_credits": summary["max_total_credits"],
    }
    return narrowed, picked, statuses


def _print_plan_table(jobs: list[Job], statuses: list[str]) -> None:
    def row_text(values: dict[str, Any]) -> str:
        text = ", ".join(f"{k}={v}" for k, v in values.items())
        return text if len(text) <= 60 else text[:57] + "..."

    rows = [
        (j.key, j.campaign, status, f"{j.credits:g}", j.path, row_text(j.vars))
        for j, status in zip(jobs, statuses, strict=True)
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


@cli.command(
    short_help="Print the manifest JSON Schema for editors.",
    epilog=example("runner schema > manifest.schema.json"),
)
@common_options
@handle_errors
def schema() -> None:
    """Print the manifest's JSON Schema (for yaml-language-server and other editors)."""
    from runner.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False))

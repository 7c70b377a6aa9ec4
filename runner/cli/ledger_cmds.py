"""Read-only ledger commands: status, jobs, show, export. They never take the lock."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import (
    cli,
    common_options,
    echo_json,
    example,
    get_ctx,
    handle_errors,
    json_option,
    selection_options,
)

if TYPE_CHECKING:
    from runner.ledger import JobRow

# All read-only (``runner.app.queries``): no lock, no writes, no files created; they work
# during a run, and print empty results when there is no ledger.

_JOB_STATUSES = (
    "pending", "submitting", "queued", "running", "completed", "downloaded", "failed", "orphaned",
)  # fmt: skip
STATUS_CHOICE = click.Choice(_JOB_STATUSES)


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


def nothing_found(*, filtered: bool = False) -> str:
    """Why a read found nothing, naming where it looked: no ledger at all (a mistyped
    ``--state`` is the usual cause), or a ledger without (such) jobs."""
    from runner.ledger import default_ledger_url

    ctx = get_ctx()
    ledger = default_ledger_url(ctx.state_dir)
    if not Path(ledger).exists():
        return (
            f"no ledger at {ledger} (state directory {ctx.state_dir} from {ctx.state_origin}); "
            f"nothing has run there yet"
        )
    return f"no {'such ' if filtered else ''}jobs in the ledger {ledger}"


def filtered_rows(
    *,
    manifest: Path | None = None,
    statuses: Sequence[str] = (),
    only: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> list[JobRow]:
    """The ledger's rows of one manifest (if given), with these statuses, campaigns, tags
    (any of each; all rows when none is given)."""
    return list(filtered(manifest=manifest, statuses=statuses, only=only, tags=tags))


def filtered(
    *,
    manifest: Path | None = None,
    statuses: Sequence[str] = (),
    only: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> Iterator[JobRow]:
    """:func:`filtered_rows`, streamed from one snapshot of the ledger."""
    from runner import app

    name = app.manifest_column(manifest) if manifest is not None else None
    wanted = set(tags)
    for row in app.iter_jobs(
        get_ctx().state_dir, statuses=statuses, campaigns=only, ledger=get_ctx().ledger_url
    ):
        if (name is None or row.manifest == name) and (not wanted or wanted & set(row.tags)):
            yield row


@cli.command(
    short_help="Job counts per campaign and status.",
    epilog=example("runner status", "runner status manifests/nightly.yaml --tag nightly --json"),
)
@common_options
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@selection_options
@json_option
@handle_errors
def status(
    manifest: Path | None, only: tuple[str, ...], tags: tuple[str, ...], as_json: bool
) -> None:
    """Job counts per campaign and status (of one manifest, if given; of the campaigns that
    --only and --tag pick)."""
    from runner import app
    from runner.ledger import JobStatus

    if only or tags:
        counts: dict[str, dict[str, int]] = {}
        for row in filtered_rows(manifest=manifest, only=only, tags=tags):
            per = counts.setdefault(row.campaign, {})
            per[row.status.value] = per.get(row.status.value, 0) + 1
        totals = {
            s.value: n for s in JobStatus if (n := sum(c.get(s.value, 0) for c in counts.values()))
        }
        doc: dict[str, Any] = {"campaigns": counts, "totals": totals}
    else:
        doc = app.status(get_ctx().state_dir, manifest, ledger=get_ctx().ledger_url)
    counts, totals = doc["campaigns"], doc["totals"]
    if as_json:
        echo_json(doc)
        return
    if not counts:
        click.echo(nothing_found(filtered=bool(manifest or only or tags)))
        return
    headers = ("CAMPAIGN", *(s.upper() for s in totals), "TOTAL")
    rows = [
        (name, *(str(c.get(s, 0)) for s in totals), str(sum(c.values())))
        for name, c in counts.items()
    ]
    rows.append(("total", *(str(n) for n in totals.values()), str(sum(totals.values()))))
    _ledger_table(headers, rows)


@cli.command(
    short_help="One line per job: key, campaign, status, file, error.",
    epilog=example("runner jobs --status failed", "runner jobs --campaign teaser --json"),
)
@common_options
@click.option("--status", "statuses", multiple=True, type=STATUS_CHOICE, help="Repeatable.")
@selection_options
@json_option
@handle_errors
def jobs(
    statuses: tuple[str, ...], only: tuple[str, ...], tags: tuple[str, ...], as_json: bool
) -> None:
    """One line per job in the ledger: key, campaign, status, attempts, file, error."""
    rows = filtered_rows(statuses=statuses, only=only, tags=tags)
    if as_json:
        echo_json([row.to_dict() for row in rows])
        return
    if not rows:
        if not get_ctx().quiet:
            click.echo(nothing_found(filtered=bool(statuses or only or tags)), err=True)
        return
    _ledger_table(
        ("KEY", "CAMPAIGN", "STATUS", "ATTEMPTS", "PATH", "ERROR"),
        [(r.key, r.campaign, r.status.value, str(r.attempts), r.path, r.error or "") for r in rows],
    )


def _video_file(location: str | None, size: int | None) -> str:
    """Where a job's video is, as the ledger recorded it, and whether it is still there."""
    from runner.outputs import exists

    if location is None:
        return "-"
    return f"{location}{'' if exists(location, size) else ' (not on disk)'}"


@cli.command(
    short_help="One job: request, state, file and event history.",
    epilog=example("runner show 7b8e7364", "runner show 7b8e --json"),
)
@common_options
@click.argument("key")
@json_option
@handle_errors
def show(key: str, as_json: bool) -> None:
    """A job's request, state, file and full event history (KEY may be a unique prefix)."""
    from runner import app

    shown = app.show(get_ctx().state_dir, key, ledger=get_ctx().ledger_url)
    row, events = shown.job, shown.events
    if as_json:
        echo_json(shown.to_dict())
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
        ("output name", row.path),
        ("location", f"{_video_file(row.location, row.bytes)}; {size}"),
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


@cli.command(
    short_help="Print the jobs table as CSV, JSON lines or JSON.",
    epilog=example(
        "runner export > jobs.csv",
        "runner export --format json --status downloaded --campaign teaser",
    ),
)
@common_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "json"]),
    default="csv",
    show_default=True,
    help="CSV (JSON columns as JSON text), one JSON object per line, or one JSON list.",
)
@click.option("--status", "statuses", multiple=True, type=STATUS_CHOICE, help="Repeatable.")
@selection_options
@handle_errors
def export(
    fmt: str, statuses: tuple[str, ...], only: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Print the ledger's jobs table to stdout (every column, each video's location), for
    spreadsheets and scripts."""
    import csv
    import dataclasses

    from runner.cli.jsonout import iter_indented
    from runner.ledger import JobRow

    rows = filtered(statuses=statuses, only=only, tags=tags)
    out = sys.stdout
    if fmt == "json":  # echo_json's document, written a job at a time
        first = True
        for row in rows:
            text = "".join(iter_indented(row.to_dict(), 1))
            out.write(("[\n  " if first else ",\n  ") + text)
            first = False
        out.write("[]\n" if first else "\n]\n")
        return
    if fmt == "jsonl":
        for row in rows:
            out.write(row.to_json() + "\n")
        return
    names = [f.name for f in dataclasses.fields(JobRow)]
    json_columns = {"request", "vars", "tags"}  # as JSON text, not decoded
    writer = csv.writer(out, lineterminator="\n")  # None as "", a status as its word
    writer.writerow(names)
    for row in rows:
        writer.writerow([row.json_text(n) if n in json_columns else getattr(row, n) for n in names])

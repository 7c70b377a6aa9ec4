"""The cancel command: generations still queued at the provider are cancelled (refunded)."""

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
)


@cli.command(
    "cancel",
    short_help="Cancel generations still queued at the provider.",
    epilog=example(
        "runner cancel manifests/nightly.yaml",
        "runner cancel nightly.yaml --campaign teaser --job 7b8e7364a1c2d3e4",
    ),
)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--job", "keys", multiple=True, metavar="KEY", help="Only this job (repeatable).")
@click.option("--campaign", "campaigns", multiple=True, metavar="NAME", help="Only this campaign.")
@json_option
@common_options
@handle_errors
def cancel_cmd(
    manifest: Path, keys: tuple[str, ...], campaigns: tuple[str, ...], as_json: bool
) -> None:
    """Cancel a manifest's generations still queued at the provider (refunded); name the ones
    already running."""
    from runner import app

    done = app.cancel(
        manifest,
        get_ctx().state_dir,
        keys=keys,
        campaigns=campaigns,
        ledger=get_ctx().ledger_url,
    )
    if as_json:
        echo_json({"cancelled": done.cancelled, "not_cancelled": done.not_cancelled})
    else:
        for key in done.cancelled:
            click.echo(f"{key}  cancelled (refunded)")
        for key, why in done.not_cancelled.items():
            click.echo(f"{key}  not cancelled: {why}")
        if not done.cancelled and not done.not_cancelled:
            click.echo("nothing queued to cancel")
    sys.exit(exit_code(failed=bool(done.not_cancelled)))

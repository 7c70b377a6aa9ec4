"""The built-in mock Higgsfield API server."""

from __future__ import annotations

import sys
from typing import Any

import click

from runner.cli.base import cli, common_options, example, get_ctx, handle_errors
from runner.errors import EXIT_OK


@cli.command(
    "mock-server",
    short_help="Serve the built-in mock Higgsfield API.",
    epilog=example(
        "runner mock-server --port 0 --latency 2 --rate-429 0.1",
        "HIGGSFIELD_BASE_URL=http://127.0.0.1:8808/api/v1 HIGGSFIELD_API_KEY=test-key \\",
        "  runner run manifests/demo.yaml",
    ),
)
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
    "--queue-limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="Platform account queue: run --concurrency-limit at once, queue N more, then 429 "
    "account_queue_full.",
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
    "--result-ttl",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Platform results expire S seconds after they complete (default 7 days).",
)
@click.option(
    "--glitch-rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of status calls answered by a glitch (each kind once per generation).",
)
@click.option(
    "--glitch",
    "glitches",
    multiple=True,
    type=click.Choice(
        ["html", "no_status", "numeric_status", "not_found", "no_url", "redirect", "regressed"]
    ),
    help="A glitch kind --glitch-rate may inject (repeatable; default all).",
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
@click.option(
    "--drop-soul-rate",
    "drop_soul_answer_rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="P",
    help="Share of soul trainings accepted, then answered by a dropped connection.",
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

    from runner.errors import UsageError
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

    def announce() -> None:  # once serving: whoever reads this may stop it at once
        origin = origin_of(sock)
        urls = base_urls(origin)
        click.echo(f"mock Higgsfield API listening on {origin}")
        click.echo(f"  higgsfieldapi base URL: {urls['higgsfieldapi']}")
        click.echo(f"  higgsfield base URL:    {urls['higgsfield']}")
        sys.stdout.flush()

    try:
        serve(create_app(options), sock, access_log=get_ctx().verbose > 0, announce=announce)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped, not a failure
    finally:
        sock.close()

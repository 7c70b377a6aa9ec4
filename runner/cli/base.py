"""The frame every command shares: common options, the error-to-exit-code mapping, logging."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
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
    EXIT_USAGE,
    RunnerError,
)

if TYPE_CHECKING:
    from runner.app import RunResult

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
        obj = ctx.ensure_object(Context)
        obj.verbose += value
        # `runner run m.yaml -v`: the group has set logging up already; raise its level now.
        _configure_logging(obj)


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


def exit_code(
    *,
    error: BaseException | None = None,
    result: RunResult | None = None,
    failed: bool = False,
    bad_input: bool = False,
) -> int:
    """The SPEC's exit code, decided here alone: from the error a command raised, from how a
    run ended (``RunResult``), or from what a command found (``failed``: some work failed, as
    a soul that could not be trained; ``bad_input``: a manifest among several is bad)."""
    if error is not None:
        if isinstance(error, RunnerError):
            return error.exit_code
        if isinstance(error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        return EXIT_USAGE  # OSError: a state directory or output file the user must fix
    if bad_input:
        return EXIT_USAGE
    if result is None:
        return EXIT_FAILED if failed else EXIT_OK
    out = result.outcome
    if out.fatal is not None:
        return EXIT_FATAL
    if out.interrupted:
        return EXIT_INTERRUPTED
    if result.error or out.budget_stop or out.unfinished or result.counts.get("failed"):
        return EXIT_FAILED
    return EXIT_OK


def handle_errors(f: F) -> F:
    """Turn library errors into one-paragraph messages and the SPEC's exit codes."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except RunnerError as err:
            echo_error(err)
            sys.exit(exit_code(error=err))
        except KeyboardInterrupt as err:
            click.echo("interrupted", err=True)
            sys.exit(exit_code(error=err))
        except OSError as err:
            where = f" {err.filename}" if err.filename else ""
            click.echo(f"error: cannot use{where}: {err.strerror or err}", err=True)
            sys.exit(exit_code(error=err))

    return wrapper  # type: ignore[return-value]


def echo_error(err: RunnerError) -> None:
    """One paragraph on stderr per problem (a manifest may have several)."""
    click.echo(f"error: {err}", err=True)
    for other in getattr(err, "also", ()):
        click.echo(f"error: {other}", err=True)


def echo_json(doc: Any) -> None:
    """Print exactly one JSON document on stdout."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def _configure_logging(ctx: Context) -> None:
    level = logging.WARNING
    if ctx.verbose >= 2:
        level = logging.DEBUG
    elif ctx.verbose == 1:
        level = logging.INFO
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
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



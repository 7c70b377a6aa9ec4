"""The frame every command shares: the group, common options, the error-to-exit-code mapping,
logging, and the small helpers of every renderer (plurals, examples, selections)."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runner.cli.jsonout import iter_indented
from runner.errors import (
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    RunnerError,
)

if TYPE_CHECKING:
    from rich.console import Console

    from runner.app import RunResult

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATE = "state"
PROG = "runner"
# `runner --help` lists commands in the order of a night's work; commands not named here
# (added later) follow in alphabetical order.
WORKFLOW = (
    "validate", "plan", "souls", "run", "collect", "status", "jobs", "show", "retry",
    "cancel", "report", "export", "enqueue", "worker", "schema", "mock-server",
)  # fmt: skip
LOG_TIME = "%Y-%m-%d %H:%M:%S"  # timestamps of plain log and progress lines (local time)


@dataclass
class Context:
    """Options common to every command, accepted before or after the command name."""

    state: Path | None = None
    ledger: str | None = None  # --ledger URL
    verbose: int = 0
    quiet: bool = False
    _console: Console | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        """``--state`` wins over ``RUNNER_STATE``, which wins over ``./state``."""
        if self.state is not None:
            return self.state
        return Path(os.environ.get("RUNNER_STATE") or DEFAULT_STATE)

    @property
    def ledger_url(self) -> str | None:
        """``--ledger`` wins over ``RUNNER_LEDGER``; ``None``: ``<state>/ledger.db``."""
        return self.ledger or os.environ.get("RUNNER_LEDGER") or None

    @property
    def state_origin(self) -> str:
        """Where the state directory came from, for messages that name it."""
        if self.state is not None:
            return "--state"
        return "$RUNNER_STATE" if os.environ.get("RUNNER_STATE") else "the default"

    @property
    def console(self) -> Console:
        """The one stderr console: progress and (on a terminal) log lines share it, so that
        a log line is printed above a live display instead of through it."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console


class Group(click.Group):
    """The ``runner`` group: commands listed in workflow order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [name for name in WORKFLOW if name in self.commands]
        return known + sorted(name for name in self.commands if name not in WORKFLOW)


def example(*lines: str) -> str:
    """A command's epilog: its examples, printed as written at the end of its help."""
    body = "\n".join(f"  {line}" for line in lines)
    return f"\b\nExample{'s' if len(lines) > 1 else ''}:\n{body}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 job``, ``2 jobs``, ``1,960 jobs``."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"


def _set_state(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).state = value


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        obj = ctx.ensure_object(Context)
        obj.verbose += value
        # `runner run m.yaml -v`: the group has set logging up already; raise its level now.
        configure_logging(obj)


def _set_ledger(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).ledger = value


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).quiet = True


def common_options(f: F) -> F:
    """``--state``, ``--ledger``, ``-v`` and ``-q`` on the group and on every command."""
    f = click.option(
        "--state",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_set_state,
        expose_value=False,
        is_eager=True,
        help="State directory (default $RUNNER_STATE or ./state).",
    )(f)
    f = click.option(
        "--ledger",
        metavar="URL",
        callback=_set_ledger,
        expose_value=False,
        is_eager=True,
        help="Ledger URL: a SQLite file or postgresql://… "
        "(default $RUNNER_LEDGER, else <state>/ledger.db).",
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


def json_option(f: F) -> F:
    """``--json``: one JSON document on stdout and nothing else there."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
    )(f)


def selection_options(f: F) -> F:
    """``--only CAMPAIGN`` (also spelled ``--campaign``) and ``--tag TAG``, both repeatable."""
    f = click.option(
        "--tag", "tags", multiple=True, metavar="TAG", help="Only campaigns with this tag."
    )(f)
    f = click.option(
        "--only",
        "--campaign",
        "only",
        multiple=True,
        metavar="CAMPAIGN",
        help="Only this campaign (repeatable).",
    )(f)
    return f


def get_ctx() -> Context:
    return click.get_current_context().ensure_object(Context)


def command_line(*args: str | Path) -> str:
    """A command the user can paste: ``runner`` and ``args`` quoted for the shell, with the
    ``--state`` of this invocation when it was given on the command line."""
    words = [PROG, *map(str, args)]
    ctx = get_ctx()
    if ctx.state is not None:
        words += ["--state", str(ctx.state)]
    return shlex.join(words)


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


def quiet_pipe() -> None:
    """The reader of stdout went away (``runner jobs | head -1``): point stdout at
    /dev/null so that nothing else (the interpreter's last flush included) complains."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (tests)
        pass


def handle_errors(f: F) -> F:
    """Turn library errors into one-paragraph messages and the SPEC's exit codes; a closed
    pipe on stdout is a quiet exit 0."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except BrokenPipeError:
            quiet_pipe()
            sys.exit(EXIT_OK)
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
    """Print exactly one JSON document on stdout (written as it is encoded, a batch of pieces
    at a time: the document of 100,000 jobs is never one string in memory); the bytes are
    ``json.dumps(doc, indent=2, ensure_ascii=False, default=str)``'s."""
    batch: list[str] = []
    for piece in iter_indented(doc):
        batch.append(piece)
        if len(batch) == 4096:
            click.echo("".join(batch), nl=False)
            batch.clear()
    click.echo("".join(batch))


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it per invocation)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _may_be_terminal(ctx: Context) -> bool:
    """``False`` only where the rich console would find stderr no terminal, told without
    building one (importing rich.console is ~30 ms of a command's start): stderr is no tty
    and neither ``TTY_COMPATIBLE=1`` nor a non-empty ``FORCE_COLOR`` makes it one."""
    if ctx._console is not None:
        return True
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR"):
        return True
    try:
        return sys.stderr.isatty()
    except ValueError:  # closed
        return False


def configure_logging(ctx: Context) -> None:
    """Log records go to stderr: through the shared rich console on a terminal (so they do
    not tear the live progress display), as timestamped plain lines otherwise (cron logs)."""
    level = logging.WARNING
    if ctx.verbose >= 2:
        level = logging.DEBUG
    elif ctx.verbose == 1:
        level = logging.INFO
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_runner", False)]:
        root.removeHandler(old)
    handler: logging.Handler
    if _may_be_terminal(ctx) and ctx.console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(
            console=ctx.console, show_path=False, markup=False, log_time_format="[%X]"
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", LOG_TIME)
        )
    setattr(handler, "_runner", True)  # noqa: B010 (marks the handler this module owns)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx/httpcore log request lines and headers at DEBUG; keep them out of our output
    # whatever -v says, so an Authorization header can never reach a log. asyncio's
    # "Using selector" line is noise.
    for name in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=example(
        "runner validate manifests/nightly.yaml",
        "runner plan manifests/nightly.yaml",
        "runner run manifests/nightly.yaml --summary state/last-run.json",
        "runner report && xdg-open state/report.html",
    )
    + "\n\n\b\nShell completion (bash; zsh_source and fish_source likewise):\n"
    '  eval "$(_RUNNER_COMPLETE=bash_source runner)"',
)
@common_options
@click.version_option(package_name="runner")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Batch runner for Higgsfield AI video generation, driven by YAML manifests.

    A manifest's campaigns expand into jobs; `run` submits them, polls, downloads the videos
    and records everything in a ledger, so any run resumes where the last one stopped.
    """
    configure_logging(ctx.ensure_object(Context))

"""The command line: parses options, calls the library, prints, maps errors to exit codes.

This package is the only place that imports click or prints. Every command is a thin layer
over a library function that tests can call directly. ``base`` holds the group and what every
command shares; each other module holds the commands of one pipeline stage.
"""

from __future__ import annotations

import sys

# Importing a command module registers its commands on the group.
from runner.cli import (  # noqa: F401
    cancel_cmds,
    ledger_cmds,
    manifest_cmds,
    mock_cmds,
    report_cmds,
    run_cmds,
    worker_cmds,
)
from runner.cli.base import cli, quiet_pipe
from runner.cli.progress import ProgressView

__all__ = ["ProgressView", "cli", "main"]


def main() -> None:
    """Console-script entry point. Output still buffered when the command ends is flushed
    here, so that a reader that went away (``| head``) ends the program quietly, exit 0."""
    try:
        try:
            cli(prog_name="runner")
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        quiet_pipe()
        sys.exit(0)

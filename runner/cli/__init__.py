"""The command line: parses options, calls the library, prints, maps errors to exit codes.

This package is the only place that imports click or prints. Every command is a thin layer
over a library function that tests can call directly. ``base`` holds the group and what every
command shares; each other module holds the commands of one pipeline stage.
"""

from __future__ import annotations

# Importing a command module registers its commands on the group.
from runner.cli import ledger_cmds, manifest_cmds, mock_cmds, report_cmds, run_cmds  # noqa: F401
from runner.cli.base import cli
from runner.cli.run_cmds import ProgressView

__all__ = ["ProgressView", "cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="runner")

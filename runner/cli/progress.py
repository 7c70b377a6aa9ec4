"""What a run shows while it goes: a live display on a terminal, timestamped lines otherwise.

The live display fits the terminal's width. At 60 columns and more it always has a bar,
done/total, failures, the elapsed time and an ETA; more counters join the first line only
where they fit, and a second line holds the detail (retries, throttling, concurrency) and
whatever the run is waiting for, said as what it is: a soul's model in training, a
Retry-After pause, a budget that stopped submissions, an interrupt. Log records share the
console (see ``base.configure_logging``), so they print above the display, never through it.

Off a terminal (cron, CI, a pipe) the same facts are one line every ``every`` seconds (30 by
default), each with a timestamp, plus one when the run begins and one when it ends.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import LOG_TIME

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from runner.engine import Progress

PLAIN_EVERY = 30.0  # seconds between plain progress lines (run/collect --progress-every)
REFRESH_PER_SECOND = 4
WIDE = 60  # from this width on, the first line always has a bar
MIN_BAR = 10  # the narrowest bar worth drawing


def clock(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate_text(per_second: float) -> str:
    """Jobs per second, or per minute when generations take longer than a second."""
    if per_second >= 1:
        return f"{per_second:.1f} jobs/s"
    return f"{per_second * 60:.1f} jobs/min"


def waits(p: Progress) -> list[str]:
    """What the run is waiting for, in words (empty when it is simply working)."""
    said: list[str] = []
    for soul, jobs in sorted(p.souls.items()):
        said.append(f"soul {soul}: model in training, {jobs} job{'s' * (jobs != 1)} waiting")
    if p.paused_for > 0:
        said.append(f"paused {p.paused_for:.0f}s: the provider asked to wait (Retry-After)")
    if p.stopped == "interrupted":
        said.append("stopping: finishing the calls under way (Ctrl-C again stops at once)")
    elif p.stopped:
        left = p.at_provider
        said.append(f"{p.stopped}: no new submissions; finishing {left} in flight")
    return said


def counters(p: Progress) -> list[str]:
    """The detail: retries, throttling, the concurrency the provider allows right now."""
    return [
        f"retries {p.retries}",
        f"throttled {p.throttled}",
        f"concurrency {p.concurrency_limit}",
    ]


def plain_line(p: Progress, *, verbose: int = 0) -> str:
    """One progress line for logs (without its timestamp)."""
    parts = [
        f"{p.done:,}/{p.total:,} done",
        f"{p.failed:,} failed",
        f"in flight {p.at_provider}",
        f"submitted {p.submitted:,}",
        f"elapsed {clock(p.elapsed)}",
    ]
    if p.eta is not None:
        parts.append(f"ETA {clock(p.eta)}")
    if p.rate > 0:
        parts.append(rate_text(p.rate))
    line = ", ".join(parts)
    extra = waits(p) + (counters(p) if verbose else [])
    return f"{line}; {'; '.join(extra)}" if extra else line


def stamp(now: datetime | None = None) -> str:
    return (now or datetime.now()).strftime(LOG_TIME)


class ProgressView:
    """The progress callback of ``run`` and ``collect``: a live display on a terminal (see
    the module docstring), timestamped plain lines otherwise, nothing with ``quiet``."""

    def __init__(
        self,
        *,
        console: Console,
        quiet: bool = False,
        verbose: int = 0,
        every: float = PLAIN_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.verbose = verbose
        self.every = every
        self.monotonic = monotonic
        self.wall = wall
        self.last: Progress | None = None
        self._live: Any = None
        self._next_line: float | None = None

    # --- the callback ---------------------------------------------------------------------

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:
            from rich.live import Live

            self._live = Live(self, console=self.console, refresh_per_second=REFRESH_PER_SECOND)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()  # the last state stays on screen
        elif self.last is not None and not self.quiet:
            self._print_line(self.last)

    def __call__(self, p: Progress) -> None:
        # A copy: the live display renders from another thread while the engine counts on.
        self.last = dataclasses.replace(p, souls=dict(p.souls))
        if self.quiet or self._live is not None:
            return
        now = self.monotonic()
        if self._next_line is None or now >= self._next_line:
            self._next_line = now + self.every
            self._print_line(self.last)

    def _print_line(self, p: Progress) -> None:
        click.echo(f"{stamp(self.wall())} {plain_line(p, verbose=self.verbose)}", err=True)

    # --- the live display -----------------------------------------------------------------

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        width = options.max_width
        if self.last is None:
            yield Text("starting…", style="dim", no_wrap=True, overflow="ellipsis")
            return
        yield self.first_line(self.last, width)
        detail = waits(self.last) + counters(self.last)
        if width >= WIDE or self.verbose:
            yield Text(" · ".join(detail), style="dim", no_wrap=True, overflow="ellipsis")

    def first_line(self, p: Progress, width: int) -> Any:
        """Bar, done/total, failed, elapsed, ETA; then in flight, submitted and the rate for
        as long as the bar keeps a fair share of the width."""
        from rich.text import Text

        eta = "--" if p.eta is None else clock(p.eta)
        finished = p.total > 0 and p.done >= p.total
        full = [
            f"{p.done:,}/{p.total:,} done",
            f"{p.failed:,} failed",
            f"elapsed {clock(p.elapsed)}",
        ]
        short = [f"{p.done:,}/{p.total:,}", f"{p.failed:,} failed", clock(p.elapsed)]
        if not finished:
            full.append(f"ETA {eta}")
            short.append(f"ETA {eta}")
        extras = [f"in flight {p.at_provider}", f"submitted {p.submitted:,}"]
        if p.rate > 0:
            extras.append(rate_text(p.rate))

        def text_of(parts: list[str]) -> str:
            return " · ".join(parts)

        parts = full
        if width - len(text_of(full)) - 1 < max(MIN_BAR, width // 4):
            parts = short
        for extra in extras:
            if width - len(text_of([*parts, extra])) - 1 >= max(MIN_BAR, width // 3):
                parts = [*parts, extra]
        text = text_of(parts)
        bar_width = width - len(text) - 1
        if bar_width < MIN_BAR:
            return Text(text, no_wrap=True, overflow="ellipsis")
        # Drawn here rather than with rich's ProgressBar, whose unfinished part is blank
        # without colours (NO_COLOR, a dumb terminal): this one reads in monochrome too.
        filled = bar_width * min(p.done, p.total) // p.total if p.total else 0
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("━" * filled, style="bar.finished" if finished else "bar.complete")
        line.append("─" * (bar_width - filled), style="bar.back")
        line.append(" " + text)
        return line


@contextmanager
def activity(console: Console, text: str, *, quiet: bool = False) -> Iterator[None]:
    """Something that takes a while and reports nothing on its way (training souls): a
    spinner with the elapsed time on a terminal, a timestamped line when it starts and one
    when it ends otherwise."""
    if quiet:
        yield
        return
    started = time.monotonic()
    if console.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as spinner:
            spinner.add_task(text, total=None)
            yield
        return
    click.echo(f"{stamp()} {text}", err=True)
    yield
    click.echo(f"{stamp()} done after {clock(time.monotonic() - started)}", err=True)

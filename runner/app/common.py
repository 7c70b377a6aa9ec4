"""What every use case shares: the outside world a run takes (``Environment``), job
selection, and opening the ledger to execute or to read."""

from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

import anyio

from runner.app.bulk import bulk as bulk  # where it was: run and report import it from here
from runner.engine.calls import Calls
from runner.engine.clock import SYSTEM_CLOCK, Clock
from runner.engine.throttle import Throttle
from runner.errors import UsageError
from runner.ledger import Ledger, default_ledger_url, open_ledger

if TYPE_CHECKING:
    import httpx

    from runner.engine.progress import Progress
    from runner.engine.settings import EngineSettings
    from runner.jobs import Job
    from runner.settings import RunOptions


@dataclass(frozen=True)
class Environment:
    """What a run takes from outside: env vars, the clock, and (for tests) the HTTP clients."""

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    api_client: Callable[[], httpx.AsyncClient] | None = None
    download_client: Callable[[], httpx.AsyncClient] | None = None
    handle_signals: bool = False
    on_progress: Callable[[Progress], None] | None = None
    clock: Clock = SYSTEM_CLOCK
    # where each executor's jitter comes from (tests on a virtual clock seed it to replay a run)
    rng: Callable[[], random.Random] = random.Random


T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def run_loop(env: Environment, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """``anyio.run(fn, *args)``: on uvloop when it is installed and the run keeps real time
    (with a thousand generations in flight the event loop's own work is much of a run's CPU,
    and uvloop's is in C); on asyncio's loop otherwise, a virtual clock's tests included."""
    options: dict[str, Any] = {}
    if env.clock is SYSTEM_CLOCK and importlib.util.find_spec("uvloop") is not None:
        options["use_uvloop"] = True
    return anyio.run(fn, *args, backend_options=options)


def select(jobs: Sequence[Job], options: RunOptions) -> list[Job]:
    """The jobs ``--only`` and ``--tag`` pick (all of them when neither is given)."""
    names = {j.campaign for j in jobs}
    unknown = [c for c in options.only if c not in names]
    if unknown:
        raise UsageError(f"--only names no campaign of this manifest: {', '.join(unknown)}")
    tags = {t for j in jobs for t in j.tags}
    unknown = [t for t in options.tags if t not in tags]
    if unknown:
        raise UsageError(f"--tag names no tag of this manifest: {', '.join(unknown)}")
    picked = [j for j in jobs if not options.only or j.campaign in options.only]
    if options.tags:
        picked = [j for j in picked if set(options.tags) & set(j.tags)]
    return picked


def provider_calls(
    settings: EngineSettings, env: Environment, throttle: Throttle | None = None
) -> Calls:
    """The call policy for a command that talks to the provider outside a run (souls,
    cancel, estimates, uploads as a manifest is recorded): the manifest's rate (``throttle``,
    else this process's own), attempts and backoff."""
    return Calls(
        throttle=throttle or Throttle(settings.requests_per_second, clock=env.clock),
        clock=env.clock,
        max_attempts=settings.max_attempts,
        backoff=settings.backoff,
        rng=random.Random(),
    )


@contextmanager
def executing(state_dir: Path, ledger: str | None = None) -> Iterator[Ledger]:
    """The ledger (``ledger``, a URL, else ``<state>/ledger.db``), opened to execute jobs: its
    executor lock held for the whole block."""
    with open_ledger(ledger or default_ledger_url(state_dir)) as opened, opened.executor_lock():
        yield opened


@contextmanager
def reading(state_dir: Path, ledger: str | None = None) -> Iterator[Ledger | None]:
    """The ledger (as for :func:`executing`), opened read-only (no lock, nothing written);
    ``None`` when there is none."""
    opened = open_ledger(ledger or default_ledger_url(state_dir), readonly=True)
    if opened is None:
        yield None
        return
    with opened:
        yield opened

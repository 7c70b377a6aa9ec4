"""Run settings from manifest + flags + environment: the one place defaults combine."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from runner.engine.budget import Budget
from runner.engine.claims import DEFAULT_LEASE
from runner.engine.polling import PollSchedule
from runner.engine.settings import EngineSettings
from runner.engine.throttle import Backoff
from runner.errors import UsageError
from runner.providers.types import ProviderSettings

if TYPE_CHECKING:
    from runner.manifest import Limits, Manifest

# Without a download_concurrency of its own, a manifest gets one download per this many
# generations in flight (at least the default).
GENERATIONS_PER_DOWNLOAD = 16


@dataclass(frozen=True)
class RunOptions:
    """The flags of ``runner run`` (and the subset ``collect`` uses)."""

    only: tuple[str, ...] = ()  # campaign names
    tags: tuple[str, ...] = ()
    limit: int | None = None  # at most this many new submissions
    submit_only: bool = False
    retry_failed: bool = False
    concurrency: int | None = None
    rps: float | None = None
    max_credits: float | None = None  # this run's cap; wins over budget.max_credits
    dry_run: bool = False
    collect: bool = False  # poll and download only; submit nothing
    until: datetime | None = None  # --until: no new submission after this moment
    max_failures: int | None = None  # --max-failures: no new submission after this many


def backoff_from(environ: Mapping[str, str]) -> Backoff:
    """``RUNNER_BACKOFF="BASE,CAP"`` (seconds) tunes retry backoff; tests make it tiny."""
    raw = environ.get("RUNNER_BACKOFF")
    if not raw:
        return Backoff()
    try:
        base, cap = (float(part) for part in raw.split(","))
    except ValueError as err:
        raise UsageError(f"RUNNER_BACKOFF must be 'BASE,CAP' in seconds, not {raw!r}") from err
    return Backoff(base=base, cap=cap)


def download_concurrency(limits: Limits, concurrency: int | None = None) -> int:
    """Downloads at once: the manifest's ``download_concurrency`` where it says, else enough
    to keep up with ``concurrency`` generations in flight (``--concurrency`` or the
    manifest's): one per ``GENERATIONS_PER_DOWNLOAD``, never under the default. A video is
    fetched in a small share of the time it took to make, so this keeps up, while at
    concurrency 1,000 the default's 4 would leave thousands of finished videos waiting."""
    if "download_concurrency" in limits.model_fields_set:
        return limits.download_concurrency
    wanted = math.ceil((concurrency or limits.concurrency) / GENERATIONS_PER_DOWNLOAD)
    return max(limits.download_concurrency, wanted)


def lease_from(environ: Mapping[str, str]) -> float:
    """``RUNNER_LEASE`` (seconds, default ``DEFAULT_LEASE``): how long a claimed job stays
    with a process that stopped renewing; a fleet's processes must agree on it."""
    raw = environ.get("RUNNER_LEASE")
    if not raw:
        return DEFAULT_LEASE
    try:
        lease = float(raw)
    except ValueError:
        lease = 0.0
    if not lease > 0:
        raise UsageError(f"RUNNER_LEASE must be a number of seconds above 0, not {raw!r}")
    return lease


def engine_settings(
    manifest: Manifest, options: RunOptions, environ: Mapping[str, str]
) -> EngineSettings:
    """The engine's limits: the manifest's, with the command line's overrides."""
    limits = manifest.limits
    return EngineSettings(
        concurrency=options.concurrency or limits.concurrency,
        requests_per_second=options.rps or limits.requests_per_second,
        download_concurrency=download_concurrency(limits, options.concurrency),
        max_attempts=limits.max_attempts,
        poll=PollSchedule(initial=limits.poll_initial, maximum=limits.poll_max),
        backoff=backoff_from(environ),
        submit=not options.collect,
        download=not options.submit_only,
        generation_timeout=limits.generation_timeout,
        until=options.until,
        max_failures=options.max_failures,
    )


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """``--until``: ``HH:MM`` (local time: the next such moment) or an ISO timestamp (local
    time unless it names a zone). A ``UsageError`` says what is accepted."""
    now = now or datetime.now().astimezone()
    try:
        if len(text) <= 5 and ":" in text:
            hour, minute = (int(part) for part in text.split(":"))
            moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            return moment if moment > now else moment + timedelta(days=1)
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        raise UsageError(
            f"--until {text!r}: give HH:MM (local time) or an ISO timestamp "
            "such as 2026-12-01T06:00"
        ) from err
    return moment if moment.tzinfo else moment.astimezone()


def budget(manifest: Manifest, options: RunOptions, charged_before: float) -> Budget:
    """This run's budget: ``--max-credits`` wins over ``budget.max_credits``."""
    run_cap = options.max_credits
    if run_cap is None:
        run_cap = manifest.budget.max_credits
    return Budget(
        run_cap=run_cap,
        total_cap=manifest.budget.max_total_credits,
        charged_before=charged_before,
    )


def provider_settings(manifest: Manifest) -> ProviderSettings:
    """Which provider a manifest talks to, and with which key variable."""
    p = manifest.provider
    return ProviderSettings(name=p.name, base_url=p.base_url, api_key_env=p.api_key_env)

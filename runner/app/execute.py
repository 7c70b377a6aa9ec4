"""The async half of a run: one event loop, one executor per manifest, shared account limits,
and one set of job claims (``engine.claims``) that every executor of the process works under.

Manifests on one provider account (same dialect, base URL and credential) share one throttle
(the smallest ``requests_per_second``) and one set of concurrency slots (the smallest
``concurrency``), because the provider counts both per account. Budgets, output stores and
soul models stay per manifest. Ctrl-C stops every executor; a second one aborts them all.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import httpx

from runner.app.common import Environment
from runner.engine import (
    AdaptiveSlots,
    Budget,
    EngineSettings,
    Executor,
    Outcome,
    Progress,
    Throttle,
)
from runner.engine.claims import Claims
from runner.engine.executor import Driven
from runner.engine.shared import AccountGate, SharedThrottle
from runner.engine.souls import SoulTrainer
from runner.ledger import Ledger
from runner.ledger.base import SharedLimits
from runner.manifest import Manifest
from runner.outputs import OutputStore
from runner.outputs.pinned import pinned_client
from runner.providers import Provider
from runner.settings import lease_from

MIN_DOWNLOAD_CONNECTIONS = 32


def download_limits(works: Sequence[Work]) -> httpx.Limits:
    """The download pool: a connection, kept alive, for every download that may run at once
    (each manifest's ``download_concurrency``; they share the pool)."""
    size = max(MIN_DOWNLOAD_CONNECTIONS, sum(w.settings.download_concurrency for w in works))
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)


@dataclass
class Work:
    """One manifest's share of a run, ready for the engine."""

    manifest: Manifest
    provider: Provider
    rows: Sequence[Driven]
    store: OutputStore
    settings: EngineSettings
    budget: Budget
    finishing: set[str] = field(default_factory=set)  # no longer produced: finish, then orphan
    files: Mapping[str, str] = field(default_factory=dict)  # local file → URL, as recorded


def account_of(provider: Provider) -> tuple[str, str, str]:
    """What the provider counts limits by: dialect, base URL and credential fingerprint."""
    return (provider.name, provider.base_url, provider.account)


def account_throttle(
    limits: SharedLimits | None, provider: Provider, rps: float, env: Environment
) -> Throttle:
    """The rate of ``provider``'s account: shared in the database where other processes may
    call it too (``limits``), else this process's own."""
    if limits is None:
        return Throttle(rps, clock=env.clock)
    name = "|".join(account_of(provider))  # a fingerprint of the credential, never the key
    return SharedThrottle(rps, limits=limits, account=name, clock=env.clock)


async def execute(
    ledger: Ledger,
    works: Sequence[Work],
    env: Environment,
    api_client: httpx.AsyncClient | None,
) -> list[Outcome]:
    """Run every manifest's jobs together; one ``Outcome`` per manifest, in order."""
    download_client = (
        env.download_client()
        if env.download_client
        else pinned_client(limits=download_limits(works))
    )
    try:
        executors = _executors(ledger, works, env, download_client)
        claims = Claims(ledger, lease=lease_from(env.environ), clock=env.clock)
        for executor in executors:
            executor.claims = claims
        async with env.clock.running(), anyio.create_task_group() as tg:
            tg.start_soon(claims.keep)
            if env.handle_signals:
                tg.start_soon(_watch_signals, executors, tg.cancel_scope)
            # Each executor's own outcome: a second Ctrl-C cancels its run before it returns,
            # and the outcome must still say it was interrupted (exit 130, not 0).
            outcomes: list[Outcome] = [e.outcome for e in executors]

            async def drive(i: int) -> None:
                outcomes[i] = await executors[i].run(works[i].rows, works[i].finishing)

            async with anyio.create_task_group() as runs:
                for i in range(len(executors)):
                    runs.start_soon(drive, i)
            tg.cancel_scope.cancel()
        return outcomes
    finally:
        with anyio.CancelScope(shield=True):
            for work in works:
                await work.provider.aclose()
            if api_client is not None:
                await api_client.aclose()
            await download_client.aclose()


def _executors(
    ledger: Ledger, works: Sequence[Work], env: Environment, download_client: httpx.AsyncClient
) -> list[Executor]:
    """One executor per manifest; those on one account share its throttle and slots (in
    the database too, where other processes may share the account: see ``engine.shared``)."""
    limits = ledger.shared_limits()
    recheck = Claims(ledger, lease=lease_from(env.environ)).recheck
    shared: dict[tuple[str, str, str], tuple[Throttle, AdaptiveSlots, AccountGate | None]] = {}
    for work in works:
        account = account_of(work.provider)
        if account in shared:
            continue
        alike = [w.settings for w in works if account_of(w.provider) == account]
        rps = min(s.requests_per_second for s in alike)
        concurrency = min(s.concurrency for s in alike)
        name = "|".join(account)  # a fingerprint of the credential, never the key
        throttle = account_throttle(limits, work.provider, rps, env)
        gate = (
            AccountGate(limits, name, concurrency, recheck=recheck, clock=env.clock)
            if limits is not None
            else None
        )
        shared[account] = (throttle, AdaptiveSlots(concurrency), gate)
    progress = Progress(started=env.clock.now(), now=env.clock.now())
    executors = []
    for work in works:
        throttle, slots, gate = shared[account_of(work.provider)]
        executor = Executor(
            ledger=ledger,
            provider=work.provider,
            store=work.store,
            download_client=download_client,
            settings=work.settings,
            budget=work.budget,
            clock=env.clock,
            on_progress=env.on_progress,
            rng=env.rng(),
            throttle=throttle,
            slots=slots,
            progress=progress,
        )
        executor.gate = gate
        executor.files = work.files
        if limits is not None:
            name = "|".join(account_of(work.provider))
            limits.declare_concurrency(name, str(work.manifest.path), work.settings.concurrency)
        trainer = SoulTrainer(
            ledger,
            work.provider,
            work.manifest,
            executor.calls,
            work.settings.poll,
            files=work.files,
        )
        executor.souls = trainer.model_id
        executors.append(executor)
    return executors


async def _watch_signals(executors: Sequence[Executor], scope: anyio.CancelScope) -> None:
    """First Ctrl-C (or SIGTERM): stop cleanly. Second: abort at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            for executor in executors:
                if count == 1:
                    executor.stop()
                else:
                    executor.abort()
            if count > 1:
                scope.cancel()

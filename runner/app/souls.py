"""``retry`` and ``souls``: putting failed jobs back, training identity models ahead of a run."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from runner.app.common import Environment, executing
from runner.engine import Calls, Throttle
from runner.engine.souls import SoulTrainer
from runner.errors import PermanentError, UsageError
from runner.jobs import expand
from runner.ledger import Ledger, SoulRow
from runner.manifest import load_manifest
from runner.providers import make_provider
from runner.settings import RunOptions, engine_settings, provider_settings


@dataclass(frozen=True)
class SoulsResult:
    """Every soul record of the manifest, and by soul name why training failed."""

    souls: list[SoulRow]
    failures: dict[str, str] = field(default_factory=dict)


def retry(
    manifest_path: str | Path,
    state_dir: Path,
    *,
    keys: Sequence[str] = (),
    campaigns: Sequence[str] = (),
) -> int:
    """``runner retry``: failed jobs back to ``pending`` with a new idempotency key; returns
    how many."""
    manifest = load_manifest(manifest_path)
    jobs = expand(manifest)
    unknown = [c for c in campaigns if c not in {j.campaign for j in jobs}]
    if unknown:
        raise UsageError(f"--campaign names no campaign of this manifest: {', '.join(unknown)}")
    unknown = [k for k in keys if k not in {j.key for j in jobs}]
    if unknown:
        raise UsageError(f"--job names no job of this manifest: {', '.join(unknown)}")
    with executing(state_dir) as ledger:
        return ledger.retry_failed(
            str(manifest.path), keys=list(keys) or None, campaigns=list(campaigns) or None
        )


def train_souls(
    manifest_path: str | Path, state_dir: Path, env: Environment | None = None
) -> SoulsResult:
    """``runner souls``: train the manifest's soul models that are not ready yet."""
    env = env or Environment()
    manifest = load_manifest(manifest_path)
    settings = engine_settings(manifest, RunOptions(), env.environ)
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)

    async def train_all(ledger: Ledger) -> dict[str, str]:
        calls = Calls(
            throttle=Throttle(settings.requests_per_second, clock=env.clock),
            clock=env.clock,
            max_attempts=settings.max_attempts,
            backoff=settings.backoff,
            rng=random.Random(),
        )
        trainer = SoulTrainer(ledger, provider, manifest, calls, settings.poll)
        failures: dict[str, str] = {}
        try:
            async with env.clock.running():
                for name in manifest.souls:
                    try:
                        await trainer.model_id(name)
                    except PermanentError as err:
                        failures[name] = err.message
        finally:
            await provider.aclose()
            if api_client is not None:
                await api_client.aclose()
        return failures

    with executing(state_dir) as ledger:
        failures = anyio.run(train_all, ledger)
        return SoulsResult(ledger.souls(str(manifest.path)), failures)

"""``retry``, ``souls`` and ``cancel``: putting failed jobs back, training identity models
ahead of a run, cancelling generations still queued."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from runner.app.common import Environment, executing, provider_calls
from runner.engine.earlier import record_cancelled
from runner.engine.souls import SoulTrainer
from runner.errors import DeadlineError, PermanentError, UsageError
from runner.jobs import Job, expand
from runner.ledger import JobStatus, Ledger, SoulRow
from runner.manifest import load_manifest
from runner.providers import canceller, make_provider
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
    ledger: str | None = None,
) -> int:
    """``runner retry``: failed jobs back to ``pending`` with a new idempotency key; returns
    how many."""
    manifest = load_manifest(manifest_path)
    _refuse_unknown(expand(manifest), keys, campaigns)
    with executing(state_dir, ledger) as opened:
        return opened.retry_failed(
            str(manifest.path), keys=list(keys) or None, campaigns=list(campaigns) or None
        )


def train_souls(
    manifest_path: str | Path,
    state_dir: Path,
    env: Environment | None = None,
    *,
    ledger: str | None = None,
) -> SoulsResult:
    """``runner souls``: train the manifest's soul models that are not ready yet."""
    env = env or Environment()
    manifest = load_manifest(manifest_path)
    settings = engine_settings(manifest, RunOptions(), env.environ)
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)

    async def train_all(ledger: Ledger) -> dict[str, str]:
        calls = provider_calls(settings, env)
        trainer = SoulTrainer(ledger, provider, manifest, calls, settings.poll)
        failures: dict[str, str] = {}
        try:
            async with env.clock.running():
                for name in manifest.souls:
                    try:
                        await trainer.model_id(name)
                    except (PermanentError, DeadlineError) as err:
                        failures[name] = err.message
        finally:
            await provider.aclose()
            if api_client is not None:
                await api_client.aclose()
        return failures

    with executing(state_dir, ledger) as opened:
        failures = anyio.run(train_all, opened)
        return SoulsResult(opened.souls(str(manifest.path)), failures)


@dataclass(frozen=True)
class Cancelled:
    """What ``cancel`` did: the jobs cancelled while queued (refunded, now failed with the
    reason ``cancelled``), and by key why the others could not be."""

    cancelled: list[str]
    not_cancelled: dict[str, str] = field(default_factory=dict)


def cancel(
    manifest_path: str | Path,
    state_dir: Path,
    *,
    keys: Sequence[str] = (),
    campaigns: Sequence[str] = (),
    env: Environment | None = None,
    ledger: str | None = None,
) -> Cancelled:
    """``runner cancel``: cancel the selected generations still queued at the provider.

    Only dialects that can cancel (the platform) can; others are a ``UsageError``. A job the
    provider has already started is named in ``not_cancelled`` and left to finish.
    """
    env = env or Environment()
    manifest = load_manifest(manifest_path)
    jobs = expand(manifest)
    _refuse_unknown(jobs, keys, campaigns)
    settings = engine_settings(manifest, RunOptions(), env.environ)
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)
    able = canceller(provider)

    async def cancel_all(ledger: Ledger) -> Cancelled:
        done = Cancelled([])
        try:
            if able is None:
                raise UsageError(
                    f"provider {provider.name} cannot cancel generations; only `higgsfield` "
                    "(the platform API) can"
                )
            calls = provider_calls(settings, env)
            rows = ledger.jobs(
                manifest=str(manifest.path),
                status=(JobStatus.QUEUED, JobStatus.RUNNING),
                keys=list(keys) or None,
                campaign=list(campaigns) or None,
            )
            for row in rows:
                gid = row.generation_id or ""
                if await calls(functools.partial(able.cancel, gid)):
                    record_cancelled(ledger, row.key, gid)
                    done.cancelled.append(row.key)
                else:
                    done.not_cancelled[row.key] = f"generation {gid} already started"
        finally:
            await provider.aclose()
            if api_client is not None:
                await api_client.aclose()
        return done

    with executing(state_dir, ledger) as opened:
        return anyio.run(cancel_all, opened)


def _refuse_unknown(jobs: Sequence[Job], keys: Sequence[str], campaigns: Sequence[str]) -> None:
    unknown = [c for c in campaigns if c not in {j.campaign for j in jobs}]
    if unknown:
        raise UsageError(f"--campaign names no campaign of this manifest: {', '.join(unknown)}")
    unknown = [k for k in keys if k not in {j.key for j in jobs}]
    if unknown:
        raise UsageError(f"--job names no job of this manifest: {', '.join(unknown)}")

"""``runner enqueue`` and ``runner worker`` (SPEC §5, §8): work recorded in the ledger, done by
any number of processes on any hosts.

``enqueue`` records each manifest's plan and what a worker needs of it (its YAML, so the
same code derives the same settings everywhere, its resolved output, and what only the
enqueuing host's disk can tell: see ``recording``) without executing anything. ``worker``
executes the jobs of every recorded manifest under claims, alongside other workers and runs,
until ``--until``, or until nothing is left with ``idle_exit``; it needs only the ledger URL
and the API keys in its environment: the jobs' requests, the recorded URLs of their local
files and souls' images, and the jobs to finish all come from the ledger, never from the
manifest's folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx

from runner.app.common import Environment, executing, run_loop
from runner.app.execute import Work, execute
from runner.app.recording import record, resolve
from runner.engine import Outcome, charged_credits
from runner.engine.shared import SharedBudget
from runner.jobs import expand
from runner.ledger import Ledger, PlanDiff
from runner.ledger.claims import CLAIMABLE, ManifestRecord
from runner.manifest import load_manifest
from runner.manifest.load import parse_manifest
from runner.outputs import open_store
from runner.providers import check_credentials, make_provider
from runner.settings import RunOptions, engine_settings, provider_settings

#: Seconds an idle worker waits before it looks for new work again.
IDLE_WAIT = 2.0


@dataclass
class WorkerResult:
    """What one worker did, summed over its passes."""

    passes: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def downloaded(self) -> int:
        return sum(o.downloaded for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.failed for o in self.outcomes)


def enqueue(
    manifest_paths: Sequence[str | Path],
    state_dir: Path,
    env: Environment | None = None,
    *,
    ledger: str | None = None,
) -> list[tuple[str, PlanDiff]]:
    """Record each manifest's plan and what a worker needs of it (``recording``: its local
    files uploaded first); execute nothing. A file that cannot be uploaded stops it before
    any manifest is recorded."""
    env = env or Environment()
    loaded = []
    for path in manifest_paths:
        manifest = load_manifest(path)
        jobs = expand(manifest, state_dir=state_dir)
        output = open_store(str(manifest.output_dir(state_dir))).root
        loaded.append((manifest, jobs, output))
    with executing(state_dir, ledger) as opened:
        resolved = [resolve(opened, m, jobs, env, strict=True) for m, jobs, _ in loaded]
        return [
            (str(m.path), record(opened, m, jobs, output, r))
            for (m, jobs, output), r in zip(loaded, resolved, strict=True)
        ]


def worker(
    state_dir: Path,
    env: Environment | None = None,
    *,
    ledger: str | None = None,
    until: datetime | None = None,
    idle_exit: bool = False,
) -> WorkerResult:
    """Execute every recorded manifest's jobs, pass after pass, claiming them alongside other
    processes, until ``until`` or (with ``idle_exit``) until no job is left to do."""
    env = env or Environment()
    result = WorkerResult()
    with executing(state_dir, ledger) as opened:
        while until is None or datetime.now(UTC) < until:
            api_client = env.api_client() if env.api_client else None
            recs = opened.recorded_manifests()
            works = [w for r in recs if (w := _work(opened, r, env, until, api_client))]
            if not works:
                if api_client is not None:
                    anyio.run(api_client.aclose)
                if idle_exit:
                    break
                time.sleep(IDLE_WAIT)
                continue
            result.passes += 1
            outcomes = run_loop(env, execute, opened, works, env, api_client)
            result.outcomes += outcomes
            moved = sum(o.submitted + o.downloaded + o.failed for o in outcomes)
            if any(o.fatal or o.interrupted for o in outcomes) or (idle_exit and not moved):
                break  # what is left is held for later (said in the ledger), or we must stop
    return result


def _work(
    ledger: Ledger,
    rec: ManifestRecord,
    env: Environment,
    until: datetime | None,
    api_client: httpx.AsyncClient | None,
) -> Work | None:
    """A recorded manifest's unfinished jobs, ready for the engine (``None`` if none)."""
    rows = ledger.jobs(manifest=rec.path, status=CLAIMABLE)
    if not rows:
        return None
    manifest = parse_manifest(rec.source, path=rec.path, souls=rec.resolved.souls)
    settings = provider_settings(manifest)
    check_credentials(settings, env.environ)
    spent = charged_credits(ledger.jobs(manifest=rec.path))
    budget = SharedBudget(
        run_cap=manifest.budget.max_credits,
        total_cap=manifest.budget.max_total_credits,
        charged_before=spent,
        limits=ledger.shared_limits(),
        scope=rec.scope,
    )
    return Work(
        manifest,
        make_provider(settings, client=api_client, environ=env.environ),
        rows,
        open_store(rec.output, environ=env.environ),
        engine_settings(manifest, RunOptions(until=until), env.environ),
        budget,
        set(rec.resolved.finishing),
        rec.resolved.files,
    )

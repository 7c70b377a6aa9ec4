"""``run``, ``collect`` and ``run --dry-run``: a manifest's jobs through the engine.

Each run loads the manifest, takes the ledger's executor lock, records the plan, brings the
output store up to date with it (moved names, missing files), and hands the selected jobs to
the engine. The dry run walks the same budget and order without writing anything.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from runner.app.common import Environment, executing, reading, select
from runner.engine import Budget, EngineSettings, Executor, Outcome, charged_credits
from runner.engine.souls import SoulTrainer
from runner.errors import ManifestError, RunnerError, UsageError
from runner.jobs import Job, expand
from runner.ledger import JobRow, JobStatus, Ledger
from runner.manifest import Manifest, load_manifest
from runner.outputs import OutputStore, open_store
from runner.providers import Provider, make_provider
from runner.settings import RunOptions, budget, engine_settings, provider_settings

COLLECTABLE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED)
DOWNLOAD_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)


@dataclass
class RunResult:
    """What a run did, for the summary and the exit code."""

    manifest: str
    selected: int
    outcome: Outcome
    output_dir: str
    counts: dict[str, int] = field(default_factory=dict)  # selected jobs by status, after
    would_submit: list[Job] = field(default_factory=list)  # --dry-run only
    error: str | None = None  # collect: why this manifest's jobs could not be collected


@dataclass(frozen=True)
class _Candidate:
    """A job as the dry run sees it: what the ledger would say after recording the plan."""

    job: Job
    status: JobStatus

    @property
    def key(self) -> str:
        return self.job.key

    @property
    def credits(self) -> float:
        return self.job.credits


def run(
    manifest_path: str | Path,
    state_dir: Path,
    options: RunOptions | None = None,
    env: Environment | None = None,
) -> RunResult:
    """``runner run`` / ``runner collect MANIFEST``: drive a manifest's jobs to the end."""
    options = options or RunOptions()
    env = env or Environment()
    manifest = load_manifest(manifest_path)
    jobs = expand(manifest)
    selected = select(jobs, options)
    store = open_store(str(manifest.output_dir(state_dir)))
    if options.dry_run:
        return _dry_run(manifest, jobs, selected, state_dir, options, store)

    # Credentials and settings are checked before anything is written.
    settings = engine_settings(manifest, options, env.environ)
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)
    with executing(state_dir) as ledger:
        if not options.collect:
            _relocate(ledger, store, jobs)
            ledger.record_plan(str(manifest.path), jobs)
        keys = [j.key for j in selected]
        if options.retry_failed:
            ledger.retry_failed(str(manifest.path), keys=keys)
        _recheck(ledger, store, ledger.jobs(keys=keys, status=JobStatus.DOWNLOADED))
        rows = ledger.jobs(keys=keys)
        if options.collect:
            rows = [r for r in rows if r.status in COLLECTABLE]
        rows = _apply_limit(rows, options.limit)
        spent = charged_credits(ledger.jobs(manifest=str(manifest.path)))
        executor_budget = budget(manifest, options, spent)

        async def execute() -> Outcome:
            return await _execute(
                manifest, ledger, provider, api_client, rows, store, settings, executor_budget, env
            )

        try:
            outcome = anyio.run(execute)
        except BaseExceptionGroup as group:
            raise _single_error(group) from None
        after = ledger.jobs(keys=[r.key for r in rows])
    counts: dict[str, int] = {}
    for r in after:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return RunResult(str(manifest.path), len(rows), outcome, store.root, counts)


def collect(
    manifest_path: str | Path | None, state_dir: Path, env: Environment | None = None
) -> list[RunResult]:
    """``runner collect``: poll and download what is in flight, for one or every manifest."""
    if manifest_path is not None:
        return [run(manifest_path, state_dir, RunOptions(collect=True), env)]
    with reading(state_dir) as ledger:
        rows = ledger.jobs(status=COLLECTABLE) if ledger is not None else []
    results: list[RunResult] = []
    for manifest in sorted({r.manifest for r in rows}):
        try:
            result = run(manifest, state_dir, RunOptions(collect=True), env)
        except (ManifestError, UsageError) as err:
            # The provider settings (and key) live with the manifest: without them, its jobs
            # wait for a later collect; the other manifests' jobs need not.
            results.append(RunResult(manifest, 0, Outcome(), str(state_dir), error=str(err)))
            continue
        results.append(result)
        if result.outcome.interrupted or result.outcome.fatal:
            break
    return results


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A runner error that escaped a task group, unwrapped so the CLI can say it plainly."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                leaves.append(exc)

    walk(group)
    errors = [e for e in leaves if isinstance(e, RunnerError)]
    return errors[0] if len(errors) == len(leaves) else group


def _relocate(ledger: Ledger, store: OutputStore, jobs: Sequence[Job]) -> None:
    """When ``output.filename`` or ``output.dir`` changes, downloaded videos move with it
    instead of being downloaded (or, if their URLs have expired, failed) again."""
    planned = {j.key: j.path for j in jobs}
    for row in ledger.jobs(keys=list(planned), status=JobStatus.DOWNLOADED):
        old = row.location or store.location(row.path)
        new = store.relocate(old, planned[row.key])
        if new is not None:
            detail = f"moved {old} to {new} (output changed)"
            ledger.transition(row.key, JobStatus.DOWNLOADED, detail=detail, location=new)


def _recheck(ledger: Ledger, store: OutputStore, rows: Sequence[JobRow]) -> None:
    """A downloaded job whose video is gone or the wrong size goes back to be downloaded."""
    for row in rows:
        location = row.location or store.location(row.path)
        problem = store.problem(location, row.bytes)
        if problem is not None:
            ledger.transition(
                row.key,
                JobStatus.COMPLETED,
                detail=f"video {location} {problem}; downloading again",
                location=None,
            )


def _apply_limit(rows: list[JobRow], limit: int | None) -> list[JobRow]:
    """Keep everything already under way, and at most ``limit`` jobs not yet sent."""
    if limit is None:
        return rows
    pending = [r for r in rows if r.status is JobStatus.PENDING][:limit]
    kept = {r.key for r in pending}
    return [r for r in rows if r.status is not JobStatus.PENDING or r.key in kept]


def _dry_run(
    manifest: Manifest,
    jobs: list[Job],
    selected: list[Job],
    state_dir: Path,
    options: RunOptions,
    store: OutputStore,
) -> RunResult:
    """What ``run`` would submit (with --limit and the budget applied), reading the ledger
    only: the same order and the same ``Budget`` as the executor."""
    statuses: dict[str, str] = {}
    spent = 0.0
    with reading(state_dir) as ledger:
        if ledger is not None:
            statuses = ledger.diff(str(manifest.path), jobs).statuses
            spent = charged_credits(ledger.jobs(manifest=str(manifest.path)))
    candidates = []
    for job in selected:
        status = JobStatus(statuses.get(job.key, JobStatus.PENDING.value))
        if options.retry_failed and status is JobStatus.FAILED:
            status = JobStatus.PENDING
        candidates.append(_Candidate(job, status))
    sent, stop = budget(manifest, options, spent).select(candidates, options.limit)
    outcome = Outcome(budget_stop=stop)
    return RunResult(
        str(manifest.path), len(selected), outcome, store.root, would_submit=[c.job for c in sent]
    )


async def _execute(
    manifest: Manifest,
    ledger: Ledger,
    provider: Provider,
    api_client: httpx.AsyncClient | None,
    rows: list[JobRow],
    store: OutputStore,
    settings: EngineSettings,
    run_budget: Budget,
    env: Environment,
) -> Outcome:
    download_client = (
        env.download_client() if env.download_client else httpx.AsyncClient(limits=DOWNLOAD_LIMITS)
    )
    try:
        executor = Executor(
            ledger=ledger,
            provider=provider,
            store=store,
            download_client=download_client,
            settings=settings,
            budget=run_budget,
            clock=env.clock,
            on_progress=env.on_progress,
        )
        trainer = SoulTrainer(ledger, provider, manifest, executor.calls, settings.poll)
        executor.souls = trainer.model_id
        async with env.clock.running(), anyio.create_task_group() as tg:
            if env.handle_signals:
                tg.start_soon(_watch_signals, executor, tg.cancel_scope)
            outcome = await executor.run(rows)
            tg.cancel_scope.cancel()
        return outcome
    finally:
        with anyio.CancelScope(shield=True):
            await provider.aclose()
            if api_client is not None:
                await api_client.aclose()
            await download_client.aclose()


async def _watch_signals(executor: Executor, scope: anyio.CancelScope) -> None:
    """First Ctrl-C (or SIGTERM): stop cleanly. Second: abort at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            if count == 1:
                executor.stop()
            else:
                executor.abort()
                scope.cancel()

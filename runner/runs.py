"""The operations behind ``run``, ``collect`` and ``retry``, callable from Python.

Each one: load the manifest, take the executor lock, record the plan in the ledger, build the
provider, and hand the selected jobs to the executor. The CLI only parses flags and prints.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from runner.downloads import safe_destination
from runner.errors import ManifestError, PermanentError, RunnerError, UsageError
from runner.executor import Executor, ExecutorSettings, Outcome, Progress, budget_message
from runner.jobs import Job, expand
from runner.ledger import JobRow, JobStatus, Ledger, SoulRow, default_ledger_url, open_ledger
from runner.manifest import Manifest, load_manifest
from runner.providers import Provider, ProviderSettings, make_provider
from runner.souls import SoulTrainer
from runner.throttle import Backoff, Throttle

#: Statuses whose estimated credits count against ``budget.max_credits`` (failed ones are
#: refunded by the provider; pending ones are not sent yet).
CHARGED = (
    JobStatus.SUBMITTING,
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
    JobStatus.DOWNLOADED,
)
COLLECTABLE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED)
DOWNLOAD_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)


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
    max_credits: float | None = None
    dry_run: bool = False
    collect: bool = False  # poll and download only; submit nothing


@dataclass
class RunResult:
    """What a run did, for the summary and the exit code."""

    manifest: str
    selected: int
    outcome: Outcome
    output_dir: Path
    counts: dict[str, int] = field(default_factory=dict)  # selected jobs by status, after
    would_submit: list[Job] = field(default_factory=list)  # --dry-run only
    error: str | None = None  # collect: why this manifest's jobs could not be collected


@dataclass(frozen=True)
class Environment:
    """What a run takes from outside: env vars, and (for tests) the HTTP transports."""

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    api_client: Callable[[], httpx.AsyncClient] | None = None
    download_client: Callable[[], httpx.AsyncClient] | None = None
    handle_signals: bool = False
    on_progress: Callable[[Progress], None] | None = None


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


def charged(row: JobRow) -> bool:
    """Whether a job's estimated credits count against the budget: submitted and not refunded
    (the provider does not charge failed generations). An orphaned job still cost what it
    cost when it was sent."""
    if row.status in CHARGED:
        return True
    return row.status is JobStatus.ORPHANED and row.generation_id is not None and not row.error


def provider_settings(manifest: Manifest) -> ProviderSettings:
    p = manifest.provider
    return ProviderSettings(name=p.name, base_url=p.base_url, api_key_env=p.api_key_env)


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


def executor_settings(
    manifest: Manifest, options: RunOptions, spent: float, backoff: Backoff
) -> ExecutorSettings:
    limits = manifest.limits
    cap = options.max_credits if options.max_credits is not None else manifest.budget.max_credits
    return ExecutorSettings(
        concurrency=options.concurrency or limits.concurrency,
        requests_per_second=options.rps or limits.requests_per_second,
        download_concurrency=limits.download_concurrency,
        max_attempts=limits.max_attempts,
        poll_initial=limits.poll_initial,
        poll_max=limits.poll_max,
        submit=not options.collect,
        download=not options.submit_only,
        max_credits=cap,
        credits_spent=spent,
        backoff=backoff,
    )


def run(
    manifest_path: str | Path,
    state_dir: Path,
    options: RunOptions = RunOptions(),
    env: Environment = Environment(),
) -> RunResult:
    """``runner run`` / ``runner collect MANIFEST``: drive a manifest's jobs to the end."""
    manifest = load_manifest(manifest_path)
    jobs = expand(manifest)
    selected = select(jobs, options)
    output_dir = manifest.output_dir(state_dir)
    if options.dry_run:
        return _dry_run(manifest, jobs, selected, state_dir, options, output_dir)

    # Credentials and settings are checked before anything is written.
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)
    backoff = backoff_from(env.environ)
    state_dir.mkdir(parents=True, exist_ok=True)
    with open_ledger(default_ledger_url(state_dir)) as ledger, ledger.executor_lock():
        if not options.collect:
            _move_renamed_files(ledger, jobs, output_dir)
            ledger.record_plan(str(manifest.path), jobs)
        keys = [j.key for j in selected]
        if options.retry_failed:
            ledger.retry_failed(str(manifest.path), keys=keys)
        _recheck_files(ledger, ledger.jobs(keys=keys), output_dir)
        rows = ledger.jobs(keys=keys)
        if options.collect:
            rows = [r for r in rows if r.status in COLLECTABLE]
        rows = _apply_limit(rows, options.limit)
        spent = sum(r.credits for r in ledger.jobs(manifest=str(manifest.path)) if charged(r))
        settings = executor_settings(manifest, options, spent, backoff)
        try:
            outcome = anyio.run(
                _execute, manifest, ledger, provider, api_client, rows, output_dir, settings, env
            )
        except BaseExceptionGroup as group:
            raise _single_error(group) from None
        after = ledger.jobs(keys=[r.key for r in rows])
    counts: dict[str, int] = {}
    for r in after:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return RunResult(str(manifest.path), len(rows), outcome, output_dir, counts)


def collect(
    manifest_path: str | Path | None, state_dir: Path, env: Environment = Environment()
) -> list[RunResult]:
    """``runner collect``: poll and download what is in flight, for one or every manifest."""
    if manifest_path is not None:
        return [run(manifest_path, state_dir, RunOptions(collect=True), env)]
    ledger = open_ledger(default_ledger_url(state_dir), readonly=True)
    if ledger is None:
        return []
    with ledger:
        manifests = sorted({r.manifest for r in ledger.jobs() if r.status in COLLECTABLE})
    results: list[RunResult] = []
    for manifest in manifests:
        try:
            result = run(manifest, state_dir, RunOptions(collect=True), env)
        except (ManifestError, UsageError) as err:
            # The provider settings (and key) live with the manifest: without them, its jobs
            # wait for a later collect; the other manifests' jobs need not.
            results.append(RunResult(manifest, 0, Outcome(), state_dir, error=str(err)))
            continue
        results.append(result)
        if result.outcome.interrupted or result.outcome.fatal:
            break
    return results


def retry(
    manifest_path: str | Path,
    state_dir: Path,
    *,
    keys: Sequence[str] = (),
    campaigns: Sequence[str] = (),
) -> int:
    """``runner retry``: failed jobs back to ``pending`` with a new idempotency key."""
    manifest = load_manifest(manifest_path)
    jobs = expand(manifest)
    unknown = [c for c in campaigns if c not in {j.campaign for j in jobs}]
    if unknown:
        raise UsageError(f"--campaign names no campaign of this manifest: {', '.join(unknown)}")
    unknown = [k for k in keys if k not in {j.key for j in jobs}]
    if unknown:
        raise UsageError(f"--job names no job of this manifest: {', '.join(unknown)}")
    state_dir.mkdir(parents=True, exist_ok=True)
    with open_ledger(default_ledger_url(state_dir)) as ledger, ledger.executor_lock():
        return ledger.retry_failed(
            str(manifest.path), keys=list(keys) or None, campaigns=list(campaigns) or None
        )


def train_souls(
    manifest_path: str | Path, state_dir: Path, env: Environment = Environment()
) -> tuple[list[SoulRow], dict[str, str]]:
    """``runner souls``: train the manifest's soul models that are not ready yet.

    Returns every soul record of the manifest and, by soul name, why training failed.
    """
    manifest = load_manifest(manifest_path)
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)
    backoff = backoff_from(env.environ)
    state_dir.mkdir(parents=True, exist_ok=True)

    async def train_all(ledger: Ledger) -> dict[str, str]:
        limits = manifest.limits
        trainer = SoulTrainer(
            ledger,
            provider,
            manifest,
            Throttle(limits.requests_per_second),
            max_attempts=limits.max_attempts,
            poll_initial=limits.poll_initial,
            poll_max=limits.poll_max,
            backoff=backoff,
        )
        failures: dict[str, str] = {}
        try:
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

    with open_ledger(default_ledger_url(state_dir)) as ledger, ledger.executor_lock():
        failures = anyio.run(train_all, ledger)
        return ledger.souls(str(manifest.path)), failures


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


def _move_renamed_files(ledger: Ledger, jobs: Sequence[Job], output_dir: Path) -> None:
    """When ``output.filename`` changes, downloaded videos move with it instead of being
    downloaded (or, if their URLs have expired, failed) again."""
    planned = {j.key: j.path for j in jobs}
    rows = ledger.jobs(keys=list(planned), status=JobStatus.DOWNLOADED)
    for row in rows:
        new = planned[row.key]
        if new == row.path:
            continue
        old_file = safe_destination(output_dir, row.path)
        new_file = safe_destination(output_dir, new)
        if old_file.is_file() and not new_file.exists():
            new_file.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old_file, new_file)
            ledger.note(row.key, f"moved {old_file} to {new_file} (output.filename changed)")


def _recheck_files(ledger: Ledger, rows: list[JobRow], output_dir: Path) -> None:
    """A downloaded job whose file is gone or the wrong size goes back to be downloaded again."""
    for row in rows:
        if row.status is not JobStatus.DOWNLOADED:
            continue
        file = output_dir / row.path
        size = file.stat().st_size if file.is_file() else None
        if size != row.bytes:
            why = "missing" if size is None else f"{size} bytes, expected {row.bytes}"
            ledger.transition(
                row.key, JobStatus.COMPLETED, detail=f"file {file} {why}; downloading again"
            )


def _apply_limit(rows: list[JobRow], limit: int | None) -> list[JobRow]:
    """Keep everything already under way, and at most ``limit`` jobs not yet sent."""
    if limit is None:
        return rows
    kept: list[JobRow] = []
    fresh = 0
    for r in rows:
        if r.status is JobStatus.PENDING:
            if fresh >= limit:
                continue
            fresh += 1
        kept.append(r)
    return kept


def _dry_run(
    manifest: Manifest,
    jobs: list[Job],
    selected: list[Job],
    state_dir: Path,
    options: RunOptions,
    output_dir: Path,
) -> RunResult:
    """What ``run`` would submit (with --limit and the budget applied), reading the ledger only."""
    ledger = open_ledger(default_ledger_url(state_dir), readonly=True)
    statuses: dict[str, str] = {}
    spent = 0.0
    if ledger is not None:
        with ledger:
            statuses = ledger.diff(str(manifest.path), jobs).statuses
            spent = sum(r.credits for r in ledger.jobs(manifest=str(manifest.path)) if charged(r))
    sendable = {JobStatus.PENDING.value, JobStatus.SUBMITTING.value}
    if options.retry_failed:
        sendable.add(JobStatus.FAILED.value)
    cap = options.max_credits if options.max_credits is not None else manifest.budget.max_credits
    outcome = Outcome()
    # As the executor does: re-sends first (neither limited nor charged), then new jobs in
    # manifest order until --limit or the budget stops them.
    would = [j for j in selected if statuses.get(j.key) == JobStatus.SUBMITTING.value]
    fresh = [
        j
        for j in selected
        if statuses.get(j.key, "pending") in sendable - {JobStatus.SUBMITTING.value}
    ]
    for job in fresh[: options.limit]:
        if cap is not None and spent + job.credits > cap:
            outcome.budget_stop = budget_message(job.key, job.credits, spent, cap)
            break
        spent += job.credits
        would.append(job)
    return RunResult(str(manifest.path), len(selected), outcome, output_dir, would_submit=would)


async def _execute(
    manifest: Manifest,
    ledger: Ledger,
    provider: Provider,
    api_client: httpx.AsyncClient | None,
    rows: list[JobRow],
    output_dir: Path,
    settings: ExecutorSettings,
    env: Environment,
) -> Outcome:
    download_client = (
        env.download_client() if env.download_client else httpx.AsyncClient(limits=DOWNLOAD_LIMITS)
    )
    try:
        throttle = Throttle(settings.requests_per_second)
        trainer = SoulTrainer(
            ledger,
            provider,
            manifest,
            throttle,
            max_attempts=settings.max_attempts,
            poll_initial=settings.poll_initial,
            poll_max=settings.poll_max,
            backoff=settings.backoff,
        )
        executor = Executor(
            ledger=ledger,
            provider=provider,
            download_client=download_client,
            output_dir=output_dir,
            settings=settings,
            throttle=throttle,
            souls=trainer.model_id,
            on_progress=env.on_progress,
        )
        if not env.handle_signals:
            return await executor.run(rows)
        async with anyio.create_task_group() as tg:
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

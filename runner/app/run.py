"""``run``, ``collect`` and ``run --dry-run``: manifests' jobs through the engine.

A run loads its manifests, takes the ledger's executor lock, records each plan, brings each
output store up to date with it (moved names, missing files), and hands the selected jobs to
the engine (``execute``). The dry run walks the same budget and order without writing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.app.common import Environment, bulk, executing, reading, run_loop, select
from runner.app.execute import Work, execute
from runner.app.recording import record_checked, resolve
from runner.engine import EngineSettings, Outcome, charged, charged_credits
from runner.engine.executor import ENDED, Driven
from runner.errors import ManifestError, RunnerError, UsageError
from runner.jobs import Job, expand
from runner.ledger import JobBrief, JobRow, JobStatus, Ledger, Transition
from runner.manifest import Manifest, load_manifest
from runner.outputs import OutputStore, open_store
from runner.providers import ProviderSettings, check_credentials, make_provider
from runner.settings import RunOptions, budget, engine_settings, provider_settings

COLLECTABLE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED)


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
    *,
    ledger: str | None = None,
) -> RunResult:
    """``runner run MANIFEST``: drive one manifest's jobs to the end."""
    return run_many([manifest_path], state_dir, options, env, ledger=ledger)[0]


@dataclass
class _Loaded:
    path: str  # as given
    manifest: Manifest
    jobs: list[Job]
    selected: list[Job]
    store: OutputStore
    settings: EngineSettings
    provider_settings: ProviderSettings


def run_many(
    manifest_paths: Sequence[str | Path],
    state_dir: Path,
    options: RunOptions | None = None,
    env: Environment | None = None,
    *,
    ledger: str | None = None,
) -> list[RunResult]:
    """``runner run M1 M2 …`` / ``runner collect``: drive several manifests' jobs in one
    process under one lock; manifests on one account share its limits (see ``execute``).
    One ``RunResult`` per manifest, in the order given.

    A manifest that cannot be loaded (or whose provider key is missing) is an error, except
    when collecting: then its result carries the error and the others are still collected.
    """
    options = options or RunOptions()
    env = env or Environment()
    loaded: list[_Loaded] = []
    failed: dict[str, RunResult] = {}
    api_client = None
    with bulk():
        for path in manifest_paths:
            try:
                loaded.append(_load(path, state_dir, options, env, dry=options.dry_run))
            except (ManifestError, UsageError) as err:
                if not options.collect:
                    raise
                failed[str(path)] = RunResult(
                    str(path), 0, Outcome(), str(state_dir), error=str(err)
                )
        if options.dry_run:
            return [_dry_run(x, state_dir, options, ledger) for x in loaded]
    if loaded:
        api_client = env.api_client() if env.api_client else None
    results = {str(p): failed.get(str(p)) for p in manifest_paths}
    with executing(state_dir, ledger) as opened:
        works = []
        with bulk():
            for x in loaded:
                rows, finishing, files, spent = _prepare(opened, x, options, env)
                provider = make_provider(
                    x.provider_settings, client=api_client, environ=env.environ
                )
                money = budget(x.manifest, options, spent)
                works.append(
                    Work(x.manifest, provider, rows, x.store, x.settings, money, finishing, files)
                )
        try:
            outcomes = run_loop(env, execute, opened, works, env, api_client) if works else []
        except BaseExceptionGroup as group:
            raise _single_error(group) from None
        for x, work, outcome in zip(loaded, works, outcomes, strict=True):
            counts = _counts(opened, work.rows, outcome)
            results[x.path] = RunResult(
                str(work.manifest.path), len(work.rows), outcome, work.store.root, counts
            )
    return [r for r in results.values() if r is not None]


def _counts(ledger: Ledger, rows: Sequence[Driven], outcome: Outcome) -> dict[str, int]:
    """The run's jobs by status after it: as the engine read them when it stopped (one read
    of 100,000 briefs, not two), or read now if a second Ctrl-C cancelled it before that."""
    if outcome.statuses or not rows:
        return dict(outcome.statuses)
    counts: dict[str, int] = {}
    for r in ledger.briefs(keys=[r.key for r in rows]):
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return counts


def _load(
    path: str | Path, state_dir: Path, options: RunOptions, env: Environment, *, dry: bool
) -> _Loaded:
    """A manifest, its jobs and its settings, checked (credentials included, unless only a
    dry run) before anything is written."""
    manifest = load_manifest(path)
    jobs = expand(manifest, state_dir=state_dir)
    store = open_store(str(manifest.output_dir(state_dir)), environ=env.environ)
    loaded = _Loaded(
        str(path),
        manifest,
        jobs,
        select(jobs, options),
        store,
        engine_settings(manifest, options, env.environ),
        provider_settings(manifest),
    )
    if not dry:
        check_credentials(loaded.provider_settings, env.environ)
    return loaded


def _prepare(
    ledger: Ledger, loaded: _Loaded, options: RunOptions, env: Environment
) -> tuple[list[Driven], set[str], Mapping[str, str], float]:
    """Record the plan (and what workers need: ``recording``), bring the outputs up to date
    with it, and pick the rows to drive: the selected jobs, and the jobs the manifest no
    longer produces that were already sent (``finishing``: whatever the selection, they are
    finished, then orphaned). Also the recorded URLs of the manifest's local files, and the
    credits the manifest has spent (``engine.charged_credits``)."""
    manifest = str(loaded.manifest.path)
    files: Mapping[str, str] = {}
    unchanged = False
    if options.collect:
        finishing = ledger.diff(manifest, loaded.jobs).finishing_keys
    else:
        resolved = resolve(ledger, loaded.manifest, loaded.jobs, env, strict=False)
        # The manifest's jobs as the ledger has them, read with the plan in the transaction
        # that records it (after resolving, which may upload for a while as workers change
        # jobs): what moved outputs are looked for in, and, when recording writes nothing
        # (the usual re-run), its jobs after recording too, without reading them again. The
        # plan is written there only when no video has to move and the ledger holds all of
        # its jobs for this manifest; else (an output changed, new jobs) the videos move
        # first, then the plan is recorded. The manifest's record (its output root among
        # it) is written before either: while videos move, a fleet worker downloads to the
        # new root under the job's old name, which the next run's relocation moves (as one
        # downloading meanwhile to the old root did when the record came after the moves).
        store, planned = loaded.store, {j.key: j.path for j in loaded.jobs}
        before: list[JobBrief] = []

        def ready(briefs: list[JobBrief]) -> bool:
            before.extend(briefs)
            return _placed(store, planned, briefs)

        checked = record_checked(ledger, loaded.manifest, loaded.jobs, store.root, resolved, ready)
        moved = 0
        if checked is None:  # videos to move first, then the plan
            moved = _relocate(ledger, store, planned, before)
            diff = ledger.record_plan(manifest, loaded.jobs)
        else:
            diff = checked
        finishing, files = diff.finishing_keys, resolved.files
        unchanged = diff.unchanged and not moved
    keys = [j.key for j in loaded.selected]
    if options.retry_failed and ledger.retry_failed(manifest, keys=keys):
        unchanged = False
    if options.collect:
        briefs = list(ledger.briefs(keys=keys))
        spent = charged_credits(ledger.briefs(manifest=manifest))
    else:
        # Recorded, every job of the plan is the manifest's: one read of the manifest's jobs
        # gives the selected ones (in the same order) and what it has spent (a re-check
        # below sends a charged job back to be downloaded: still charged).
        recorded = before if unchanged else list(ledger.briefs(manifest=manifest))
        spent = charged_credits(recorded)
        wanted = set(keys)
        briefs = [r for r in recorded if r.key in wanted]
    found = _recheck(ledger, loaded.store, briefs)
    if options.collect:
        found = [r for r in found if r.status in COLLECTABLE]
    rows = _whole(ledger, found)
    if finishing:
        chosen = {r.key for r in rows}
        rows += [r for r in ledger.jobs(keys=finishing) if r.key not in chosen]
    return _apply_limit(rows, options.limit), set(finishing), files, spent


def _whole(ledger: Ledger, rows: list[JobBrief | JobRow]) -> list[Driven]:
    """The rows the engine is given: whole for the jobs it has work for, and the brief read
    of those that had ended (the engine reads only their key, manifest and status: a no-op
    run of 100,000 downloaded jobs reads no whole row)."""
    wanted = [r.key for r in rows if r.status not in ENDED and not isinstance(r, JobRow)]
    if not wanted:
        return list(rows)
    whole = {r.key: r for r in ledger.jobs(keys=wanted)}
    return [whole.get(r.key, r) for r in rows]


def collect(
    manifest_path: str | Path | None,
    state_dir: Path,
    env: Environment | None = None,
    *,
    ledger: str | None = None,
) -> list[RunResult]:
    """``runner collect``: poll and download what is in flight, for one or every manifest."""
    options = RunOptions(collect=True)
    if manifest_path is not None:
        return [run(manifest_path, state_dir, options, env, ledger=ledger)]
    with reading(state_dir, ledger) as opened:
        rows = opened.jobs(status=COLLECTABLE) if opened is not None else []
    manifests = sorted({r.manifest for r in rows})
    if not manifests:
        return []
    return run_many(manifests, state_dir, options, env, ledger=ledger)


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


def _placed(store: OutputStore, planned: Mapping[str, str], rows: Sequence[JobBrief]) -> bool:
    """Whether ``_relocate`` has nothing to move: every job of the plan (``planned``: each
    one's output name, by key) is among ``rows`` (the manifest's jobs as the ledger has
    them), and each downloaded one's video is where its name goes, as the names tell."""
    downloaded, placed, location = JobStatus.DOWNLOADED, store.placed, store.location
    found = 0
    for row in rows:
        new = planned.get(row.key)
        if new is None:
            continue
        found += 1
        if row.status is downloaded and not placed(row.location or location(row.path), new):
            return False
    # (fewer found: the plan has jobs the ledger holds for no manifest, or for another)
    return found == len(planned)


def _relocate(
    ledger: Ledger, store: OutputStore, planned: Mapping[str, str], recorded: Sequence[JobBrief]
) -> int:
    """When ``output.filename`` or ``output.dir`` changes, downloaded videos move with it
    instead of being downloaded (or, if their URLs have expired, failed) again: to the
    output names ``planned`` gives by key. ``recorded`` are the manifest's jobs as the
    ledger has them; the ledger is read again only when the plan has jobs it does not hold
    (new ones, or another manifest's). How many moved."""
    downloaded = JobStatus.DOWNLOADED
    rows: Sequence[JobBrief] = [r for r in recorded if r.key in planned]
    if len(rows) < len(planned):
        rows = list(ledger.briefs(keys=list(planned), status=downloaded))
    moved = 0
    for row in rows:
        if row.status is not downloaded:
            continue
        old = row.location or store.location(row.path)
        new = store.relocate(old, planned[row.key])
        if new is not None:
            detail = f"moved {old} to {new} (output changed)"
            ledger.transition(row.key, JobStatus.DOWNLOADED, detail=detail, location=new)
            moved += 1
    return moved


def _recheck(ledger: Ledger, store: OutputStore, rows: list[JobBrief]) -> list[JobBrief | JobRow]:
    """A downloaded job whose video is gone or the wrong size goes back to be downloaded (all
    of them in one transaction, before anything is sent); ``rows`` as they are then."""
    changes = []
    downloaded, problem_of = JobStatus.DOWNLOADED, store.problem
    for row in rows:
        if row.status is not downloaded:
            continue
        location = row.location or store.location(row.path)
        problem = problem_of(location, row.bytes)
        if problem is not None:
            detail = f"video {location} {problem}; downloading again"
            changes.append(Transition(row.key, JobStatus.COMPLETED, detail, {"location": None}))
    if not changes:
        return list(rows)
    changed: dict[str, JobRow] = {row.key: row for row in ledger.transition_many(changes)}
    return [changed.get(row.key, row) for row in rows]


def _apply_limit(rows: list[Driven], limit: int | None) -> list[Driven]:
    """Keep everything already under way, and at most ``limit`` jobs not yet sent."""
    if limit is None:
        return rows
    pending = [r for r in rows if r.status is JobStatus.PENDING][:limit]
    kept = {r.key for r in pending}
    return [r for r in rows if r.status is not JobStatus.PENDING or r.key in kept]


def _dry_run(
    loaded: _Loaded, state_dir: Path, options: RunOptions, ledger: str | None
) -> RunResult:
    """What ``run`` would submit (with --limit and the budget applied), reading the ledger
    only: the same order and the same ``Budget`` as the executor."""
    manifest, jobs, selected, store = loaded.manifest, loaded.jobs, loaded.selected, loaded.store
    statuses: dict[str, str] = {}
    spent = 0.0
    with reading(state_dir, ledger) as opened:
        if opened is not None:
            diff = opened.diff(str(manifest.path), jobs, charged=charged)
            statuses, spent = diff.statuses, diff.charged_credits
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

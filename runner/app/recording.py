"""What ``run`` and ``enqueue`` record of a manifest, so that ``runner worker`` on any host
needs nothing but the ledger and the API keys (SPEC §8).

Beside the plan (the jobs, whose requests already carry their matrix and CSV values) a
manifest is recorded with its YAML, where its videos go, and what only the recording host's
disk can tell (``ledger.Resolved``): each soul's images as its globs match them here, the
public URL of every local file that jobs still to be sent or their souls name — uploaded
now, once per content, through the provider's upload endpoint (``engine.uploads``) — and the
jobs it no longer produces that are still in flight (``finishing``). A worker then sends the
recorded URLs, trains souls from them, and finishes those jobs, never reading the manifest's
folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from runner.app.common import Environment, provider_calls
from runner.app.execute import account_throttle
from runner.engine.uploads import inside, is_local, public_url
from runner.errors import (
    DeadlineError,
    ExhaustedError,
    FatalError,
    PermanentError,
    ProviderError,
    UsageError,
)
from runner.jobs import Job
from runner.ledger import IN_FLIGHT, JobBrief, JobStatus, Ledger, PlanDiff
from runner.ledger.claims import Resolved
from runner.manifest import Manifest
from runner.providers import check_credentials, make_provider
from runner.settings import RunOptions, engine_settings, provider_settings

#: Statuses of jobs that may still be sent (a failed one after ``retry``): their files count.
TO_SEND = frozenset({JobStatus.PENDING.value, JobStatus.SUBMITTING.value, JobStatus.FAILED.value})

#: Uploads under way at once when a manifest is recorded (the manifest's rate still applies).
UPLOADS_AT_ONCE = 4


@dataclass(frozen=True)
class _File:
    """A local file to upload: its name as the manifest gives it, the path read, and what
    names it (for a message)."""

    name: str
    path: str
    what: str


def resolve(
    ledger: Ledger, manifest: Manifest, jobs: Sequence[Job], env: Environment, *, strict: bool
) -> Resolved:
    """What a worker needs of the manifest beside its YAML and jobs, its local files uploaded.

    ``strict`` (``enqueue``): a file that cannot be uploaded is an error — a missing or
    outside file a ``UsageError`` (exit 2) naming the job or soul, a provider that stays
    unavailable a ``ProviderError`` (exit 1). Otherwise (``run``, which executes here) such a
    file is left unrecorded: the engine deals with it per job, as it always has (held while
    the provider is unavailable, failed when it cannot be sent).
    """
    # the plan's finishing jobs, read without a whole diff: only this manifest's in flight
    in_flight = ledger.jobs(manifest=str(manifest.path), status=tuple(IN_FLIGHT))
    produced = {job.key for job in jobs} if in_flight else set()
    finishing = tuple(row.key for row in in_flight if row.key not in produced)
    souls = {name: manifest.soul_images(name) for name in manifest.souls}
    files = _upload(ledger, manifest, _local_files(ledger, manifest, jobs, souls), env, strict)
    return Resolved(files=files, souls=souls, finishing=finishing)


def record(
    ledger: Ledger, manifest: Manifest, jobs: Sequence[Job], output: str, resolved: Resolved
) -> PlanDiff:
    """Record what workers need of the manifest, then its plan: in this order, so that no
    process sees the plan's new jobs without the URLs of their files."""
    _record_manifest(ledger, manifest, output, resolved)
    return ledger.record_plan(str(manifest.path), jobs)


def record_checked(
    ledger: Ledger,
    manifest: Manifest,
    jobs: Sequence[Job],
    output: str,
    resolved: Resolved,
    ready: Callable[[list[JobBrief]], bool],
) -> PlanDiff | None:
    """``record``, the plan once ``ready`` has seen the manifest's jobs as the ledger holds
    them (``Ledger.record_plan_checked``): ``None`` when it said no, and no plan was written."""
    _record_manifest(ledger, manifest, output, resolved)
    return ledger.record_plan_checked(str(manifest.path), jobs, ready)


def _record_manifest(ledger: Ledger, manifest: Manifest, output: str, resolved: Resolved) -> None:
    source = manifest.path.read_text(encoding="utf-8")
    ledger.record_manifest(str(manifest.path), source=source, output=output, resolved=resolved)


def _local_files(
    ledger: Ledger, manifest: Manifest, jobs: Sequence[Job], souls: dict[str, list[str]]
) -> list[_File]:
    """The local files still needed, each once, in manifest order: the ``image_url`` of
    jobs that may still be sent (the ledger read only for jobs that name one), and the
    images of the souls jobs use (a handful: resolved whatever their jobs' status)."""
    local = [job for job in jobs if "image_url" in job.request and _local_image(job) is not None]
    rows = ledger.jobs(keys=[job.key for job in local]) if local else []
    sent = {row.key for row in rows if row.status.value not in TO_SEND}
    found: dict[str, _File] = {}
    for job in local:
        image = _local_image(job)
        if image is not None and image not in found and job.key not in sent:
            what = f"campaign {job.campaign}, job {job.key}: image_url {image!r}"
            found[image] = _File(image, "", what)
    for soul in sorted({job.soul for job in jobs if job.soul}):
        for image in souls.get(soul, []):
            if is_local(image) and image not in found:
                found[image] = _File(image, image, f"souls.{soul}: image {image}")
    return list(found.values())


def _local_image(job: Job) -> str | None:
    image = job.request.get("image_url")
    return image if isinstance(image, str) and is_local(image) else None


def _upload(
    ledger: Ledger, manifest: Manifest, files: list[_File], env: Environment, strict: bool
) -> dict[str, str]:
    """Each file's public URL, by its name (uploaded once per content; see ``record``)."""
    if not files:
        return {}
    chosen = provider_settings(manifest)
    check_credentials(chosen, env.environ)
    settings = engine_settings(manifest, RunOptions(), env.environ)
    urls: dict[str, str] = {}
    problems: dict[str, ProviderError] = {}

    async def upload_all() -> None:
        api_client = env.api_client() if env.api_client else None
        provider = make_provider(chosen, client=api_client, environ=env.environ)
        rps = settings.requests_per_second
        throttle = account_throttle(ledger.shared_limits(), provider, rps, env)
        calls = provider_calls(settings, env, throttle)
        locks: dict[str, anyio.Lock] = {}
        limiter = anyio.CapacityLimiter(UPLOADS_AT_ONCE)

        async def one(file: _File) -> None:
            async with limiter:
                try:
                    path = file.path or str(inside(file.name, manifest.path.parent))
                    urls[file.name] = await public_url(
                        path, ledger=ledger, provider=provider, calls=calls, locks=locks
                    )
                except (PermanentError, DeadlineError, FatalError) as err:
                    problems[file.what] = err

        try:
            async with env.clock.running(), anyio.create_task_group() as tg:
                for file in files:
                    tg.start_soon(one, file)
        finally:
            with anyio.CancelScope(shield=True):
                await provider.aclose()
                if api_client is not None:
                    await api_client.aclose()

    anyio.run(upload_all)
    for err in problems.values():
        if isinstance(err, FatalError):
            raise err  # the credentials or the account were refused: stop at once
    if strict and problems:
        what = next(f.what for f in files if f.what in problems)  # the first, in order
        err = problems[what]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = f"{manifest.path}: {what}: {err.message}{more}; nothing was enqueued"
        if isinstance(err, (DeadlineError, ExhaustedError)):
            raise ProviderError(f"{message} (the upload may work if tried again)")
        raise UsageError(message)
    return urls

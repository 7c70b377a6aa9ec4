"""``validate`` and ``plan``: what a manifest says, and how it compares with the ledger.

``validate`` imports only what expanding takes: the ledger, the engine, the providers and
anyio are imported by ``plan`` (and its estimates) when it runs."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.app.bulk import bulk
from runner.errors import ManifestError, UsageError
from runner.jobs import Job, expand, number, plan_entries, plan_statuses, plan_summary
from runner.manifest import Manifest, load_manifest

if TYPE_CHECKING:
    from runner.app.common import Environment
    from runner.ledger import PlanDiff


@dataclass(frozen=True)
class Validated:
    """One manifest checked: how many jobs it makes, or what is wrong with it."""

    path: Path
    jobs: int | None = None
    error: ManifestError | None = None


def validate(paths: Sequence[Path], state_dir: Path | None = None) -> list[Validated]:
    """Load and expand each manifest (its output paths checked where they will land, given
    the state directory); every problem is reported, none raised."""
    results = []
    for path in paths:
        try:
            with bulk():
                jobs = expand(load_manifest(path), state_dir=state_dir)
            results.append(Validated(path, jobs=len(jobs)))
        except ManifestError as err:
            results.append(Validated(path, error=err))
    return results


@dataclass(frozen=True)
class Planned:
    """A plan: the ``plan --json`` document's ``summary``, the expanded ``jobs`` in its order
    and each one's ``statuses``; ``document`` is the whole document (its job mappings made
    when first asked for: ``plan --json`` writes them from the jobs, a column at a time)."""

    summary: dict[str, Any]
    jobs: list[Job]
    statuses: list[str]

    @functools.cached_property
    def document(self) -> dict[str, Any]:
        return {"summary": self.summary, "jobs": plan_entries(self.jobs, self.statuses)}


def plan(
    manifest_path: str | Path,
    state_dir: Path,
    *,
    estimate: bool = False,
    env: Environment | None = None,
    ledger: str | None = None,
) -> Planned:
    """The ``plan --json`` document (see :class:`Planned`): the manifest's jobs against the
    ledger, with both budget figures (this run's new jobs against ``max_credits``; the
    manifest's total, charged so far plus new, against ``max_total_credits``). Reads the
    ledger without the lock and writes nothing; without a ledger every job is new. With
    ``estimate``, the provider prices the jobs (one call per priced shape, see
    :func:`estimated`) instead of ``budget.prices``."""
    manifest = load_manifest(manifest_path)
    with bulk():
        jobs = expand(manifest, state_dir=state_dir)
    if estimate:
        from runner.app.common import Environment

        jobs = estimated(manifest, jobs, env or Environment())
    statuses: dict[str, str] = {}
    orphaned = finishing = 0
    spent = 0.0
    with bulk():
        diff = _diff(manifest, jobs, state_dir, ledger)
        if diff is not None:
            statuses, orphaned = diff.statuses, diff.orphaned
            finishing = len(diff.finishing_keys)
            spent = diff.charged_credits
        texts = plan_statuses(jobs, statuses)
    summary = plan_summary(jobs, texts, orphaned, finishing)
    summary["charged_credits"] = number(spent)
    summary["estimated_total_credits"] = number(spent + summary["estimated_credits"])
    summary["max_credits"] = manifest.budget.max_credits
    summary["max_total_credits"] = manifest.budget.max_total_credits
    if estimate:
        summary["priced_by"] = "provider"
    return Planned(summary, jobs, texts)


#: The file of a state directory's own ledger (``runner.ledger.LEDGER_FILE``), named here so
#: a plan where there is none imports no ledger code (sqlite_utils, the engine: ~0.1 s).
LEDGER_FILE = "ledger.db"


def _diff(
    manifest: Manifest, jobs: list[Job], state_dir: Path, ledger: str | None
) -> PlanDiff | None:
    """The jobs against the ledger (``ledger``, else the state directory's), read once, the
    credits charged so far summed as it reads; ``None`` when there is no ledger yet."""
    if ledger is None and not (Path(state_dir) / LEDGER_FILE).is_file():
        return None  # what reading() finds there: no ledger
    from runner.app.common import reading
    from runner.engine import charged

    with reading(state_dir, ledger) as opened:
        if opened is None:
            return None
        return opened.diff(str(manifest.path), jobs, charged=charged)


#: Request fields that do not change a price: jobs that differ only in these share one
#: estimate call.
PRICE_FREE_FIELDS = frozenset({"prompt", "seed", "image_url"})


def priced_shape(request: dict[str, Any]) -> str:
    """What a request's price depends on, as a key: the body without ``PRICE_FREE_FIELDS``."""
    shape = {k: v for k, v in request.items() if k not in PRICE_FREE_FIELDS}
    return json.dumps(shape, sort_keys=True, ensure_ascii=False)


def estimated(manifest: Manifest, jobs: list[Job], env: Environment) -> list[Job]:
    """``jobs`` priced by the provider's estimate endpoint, asked once per priced shape. A
    provider that cannot price is a ``UsageError``."""
    import anyio

    from runner.app.common import provider_calls
    from runner.providers import estimator, make_provider
    from runner.settings import RunOptions, engine_settings, provider_settings

    settings = engine_settings(manifest, RunOptions(), env.environ)
    api_client = env.api_client() if env.api_client else None
    provider = make_provider(provider_settings(manifest), client=api_client, environ=env.environ)
    pricer = estimator(provider)

    async def price_all() -> dict[str, float]:
        prices: dict[str, float] = {}
        try:
            if pricer is None:
                raise UsageError(
                    f"provider {provider.name} cannot estimate prices; only `higgsfield` (the "
                    "platform API) can: without --estimate, budget.prices is used"
                )
            calls = provider_calls(settings, env)
            for job in jobs:
                shape = priced_shape(job.request)
                if shape not in prices:
                    prices[shape] = await calls(functools.partial(pricer.estimate, job.request))
        finally:
            await provider.aclose()
            if api_client is not None:
                await api_client.aclose()
        return prices

    prices = anyio.run(price_all)
    return [
        replace(job, credits=prices[priced_shape(job.request)], priced_by="provider")
        for job in jobs
    ]

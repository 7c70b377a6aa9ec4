"""Expansion (SPEC §3): a manifest into its jobs, matrix × seeds/variants, checked as it goes.

For each campaign, in manifest order: the matrix rows (``runner.manifest.matrix``), then the
rows of its CSV file, or one empty row when it has neither. Each row's request is
``defaults`` < campaign fields < row values (a null unsets a field); string fields are
templates over ``vars`` + the row + ``campaign``. What the provider would refuse at run time
is refused here (local ``image_url`` files with a provider that cannot upload; ``model``
values that are no model id for the ``higgsfield`` provider), and each job's credits are
priced from ``budget.prices``; output paths are checked by :mod:`runner.jobs.paths`.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

from runner.errors import ManifestError
from runner.jobs.keys import (
    Job,
    built_job,
    canonical_json,
    job_key,
    key_parts,
    key_suffix,
    keys_of_texts,
    variant_seed,
)
from runner.jobs.paths import check_paths
from runner.manifest import REQUEST_FIELDS, TEMPLATED_FIELDS, FieldPath, Manifest, Row, Where
from runner.manifest.matrix import expand_matrix, row_bound, same
from runner.manifest.template import RowPaths, render

# The platform's model ids: owner/name[/...] (runner.providers.platform.MODEL_ID, two or
# more segments); these first segments are its own endpoints, never models.
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+")
MODEL_ENDPOINTS = frozenset({"requests", "files", "v1", "estimate"})
_URL_SCHEMES = re.compile(r"^(?:https?|data):", re.IGNORECASE)
_ABSENT = object()
_REQUEST_FIELD_SET = frozenset(REQUEST_FIELDS)
_KEY, _PATH = operator.attrgetter("key"), operator.attrgetter("path")
# The names of a filename template that differ between the jobs of one row.
PER_JOB = frozenset({"key", "seed", "variant"})


def expand(manifest: Manifest, *, state_dir: str | Path | None = None) -> list[Job]:
    """All jobs of a manifest, in manifest order; ManifestError (with position) if any is bad.

    With ``state_dir`` the output paths are also checked where they will really be: against
    the state directory's files and the limits of the filesystem they land on (the default
    ``output.dir`` is inside the state directory).
    """
    _check_size(manifest)
    jobs: list[Job] = []
    origins: list[tuple[int, Where]] = []  # where each row's jobs start, and the row's place
    try:
        for ci in range(len(manifest.campaigns)):
            scope = _Scope(manifest, ci)
            for row in _campaign_rows(scope):
                made = _row_jobs(scope, row, len(jobs))
                origins.append((len(jobs), row.origin or scope.whole))
                jobs.extend(made)
    except ManifestError:
        _check_distinct(manifest, jobs, origins)  # what the rows before made is checked first
        raise
    _check_distinct(manifest, jobs, origins)
    check_paths(manifest, jobs, state_dir)
    return jobs


def _check_distinct(m: Manifest, jobs: list[Job], origins: list[tuple[int, Where]]) -> None:
    """Refuse the first job (in manifest order) made twice, or written where another is."""
    if len(set(map(_KEY, jobs))) == len(jobs) == len(set(map(_PATH, jobs))):
        return  # told in C: nothing below would be found
    first: dict[str, Where] = {}
    paths: dict[str, Job] = {}
    bounds = [start for start, _ in origins]
    for i, job in enumerate(jobs):
        where = origins[bisect.bisect_right(bounds, i) - 1][1]
        if job.key in first:
            raise where.error(
                f"campaign {job.campaign!r} makes the same job twice "
                f"(row {canonical_json(job.vars)}; first from {_short(first[job.key])})"
            )
        if job.path in paths:
            raise m.where(("output", "filename")).error(
                f"jobs {paths[job.path].key} and {job.key} would both be written to "
                f"{job.path!r}; put {{key}} in the filename"
            )
        first[job.key] = where
        paths[job.path] = job


def _short(where: Where) -> str:
    return f"{where.file}:{where.line}" if where.line else where.file


def _check_size(m: Manifest) -> None:
    """Refuse before building anything when the rows could pass ``limits.max_jobs``."""
    total = 0
    for ci, c in enumerate(m.campaigns):
        rows = len(m.csv_rows(ci))
        if c.matrix is not None:
            rows += row_bound(c.matrix.axes, c.matrix.include)
        elif c.rows is None:
            rows = 1
        count = rows * (len(c.seeds) if c.seeds is not None else c.variants or 1)
        total += count
        if total > m.limits.max_jobs:
            part = "matrix" if c.matrix is not None else "rows" if c.rows else "name"
            raise m.where(("campaigns", ci, part)).error(
                f"campaign {c.name!r} can expand to {count} jobs, {total} with the campaigns "
                f"before it: more than limits.max_jobs={m.limits.max_jobs} "
                "(raise it deliberately if you mean it)"
            )


class _Scope:
    """What every row of one campaign shares, worked out once per campaign."""

    def __init__(self, m: Manifest, ci: int) -> None:
        self.manifest = m
        self.index = ci
        self.campaign = c = m.campaigns[ci]
        self.where = m.locator()
        self.base: FieldPath = ("campaigns", ci)
        self.whole = self.where(self.base)
        self.filename_where = self.where(("output", "filename"))
        self.paths = RowPaths(m.output.filename, self.filename_where, PER_JOB)
        self.manifest_path = str(m.path)
        # defaults < campaign; a row's values go on top of these
        self.request: dict[str, Any] = {}
        self.sources: dict[str, Where] = {}
        for items, base in (
            (m.defaults.request_items(), ("defaults",)),
            (c.request_items(), self.base),
        ):
            for name, value in items.items():
                self.request[name] = value
                self.sources[name] = self.where((*base, name))
        self.tags = tuple(c.tags)
        self._price_fields = _price_fields(m)
        self.seed_priced = "seed" in self._price_fields
        self.present = {k: v for k, v in self.request.items() if v is not None}
        # a campaign's seeds, and their canonical JSON: the same for each row
        self.seeds: Sequence[int | None] = tuple(c.seeds or ())
        self.seed_texts = [canonical_json(seed) for seed in self.seeds]
        self.no_variants: Sequence[int | None] = (None,) * len(self.seeds)
        self.suffix = key_suffix(None, c.soul)  # what ends a key without a variant
        self._fields: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._prices: dict[tuple[Any, ...], tuple[float, str]] = {}

    def body_fields(self, request: Mapping[str, Any]) -> tuple[str, ...]:
        """A body's field names in order: the known fields first, then the rest, and
        ``seed`` where REQUEST_FIELDS puts it (worked out once per set of fields)."""
        names = tuple(request)
        fields = self._fields.get(names)
        if fields is None:
            every = dict.fromkeys((*REQUEST_FIELDS, *names, "seed"))
            fields = tuple(k for k in every if k in request or k == "seed")
            self._fields[names] = fields
        return fields

    def credits(self, request: Mapping[str, Any], origin: Where) -> tuple[float, str]:
        """:func:`_credits`, worked out once per distinct set of the fields prices match on
        (values told apart as ``same`` does: by type too; lists and mappings not cached)."""
        values = tuple(
            (type(v), v) if (v := request.get(k, _ABSENT)) is not _ABSENT else _ABSENT
            for k in self._price_fields
        )
        try:
            return self._prices[values]
        except KeyError:
            pass
        except TypeError:  # an unhashable value
            return _credits(self, request, origin)
        self._prices[values] = credits = _credits(self, request, origin)
        return credits


def _campaign_rows(scope: _Scope) -> list[Row]:
    c, base = scope.campaign, scope.base
    rows: list[Row] = []
    if c.matrix is not None:
        rows = expand_matrix(
            c.matrix.axes,
            c.matrix.include,
            c.matrix.exclude,
            where=scope.where,
            base=(*base, "matrix"),
        )
        if not rows:
            raise scope.where((*base, "matrix")).error("exclude removes every row of the matrix")
    rows += scope.manifest.csv_rows(scope.index)
    if c.matrix is None and c.rows is None:
        rows = [Row({}, {}, scope.whole)]
    return rows


def _row_jobs(scope: _Scope, row: Row, index: int) -> list[Job]:
    m, c = scope.manifest, scope.campaign
    origin = row.origin or scope.whole
    request, sources = _layered_request(scope, row)
    context = {**m.vars, **row.values, "campaign": c.name}
    for name in TEMPLATED_FIELDS & request.keys():
        if isinstance(request[name], str):
            request[name] = render(request[name], context, sources[name])
    _check_provider_fields(scope, row, request, sources)
    kind = request.get("type")
    if kind == "image-to-video" and not request.get("image_url"):
        raise sources["type"].error(f"image-to-video needs image_url (campaign {c.name!r})")
    if kind == "text-to-video" and not request.get("prompt"):
        raise sources["type"].error(f"text-to-video needs a prompt (campaign {c.name!r})")
    row_vars = dict(row.values)  # shared by the row's jobs, never changed
    # request order: the known fields first, then the rest; a seed goes where REQUEST_FIELDS
    # puts it
    fields = scope.body_fields(request)
    # The row's jobs, a column each: they differ only by their seed (and variant). Each body
    # is copied from ``seeded`` with its seed set, each key's text put together from parts
    # encoded once for the row.
    seeds: Sequence[int | None]
    variants: Sequence[int | None]
    if c.seeds is None and not c.variants:  # one job, and no seed field
        seeds = variants = (None,)
        bodies = [{k: request[k] for k in fields if k in request}]
        keys = [job_key(c.name, row_vars, bodies[0], None, c.soul)]
    else:
        head, tail = key_parts(c.name, row_vars, request)
        if c.seeds is not None:
            seeds, variants, texts = scope.seeds, scope.no_variants, scope.seed_texts
            tail += scope.suffix  # no variant: each key ends alike
            keys = keys_of_texts([head + text + tail for text in texts])
        else:
            bare = {k: v for k, v in request.items() if k != "seed"}
            variants = range(c.variants or 0)
            seeds = [variant_seed(c.name, row.values, bare, v) for v in variants]
            keys = keys_of_texts(
                head + canonical_json(seed) + tail + key_suffix(variant, c.soul)
                for seed, variant in zip(seeds, variants, strict=True)
            )
        seeded = {k: request.get(k) for k in fields}
        bodies = list(map(dict.copy, repeat(seeded, len(seeds))))
        deque(map(dict.__setitem__, bodies, repeat("seed"), seeds), maxlen=0)  # each its seed
    names = {**context, "key": None, "seed": None, "variant": None}
    paths = scope.paths(names, {"key": keys, "seed": seeds, "variant": variants})
    # the seed changes the price only where a price rule matches on it
    credits: Iterable[float]
    priced_by: Iterable[str]
    if scope.seed_priced:
        credits, priced_by = zip(*[scope.credits(body, origin) for body in bodies], strict=True)
    else:
        price = scope.credits(bodies[0], origin)
        credits, priced_by = repeat(price[0]), repeat(price[1])
    return list(
        map(
            built_job,
            keys,
            repeat(c.name),
            repeat(scope.manifest_path),
            itertools.count(index),
            repeat(row_vars),
            bodies,
            paths,
            credits,
            priced_by,
            variants,
            repeat(c.soul),
            repeat(scope.tags),
        )
    )


def _check_provider_fields(
    scope: _Scope, row: Row, request: Mapping[str, Any], sources: Mapping[str, Where]
) -> None:
    """What the provider would refuse at run time, refused now (SPEC v2 §3)."""
    provider = scope.manifest.provider.name
    image = request.get("image_url")
    if provider == "higgsfieldapi" and isinstance(image, str) and not _URL_SCHEMES.match(image):
        raise sources["image_url"].error(
            f"image_url {image!r} is a local file, and provider higgsfieldapi has no upload "
            "endpoint: give an http(s) URL, or use provider higgsfield"
        )
    model = request.get("model")
    if provider == "higgsfield" and model is not None:
        if (
            isinstance(model, str)
            and MODEL_ID.fullmatch(model)
            and model.split("/", 1)[0] not in MODEL_ENDPOINTS
        ):
            return
        message = (
            f"model {model!r} does not look like a model id (owner/name[/...], e.g. "
            "higgsfield-ai/dop/standard)"
        )
        if "model" in row.values:
            message += (
                "; a matrix key named 'model' sets the request's model: to use it as a "
                "template variable, give it another name (e.g. 'look')"
            )
        raise sources["model"].error(message)


def _layered_request(scope: _Scope, row: Row) -> tuple[dict[str, Any], dict[str, Where]]:
    """defaults < campaign < row, with where each winning value was written."""
    if _REQUEST_FIELD_SET.isdisjoint(row.values):  # the row sets no request field
        return dict(scope.present), scope.sources
    values = dict(scope.request)
    sources = dict(scope.sources)
    for name in REQUEST_FIELDS:
        if name in row.values:
            values[name] = row.values[name]
            sources[name] = row.sources.get(name) or row.origin or scope.whole
    request = {k: v for k, v in values.items() if v is not None}
    return request, sources


def _credits(scope: _Scope, request: Mapping[str, Any], origin: Where) -> tuple[float, str]:
    """The credits from the first price rule whose ``match`` items all equal the request's
    fields (none → 0), and ``priced_by`` naming that rule."""
    for i, rule in enumerate(scope.manifest.budget.prices):
        if all(k in request and same(request[k], v) for k, v in rule.match.items()):
            source = f"budget.prices[{i}]"
            if rule.credits is not None:
                return float(rule.credits), source
            duration = request.get("duration")
            if duration is None:
                raise scope.where(("budget", "prices", i)).error(
                    f"this rule prices by the second, but a job has no duration ({_short(origin)})"
                )
            credits = float(rule.credits_per_second or 0) * float(duration)
            return credits, source
    return 0.0, "unpriced"


def _price_fields(m: Manifest) -> tuple[str, ...]:
    """The request fields a price can depend on: those rules match on, and the duration."""
    fields = {k for rule in m.budget.prices for k in rule.match}
    return tuple(sorted(fields | {"duration"}))

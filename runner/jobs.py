"""Jobs: what a manifest expands into (matrix × seeds/variants), their keys and costs.

Expansion follows SPEC §3. For each campaign, in manifest order: the matrix rows
(``runner.manifest.matrix``), then the rows of its CSV file, or one empty row when it has
neither. Each row's request is ``defaults`` < campaign fields < row values (a null unsets a
field); string fields are templates over ``vars`` + the row + ``campaign``.

Keys: the first 16 hex digits of sha256 over the canonical JSON (sorted keys, compact) of
``[campaign, row, request, variant]``, and ``soul`` appended when the campaign uses one, since
the soul is sent beside the body and changes the video.

Variant seeds (``variants: N``): variant ``v`` of a row gets the seed
``int(sha256(canonical_json(["seed", campaign, row, request, v]))[:8], 16) & 0x7FFFFFFF``,
where ``request`` is the row's request before the seed is set. So seeds are stable across
runs and machines, and distinct per row and variant.

What can only fail at run time is refused here, at validate time (SPEC v2 §3): output paths
that collide (with another job's file, its ``.part``/``.part.id``, a folder another job
needs, on a case-insensitive disk too), that land on the runner's own state files, or that
pass the operating system's limits; local ``image_url`` files with a provider that cannot
upload; ``model`` values that are no model id for the ``higgsfield`` provider.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runner.manifest import REQUEST_FIELDS, TEMPLATED_FIELDS, FieldPath, Manifest, Row, Where
from runner.manifest.matrix import expand_matrix, row_bound, same
from runner.manifest.template import render, render_path

IN_FLIGHT_STATUSES = frozenset({"submitting", "queued", "running", "completed"})
NOT_SUBMITTED_STATUSES = frozenset({"new", "pending"})
DONE_STATUS = "downloaded"
FAILED_STATUS = "failed"
_NO_STATUSES: Mapping[str, str] = MappingProxyType({})

# Files a download writes beside its video while it runs (runner.outputs.local).
TEMPORARY_SUFFIXES = (".part", ".part.id")
# The state directory's own files (runner.ledger.sqlite): no video may take these names.
STATE_FILES = frozenset(
    {"ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db-journal", "runner.lock"}
)
DEFAULT_NAME_MAX = 255  # bytes per path segment, where the filesystem cannot be asked
DEFAULT_PATH_MAX = 4096  # bytes per absolute path (Linux); macOS allows 1024
S3_KEY_MAX = 1024  # bytes per object key
# The platform's model ids: owner/name[/...] (runner.providers.platform.MODEL_ID, two or
# more segments); these first segments are its own endpoints, never models.
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+")
MODEL_ENDPOINTS = frozenset({"requests", "files", "v1", "estimate"})
_URL_SCHEMES = re.compile(r"^(?:https?|data):", re.IGNORECASE)


@dataclass(frozen=True)
class Job:
    """One generation to make: a campaign's matrix row turned into a request body."""

    key: str  # 16 hex of sha256 over canonical JSON (campaign, row, request, variant)
    campaign: str
    manifest: str  # the manifest's path, as resolved (absolute)
    index: int  # position in manifest order
    vars: dict[str, Any]  # the matrix row
    request: dict[str, Any]  # the body that will be sent (soul model id added at submit)
    path: str  # output filename relative to output.dir, already sanitized
    credits: float  # estimated credits from budget.prices
    variant: int | None = None
    soul: str | None = None  # name of a soul in the manifest's ``souls:``
    tags: tuple[str, ...] = field(default_factory=tuple)


def canonical_json(value: Any) -> str:
    """JSON that is the same for equal data, whatever the order of mapping keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_key(
    campaign: str,
    row: Mapping[str, Any],
    request: Mapping[str, Any],
    variant: int | None = None,
    soul: str | None = None,
) -> str:
    """The job's identity in the ledger (see the module docstring)."""
    material: list[Any] = [campaign, dict(row), dict(request), variant]
    if soul is not None:
        material.append(soul)
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()[:16]


def variant_seed(
    campaign: str, row: Mapping[str, Any], request: Mapping[str, Any], variant: int
) -> int:
    """The derived seed of a variant: deterministic, 31 bits (see the module docstring)."""
    material = ["seed", campaign, dict(row), dict(request), variant]
    digest = hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def expand(manifest: Manifest, *, state_dir: str | Path | None = None) -> list[Job]:
    """All jobs of a manifest, in manifest order; ManifestError (with position) if any is bad.

    With ``state_dir`` the output paths are also checked where they will really be: against
    the state directory's files and the limits of the filesystem they land on (the default
    ``output.dir`` is inside the state directory).
    """
    _check_size(manifest)
    jobs: list[Job] = []
    first: dict[str, Where] = {}
    paths: dict[str, Job] = {}
    for ci in range(len(manifest.campaigns)):
        scope = _Scope(manifest, ci)
        for row in _campaign_rows(scope):
            for job, where in _row_jobs(scope, row, len(jobs)):
                if job.key in first:
                    raise where.error(
                        f"campaign {job.campaign!r} makes the same job twice "
                        f"(row {canonical_json(job.vars)}; first from {_short(first[job.key])})"
                    )
                if job.path in paths:
                    raise scope.filename_where.error(
                        f"jobs {paths[job.path].key} and {job.key} would both be written to "
                        f"{job.path!r}; put {{key}} in the filename"
                    )
                first[job.key] = where
                paths[job.path] = job
                jobs.append(job)
    _check_paths(manifest, jobs, state_dir)
    return jobs


def _fold(path: str) -> str:
    """How a case-insensitive, normalizing disk (macOS, Windows, exFAT, SMB) sees a path."""
    return unicodedata.normalize("NFC", path).casefold()


def _check_paths(m: Manifest, jobs: Sequence[Job], state_dir: str | Path | None) -> None:
    """Refuse output paths that would collide or could never be written (linear time)."""
    at = m.where(("output", "filename"))
    files: dict[str, tuple[str, Job]] = {}  # folded name → (name, job), .part files included
    for job in jobs:
        segments = job.path.split("/")
        if _fold(segments[-1]) in STATE_FILES:
            # Wherever output.dir is, it may be the state directory (or be made it by --state).
            raise at.error(
                f"job {job.key} would be written to {job.path!r}: {segments[-1]!r} is a name "
                "of the runner's own state files (the ledger, its lock); rename it"
            )
        for name in (job.path, *(job.path + s for s in TEMPORARY_SUFFIXES)):
            folded = _fold(name)
            if folded in files and files[folded][1].key != job.key:
                other_name, other = files[folded]
                raise at.error(
                    f"jobs {other.key} and {job.key} would write {other_name!r} and {name!r}, "
                    "the same file (a download's temporary file, or on a case-insensitive "
                    "disk); put {key} in the filename"
                )
            files[folded] = (name, job)
    # Every path has as many segments as the template (an empty one renders "_"), so a file
    # never stands where another job needs a folder.
    _check_limits(m, jobs, state_dir)


def _check_limits(m: Manifest, jobs: Sequence[Job], state_dir: str | Path | None) -> None:
    """Every path within the limits of the filesystem where it lands."""
    at_dir = m.where(("output", "dir"))
    at_file = m.where(("output", "filename"))
    if m.output.dir is None and state_dir is None:
        root: Path | None = None  # unknown until the state directory is
    else:
        where = m.output_dir(Path(state_dir) if state_dir is not None else Path("state"))
        if isinstance(where, str):  # s3://bucket/prefix
            prefix = where.removeprefix("s3://").partition("/")[2].strip("/")
            for job in jobs:
                key = f"{prefix}/{job.path}" if prefix else job.path
                if len(key.encode("utf-8")) > S3_KEY_MAX:
                    raise at_file.error(
                        f"job {job.key}: the object key {key[:60]!r}... is longer than "
                        f"{S3_KEY_MAX} bytes"
                    )
            return
        root = where
    name_max, path_max = _limits(root)
    if root is not None:
        for segment in root.parts[1:]:
            if len(segment.encode("utf-8", "surrogateescape")) > name_max:
                raise at_dir.error(
                    f"a folder name in {str(root)!r} is longer than {name_max} bytes"
                )
    longest = max(TEMPORARY_SUFFIXES, key=len)
    base = len(str(root).encode("utf-8", "surrogateescape")) + 1 if root is not None else 0
    for job in jobs:
        for segment in job.path.split("/"):
            if len((segment + longest).encode("utf-8")) > name_max:
                raise at_file.error(
                    f"job {job.key}: the name {segment[:40]!r}... with {longest!r} is longer than "
                    f"{name_max} bytes, the most this filesystem allows"
                )
        total = base + len((job.path + longest).encode("utf-8"))
        if total >= path_max:
            raise at_file.error(
                f"job {job.key}: the path of {job.path[:40]!r}... would be {total} bytes, "
                f"more than this system's {path_max}"
            )


def _limits(root: Path | None) -> tuple[int, int]:
    """NAME_MAX and PATH_MAX of the filesystem ``root`` is on (its nearest existing folder)."""
    probe = root
    while probe is not None and not os.path.isdir(probe):  # False for unusable paths too
        probe = probe.parent if probe.parent != probe else None
    if probe is None:
        return DEFAULT_NAME_MAX, DEFAULT_PATH_MAX
    try:
        return os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX, DEFAULT_PATH_MAX


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


def _row_jobs(scope: _Scope, row: Row, index: int) -> list[tuple[Job, Where]]:
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
    if c.seeds is not None:
        plan: list[tuple[int | None, int | None]] = [(s, None) for s in c.seeds]
    elif c.variants:
        bare = {k: v for k, v in request.items() if k != "seed"}
        plan = [(variant_seed(c.name, row.values, bare, v), v) for v in range(c.variants)]
    else:
        plan = [(None, None)]
    out: list[tuple[Job, Where]] = []
    for seed, variant in plan:
        body = dict(request)
        if seed is not None:
            body["seed"] = seed
        body = {k: body[k] for k in (*REQUEST_FIELDS, *body) if k in body}  # request order
        key = job_key(c.name, row.values, body, variant, c.soul)
        names = {**m.vars, **row.values, "campaign": c.name, "key": key}
        names |= {"seed": body.get("seed"), "variant": variant}
        job = Job(
            key=key,
            campaign=c.name,
            manifest=scope.manifest_path,
            index=index + len(out),
            vars=dict(row.values),
            request=body,
            path=render_path(m.output.filename, names, scope.filename_where),
            credits=_credits(scope, body, origin),
            variant=variant,
            soul=c.soul,
            tags=tuple(c.tags),
        )
        out.append((job, origin))
    return out


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
    values = dict(scope.request)
    sources = dict(scope.sources)
    for name in REQUEST_FIELDS:
        if name in row.values:
            values[name] = row.values[name]
            sources[name] = row.sources.get(name) or row.origin or scope.whole
    request = {k: v for k, v in values.items() if v is not None}
    return request, sources


def _credits(scope: _Scope, request: Mapping[str, Any], origin: Where) -> float:
    """First price rule whose ``match`` items all equal the request's fields; none → 0."""
    for i, rule in enumerate(scope.manifest.budget.prices):
        if all(k in request and same(request[k], v) for k, v in rule.match.items()):
            if rule.credits is not None:
                return float(rule.credits)
            duration = request.get("duration")
            if duration is None:
                raise scope.where(("budget", "prices", i)).error(
                    f"this rule prices by the second, but a job has no duration ({_short(origin)})"
                )
            return float(rule.credits_per_second or 0) * float(duration)
    return 0.0


def number(value: float) -> int | float:
    """A credit figure as JSON shows it: whole numbers without ``.0``, no float noise."""
    value = round(value, 6)
    return int(value) if value.is_integer() else value


def plan_document(
    jobs: Sequence[Job], statuses: Mapping[str, str] = _NO_STATUSES, orphaned: int = 0
) -> dict[str, Any]:
    """The ``plan --json`` document of SPEC §5.

    ``statuses`` maps job keys to ledger statuses; a key missing from it is ``new``. ``new``
    in the summary also counts ``pending`` jobs (recorded, not yet submitted), and
    ``estimated_credits`` is what those would cost.
    """
    summary = {"total": len(jobs), "new": 0, "done": 0, "in_flight": 0, "failed": 0}
    credits = 0.0
    entries: list[dict[str, Any]] = []
    for job in jobs:
        raw = statuses.get(job.key, "new")
        status = str(getattr(raw, "value", raw))  # a str Enum member works too
        if status in NOT_SUBMITTED_STATUSES:
            summary["new"] += 1
            credits += job.credits
        elif status == DONE_STATUS:
            summary["done"] += 1
        elif status in IN_FLIGHT_STATUSES:
            summary["in_flight"] += 1
        elif status == FAILED_STATUS:
            summary["failed"] += 1
        entries.append(
            {
                "key": job.key,
                "campaign": job.campaign,
                "status": status,
                "vars": job.vars,
                "request": job.request,
                "path": job.path,
            }
        )
    return {
        "summary": {**summary, "orphaned": orphaned, "estimated_credits": number(credits)},
        "jobs": entries,
    }

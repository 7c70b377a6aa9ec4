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

The package: :mod:`runner.jobs.keys` (the :class:`Job` record, its key and variant seeds),
:mod:`runner.jobs.expand` (a manifest into jobs), :mod:`runner.jobs.paths` (output paths
checked where they land) and :mod:`runner.jobs.plan` (the ``plan --json`` document).
"""

from runner.jobs.expand import expand
from runner.jobs.keys import Job, canonical_json, job_key, variant_seed
from runner.jobs.plan import (
    PLAN_COLUMNS,
    number,
    plan_columns,
    plan_document,
    plan_entries,
    plan_statuses,
    plan_summary,
)

__all__ = [
    "PLAN_COLUMNS",
    "Job",
    "canonical_json",
    "expand",
    "job_key",
    "number",
    "plan_columns",
    "plan_document",
    "plan_entries",
    "plan_statuses",
    "plan_summary",
    "variant_seed",
]

"""Jobs: what a manifest expands into (matrix × seeds/variants), their keys and costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

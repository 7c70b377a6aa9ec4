"""Job claims: which process works on a job now, and until when (SPEC §8).

Any number of processes may execute against one PostgreSQL ledger. Each job is worked on by
one of them at a time: the process *claims* it (``jobs.claimed_by``, ``jobs.lease_until``)
and renews the lease while it works; a claim whose lease has run out (its holder died, or
hung) is free for any other process, which takes the job over where the ledger says it is —
a job in ``submitting`` is re-sent with the same idempotency key, never a new one. The rules
here are the ones both implementations follow; only their SQL differs.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runner.ledger.models import JobRow
from runner.ledger.rows import timestamp
from runner.ledger.status import JobStatus

#: Statuses a process can work on: everything not yet terminal.
CLAIMABLE: tuple[JobStatus, ...] = (
    JobStatus.PENDING,
    JobStatus.SUBMITTING,
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
)

#: Jobs interrupted mid-submit first (they may be paid for already), then manifest order.
CLAIM_ORDER = "CASE WHEN status = 'submitting' THEN 0 ELSE 1 END, job_index, key"


@dataclass(frozen=True)
class Resolved:
    """What the recording host resolved of a manifest from its own disk, so that a worker on
    any host needs none of it: ``files``, the public URL of every local file the manifest's
    jobs and souls name (by the name the job's request or the soul's image list gives it),
    uploaded when it was recorded; ``souls``, each soul's images as its globs matched then
    (``None``: not recorded, the globs are matched again); ``finishing``, the jobs sent
    before the manifest was edited that it no longer produces (finished, then orphaned).
    A job's CSV values need no recording: they are in its request in the ledger."""

    files: dict[str, str] = field(default_factory=dict)
    souls: dict[str, list[str]] | None = None
    finishing: tuple[str, ...] = ()

    def to_json(self) -> str:
        doc = {"files": self.files, "souls": self.souls, "finishing": list(self.finishing)}
        return json.dumps(doc, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> Resolved:
        """From ``to_json``'s text; a record from before it was kept (``None``) has nothing."""
        doc: dict[str, Any] = json.loads(text) if text else {}
        return cls(
            files=dict(doc.get("files") or {}),
            souls=doc.get("souls"),
            finishing=tuple(doc.get("finishing") or ()),
        )


@dataclass(frozen=True)
class ManifestRecord:
    """A manifest as `run` or `enqueue` recorded it for workers: its YAML text (its settings:
    provider, the NAME of its key variable, limits, budget, souls), where its videos go, the
    scope its run cap is reserved under (new at each enqueue), and what the recording host
    resolved of it from its disk (``Resolved``)."""

    path: str
    source: str
    output: str
    scope: str
    recorded_at: str
    resolved: Resolved = field(default_factory=Resolved)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ManifestRecord:
        """A record from its ``manifests`` row (``resolved`` as JSON text)."""
        values = {**row, "recorded_at": str(row["recorded_at"])}
        values["resolved"] = Resolved.from_json(values.get("resolved"))
        return cls(**values)


@dataclass(frozen=True)
class Claim:
    """Who holds a job and until when (UTC ISO 8601, as the ledger stores times)."""

    holder: str
    lease_until: str


def new_holder() -> str:
    """A name for a claiming process that no other process (on any host) shares:
    ``host/pid/random``; it says where to look when a job seems stuck."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def lease_end(clock: Callable[[], datetime], lease: float) -> str:
    """When a lease of ``lease`` seconds taken now runs out, as the ledger stores it."""
    return timestamp(lambda: clock() + timedelta(seconds=lease))


def claimable_where(placeholder: str) -> str:
    """The condition a job must meet to be claimed (parameter: now): nobody holds it, or its
    holder's lease has run out."""
    return f"(claimed_by IS NULL OR lease_until <= {placeholder})"


def takeover_note(
    row: JobRow, previous: str | None, lease_until: str | None, holder: str
) -> str | None:
    """The event detail when ``holder`` takes a job another holder's lease no longer covers
    (``None`` when the job was free or already this holder's)."""
    if previous is None or previous == holder:
        return None
    return (
        f"taken over by {holder} from {previous}, whose lease ran out at {lease_until}; "
        f"it goes on from {row.status}"
    )

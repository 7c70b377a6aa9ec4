"""``build_report``: one pass over the ledger's rows, then the page around their cards.

The header's counts and credits, the table of contents and each section's totals come
before the first card, but the rows are read once, from one snapshot, and dropped as they go
(a page may hold 100,000 cards): each card is written to a spool file beside the page as its
row comes, while the header is tallied; then the page is written with each section's cards
copied from the spool where they belong (in the kernel where it can: ``copy_file_range``).
Memory stays flat however many jobs there are.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from runner.app.common import reading
from runner.app.queries import redacting
from runner.engine.budget import CHARGED, charged
from runner.ledger import JobStatus, ReportRow, utcnow
from runner.outputs import PRESIGN_EXPIRY
from runner.report.cards import Cards, credits_text, tags_of
from runner.report.links import Bundle, Files, Link, link
from runner.report.markup import page_html

if TYPE_CHECKING:
    from runner.manifest import Manifest

_BATCH = 256  # cards joined into one write to the spool
_FAILED, _PENDING = JobStatus.FAILED, JobStatus.PENDING
_COPY_CHUNK = 1 << 20  # bytes per read where the kernel cannot copy between files


@dataclass(frozen=True)
class ReportSummary:
    """What ``build_report`` wrote: the file, how many jobs, their statuses, how many videos
    (and, for a bundle, how many video files it copied)."""

    path: Path
    jobs: int
    counts: dict[str, int]  # status → number of jobs, in life-cycle order
    videos: int  # jobs shown with a player (downloaded, video where the ledger says)
    copied: int = 0  # video files copied into a bundle by this call


def build_report(
    state_dir: Path,
    manifest_path: str | Path | None = None,
    *,
    out_file: Path,
    now: datetime | None = None,
    presign_expiry: timedelta = PRESIGN_EXPIRY,
    campaigns: Sequence[str] = (),
    statuses: Sequence[str] = (),
    tags: Sequence[str] = (),
    bundle: bool = False,
    ledger: str | None = None,
) -> ReportSummary:
    """Write the HTML report of the ledger in ``state_dir`` (one manifest's jobs, if given)
    to ``out_file``, atomically, and return a summary.

    Reads the ledger without writing to it; without a ledger the report says there are no
    jobs (and no ledger is created). ``campaigns``, ``statuses`` and ``tags`` keep only the
    jobs that match one of each that is given. ``bundle`` copies the local videos into
    ``videos/`` beside ``out_file`` first (a file already there with the same size is kept).
    Raises ``ManifestError`` if ``manifest_path`` does not load, ``LedgerError`` if the
    ledger cannot be read, ``OSError`` if a file cannot be written.
    """
    state_dir = Path(state_dir)
    out_file = Path(os.path.abspath(out_file))
    manifest: Manifest | None = None
    if manifest_path is not None:
        from runner.manifest import load_manifest  # pydantic and the model: only for a manifest

        manifest = load_manifest(manifest_path)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    copier = Bundle(out_file.parent) if bundle else None
    report_dir = str(out_file.parent)
    files = Files()

    def place(row: ReportRow) -> Link:
        return link(row, report_dir, presign_expiry, copier, files)

    tally = _Tally()
    with tempfile.TemporaryFile(dir=out_file.parent) as spool:  # same disk: copied in-kernel
        with reading(state_dir, ledger) as opened:
            if opened is not None:
                rows = opened.report_rows(
                    manifest=str(manifest.path) if manifest else None,
                    status=list(statuses) or None,
                    campaign=list(campaigns) or None,
                )
                _spool_cards(rows, tally, spool, place=place, wanted=set(tags))
        marker = f"\x00{secrets.token_hex(8)}\x00"  # where a section's cards go: no text has it
        title = f"runner report: {manifest.path.name}" if manifest else "runner report"
        page = page_html(
            title=title,
            whose=" for this manifest" if manifest else "",
            generated=(now or utcnow()).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            **tally.context(marker),
        )
        parts = page.split(marker)
        assert len(parts) == len(tally.sections) + 1, "a section's cards have one place"

        def write(out: IO[bytes]) -> None:
            out.write(parts[0].encode())
            for section, part in zip(tally.sections.values(), parts[1:], strict=True):
                for start, end in section.extents:
                    _copy(spool, out, start, end - start)
                out.write(part.encode())

        _write_atomically(out_file, write)
    counts = _in_order(tally.totals)
    return ReportSummary(out_file, tally.jobs, counts, tally.videos, copier.copied if copier else 0)


@dataclass
class _Section:
    """One campaign of one manifest: its totals, and where its cards are in the spool."""

    manifest: str
    campaign: str
    counts: dict[JobStatus, int] = field(default_factory=dict)
    credits: float = 0.0  # charged
    extents: list[list[int]] = field(default_factory=list)  # [start, end) of the spool

    @property
    def jobs(self) -> int:
        return sum(self.counts.values())


class _Tally:
    """What the page says before its cards, added up a row at a time (by section: the
    page's totals are the sections' added up)."""

    def __init__(self) -> None:
        self.videos = 0
        self.charged = self.refunded = self.pending = 0.0
        self.any_pending = False
        self.tags: set[str] = set()
        self.first: str | None = None  # the earliest created_at
        self.last: str | None = None  # the latest updated_at
        # by (manifest, campaign), in the ledger's order: by manifest, then manifest order
        self.sections: dict[tuple[str, str], _Section] = {}
        self._current: _Section | None = None  # the last row's

    def add(self, row: ReportRow, link: Link, tags: tuple[str, ...]) -> _Section:
        """Count ``row`` (its video shown as ``link`` says, its ``tags``); the section its
        card goes in."""
        section = self._current  # most rows are in the section of the row before
        if section is None or section.campaign != row.campaign or section.manifest != row.manifest:
            section = self.sections.get((row.manifest, row.campaign))
            if section is None:
                section = self.sections[row.manifest, row.campaign] = _Section(
                    row.manifest, row.campaign
                )
            self._current = section
        status, counts = row.status, section.counts
        counts[status] = counts.get(status, 0) + 1
        if link[0] is not None:
            self.videos += 1
        if status in CHARGED or charged(row):
            self.charged += row.credits
            section.credits += row.credits
        elif status is _FAILED and row.generation_id:  # the provider gave it back
            self.refunded += row.credits
        if status is _PENDING:
            self.pending += row.credits
            self.any_pending = True
        if tags:
            self.tags.update(tags)
        if self.first is None or row.created_at < self.first:
            self.first = row.created_at
        if self.last is None or row.updated_at > self.last:
            self.last = row.updated_at
        return section

    @property
    def jobs(self) -> int:
        return sum(s.jobs for s in self.sections.values())

    @property
    def totals(self) -> dict[JobStatus, int]:
        """The jobs of each status."""
        totals: dict[JobStatus, int] = {}
        for section in self.sections.values():
            for status, n in section.counts.items():
                totals[status] = totals.get(status, 0) + n
        return totals

    def context(self, marker: str) -> dict[str, Any]:
        """The page template's values; each section's cards go where ``marker`` is."""
        from markupsafe import Markup

        several = len({manifest for manifest, _ in self.sections}) > 1
        totals = _in_order(self.totals)
        return {
            "span": None if self.first is None else (_short(self.first), _short(self.last)),
            "jobs": self.jobs,
            "videos": self.videos,
            "totals": totals,
            "credits": {
                "charged": credits_text(self.charged),
                "refunded": credits_text(self.refunded),
                "pending": credits_text(self.pending) if self.any_pending else None,
            },
            "filters": {
                "campaigns": sorted({campaign for _, campaign in self.sections}),
                "statuses": list(totals),
                "tags": sorted(self.tags),
            },
            "sections": [
                {
                    "id": f"c{i}-{s.campaign}",
                    "campaign": s.campaign,
                    "manifest": s.manifest if several else None,
                    "cards": Markup(marker),
                    "jobs": s.jobs,
                    "counts": _in_order(s.counts),
                    "credits": credits_text(s.credits),
                }
                for i, s in enumerate(self.sections.values())
            ],
        }


def _spool_cards(
    rows: Iterable[ReportRow],
    tally: _Tally,
    spool: IO[bytes],
    *,
    place: Callable[[ReportRow], Link],
    wanted: set[str],
) -> None:
    """Write the card of each row (with one of the ``wanted`` tags, if any) to ``spool`` as
    it comes, credentials masked, noting where each section's cards are."""
    redacted = redacting(columns=("error",))  # the page shows no video URL
    cards = Cards()
    batch: list[str] = []
    offset = 0
    current: _Section | None = None

    def flush() -> None:
        nonlocal offset
        if batch and current is not None:
            data = "".join(batch).encode()
            spool.write(data)
            offset += len(data)
            current.extents[-1][1] = offset
            batch.clear()

    for row in rows:
        tags = tags_of(row.tags)
        if wanted and wanted.isdisjoint(tags):
            continue
        if row.error is not None:  # the one column masked
            row = redacted(row)
        shown = place(row)
        section = tally.add(row, shown, tags)
        if section is not current:
            flush()
            current = section
            section.extents.append([offset, offset])
        batch.append(cards.html(row, shown, tags))
        if len(batch) >= _BATCH:
            flush()
    flush()
    spool.flush()


def _copy(spool: IO[bytes], out: IO[bytes], start: int, length: int) -> None:
    """Append ``length`` bytes of ``spool`` from ``start`` to ``out``."""
    out.flush()
    try:
        while length > 0:
            copied = os.copy_file_range(spool.fileno(), out.fileno(), length, start)
            if copied == 0:
                break
            start, length = start + copied, length - copied
    except (AttributeError, OSError):  # no copy_file_range here, or not between these files
        pass
    out.seek(0, os.SEEK_END)  # the copied bytes were written past out's own position
    spool.seek(start)
    while length > 0:
        chunk = spool.read(min(length, _COPY_CHUNK))
        if not chunk:
            raise OSError(f"the report's spool ended {length} bytes early")
        out.write(chunk)
        length -= len(chunk)


def _in_order(counts: dict[JobStatus, int]) -> dict[str, int]:
    """Counts by status word, in life-cycle order."""
    return {s.value: n for s in JobStatus if (n := counts.get(s, 0))}


def _short(at: str | None) -> str | None:
    """A ledger time (UTC) to the minute."""
    if at is None or "T" not in at:
        return at
    return at.replace("T", " ")[:16] + " UTC"


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Have ``write`` write ``path`` so that readers see the old file or the whole new one,
    never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open rather than tempfile: the report gets the usual permissions (0666 minus umask)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

"""The HTML report: one self-contained page with every job of the ledger and its video.

The page has inline CSS, no script and no external resource. Videos are not embedded: each
downloaded job's ``<video>`` points at its file by a path relative to the report's folder, so
the page works when opened from disk beside the videos; a video in S3 is linked by a
presigned URL that expires after ``presign_expiry`` (default 7 days). Every text from a
manifest or the provider is escaped, and provider URLs (which may carry signed tokens) are
never written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner.app.common import reading
from runner.ledger import JobRow, JobStatus, utcnow
from runner.manifest import Manifest, load_manifest
from runner.outputs import PRESIGN_EXPIRY, exists, is_remote, presign

SHA256_SHOWN = 12  # hex digits of a file's sha256 shown on its card
REQUEST_SHOWN = ("duration", "resolution", "aspect_ratio")
# Query strings and fragments of URLs quoted in error texts may hold signed tokens.
_URL_SECRETS = re.compile(r"(https?://[^\s?#\"'<>]*)[?#][^\s\"'<>]*", re.IGNORECASE)
# Scripts are never needed; the policy makes sure none runs even if escaping were ever missed.
_CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
_CSS = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 90rem; }
h1 { margin: 0 0 .25rem; } h2 { margin: 2rem 0 .25rem; }
h2 small { color: var(--muted); font-weight: normal; }
.counts { display: flex; flex-wrap: wrap; gap: .4rem; padding: 0; margin: .5rem 0; }
.counts li { list-style: none; }
.grid { display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(18rem, 1fr)); }
.card { border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
.card video { display: block; width: 100%; max-height: 24rem; background: #000; }
.novideo { padding: 1.5rem 1rem; text-align: center; background: var(--line); }
.meta { padding: .6rem .8rem; }
.meta p { margin: .3rem 0; white-space: pre-wrap; word-break: break-word; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .6rem; margin: .4rem 0 0; }
dt { color: var(--muted); } dd { margin: 0; word-break: break-all; }
code { font-size: 12px; } .error { color: #c0392b; } .empty { color: var(--muted); }
.status { display: inline-block; padding: 0 .5rem; border-radius: 1rem; color: #fff; }
.status { background: #777; } .card.s-failed { border-color: #c0392b; }
.status.s-submitting, .status.s-queued, .status.s-running { background: #2c7be5; }
.status.s-completed { background: #6f42c1; } .status.s-downloaded { background: #1e8e3e; }
.status.s-failed { background: #c0392b; } .status.s-orphaned { background: #555; }
"""


@dataclass(frozen=True)
class ReportSummary:
    """What ``build_report`` wrote: the file, how many jobs, their statuses, how many videos."""

    path: Path
    jobs: int
    counts: dict[str, int]  # status → number of jobs, in life-cycle order
    videos: int  # jobs shown with a player (downloaded, file on disk)


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
) -> ReportSummary:
    """Write the HTML report of the ledger in ``state_dir`` (one manifest's jobs, if given)
    to ``out_file``, atomically, and return a summary.

    Reads the ledger without writing to it; without a ledger the report says there are no
    jobs (and no ledger is created). ``campaigns``, ``statuses`` and ``tags`` keep only the
    jobs that match one of each that is given. Raises ``ManifestError`` if ``manifest_path``
    does not load, ``LedgerError`` if the ledger cannot be read, ``OSError`` if the file
    cannot be written.
    """
    state_dir = Path(state_dir)
    out_file = Path(os.path.abspath(out_file))
    manifest = load_manifest(manifest_path) if manifest_path is not None else None
    rows: list[JobRow] = []
    with reading(state_dir) as ledger:
        if ledger is not None:
            rows = ledger.jobs(
                manifest=str(manifest.path) if manifest else None,
                status=list(statuses) or None,
                campaign=list(campaigns) or None,
            )
    rows = [r for r in rows if not tags or set(tags) & set(r.tags)]
    page, videos = _page(rows, out_file.parent, now or utcnow(), manifest, presign_expiry)
    _write_atomically(out_file, page)
    return ReportSummary(out_file, len(rows), _counts(rows), videos)


def _counts(rows: Iterable[JobRow]) -> dict[str, int]:
    statuses = [row.status for row in rows]
    return {s.value: n for s in JobStatus if (n := statuses.count(s))}


def _text(value: Any) -> str:
    """Escaped text of a value: strings as they are, anything else as JSON."""
    return escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _count_list(counts: Mapping[str, int]) -> str:
    items = "".join(
        f'<li class="status s-{escape(s)}">{escape(s)} {n}</li>' for s, n in counts.items()
    )
    return f'<ul class="counts">{items}</ul>'


def _page(
    rows: list[JobRow],
    report_dir: Path,
    now: datetime,
    manifest: Manifest | None,
    presign_expiry: timedelta,
) -> tuple[str, int]:
    """The whole document, and how many players it holds."""
    title = f"runner report: {manifest.path.name}" if manifest else "runner report"
    groups: dict[tuple[str, str], list[JobRow]] = {}
    for row in rows:  # the ledger's order: by manifest, then manifest order
        groups.setdefault((row.manifest, row.campaign), []).append(row)
    several = len({m for m, _ in groups}) > 1
    videos = 0
    sections: list[str] = []
    for (manifest_file, campaign), jobs in groups.items():
        cards: list[str] = []
        for row in jobs:
            card, has_video = _card(row, report_dir, presign_expiry)
            cards.append(card)
            videos += has_video
        where = f" <small>{escape(manifest_file)}</small>" if several else ""
        sections.append(
            f"<section><h2>{escape(campaign)}{where}</h2>{_count_list(_counts(jobs))}"
            f'<div class="grid">{"".join(cards)}</div></section>'
        )
    if not rows:
        whose = " for this manifest" if manifest else ""
        sections.append(f'<p class="empty">No jobs{whose} in the ledger.</p>')
    generated = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
    )
    header = (
        f"<header><h1>{escape(title)}</h1><p>Generated {generated} · {len(rows)} jobs"
        f" · {videos} videos</p>{_count_list(_counts(rows))}</header>\n"
    )
    body = "<main>\n" + "\n".join(sections) + "\n</main>"
    return f"{head}<body>{header}{body}</body></html>\n", videos


def _video_src(file: Path, report_dir: Path) -> str:
    """The file's URL relative to the report's folder, percent-encoded."""
    try:
        relative = os.path.relpath(file, report_dir)
    except ValueError:  # another drive (Windows): only an absolute URL can reach it
        return file.as_uri()
    return quote(Path(relative).as_posix())


def _src(row: JobRow, report_dir: Path, presign_expiry: timedelta) -> str | None:
    """Where a downloaded job's player finds its video (a presigned URL for S3, else the
    file's relative path), or ``None`` when the video is not where the ledger says."""
    location = row.location
    if row.status is not JobStatus.DOWNLOADED or location is None:
        return None
    if is_remote(location):
        return presign(location, presign_expiry) if exists(location, row.bytes) else None
    file = Path(location)
    return _video_src(file, report_dir) if file.is_file() else None


def _card(row: JobRow, report_dir: Path, presign_expiry: timedelta) -> tuple[str, bool]:
    """One job's card, and whether it has a player (its video is where the ledger says)."""
    status = row.status.value
    src = _src(row, report_dir, presign_expiry)
    has_video = src is not None
    if src is not None:
        media = f'<video controls preload="metadata" src="{escape(src)}"></video>'
    elif row.status is JobStatus.DOWNLOADED:
        missing = escape(row.location or row.path)
        media = f'<div class="novideo">file missing: <code>{missing}</code></div>'
    else:
        media = f'<div class="novideo">{escape(status)}</div>'
    fields: list[tuple[str, str]] = [(escape(k), _text(v)) for k, v in row.vars.items()]
    fields += [
        (f, _text(row.request[f]))
        for f in REQUEST_SHOWN
        if row.request.get(f) is not None and f not in row.vars  # a matrix value shows once
    ]
    if row.bytes is not None:
        fields.append(("bytes", f"{row.bytes:,}"))
    if row.sha256:
        fields.append(("sha256", f"<code>{escape(row.sha256[:SHA256_SHOWN])}</code>"))
    if row.generation_id:
        fields.append(("generation", f"<code>{escape(row.generation_id)}</code>"))
    details = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in fields)
    prompt = row.request.get("prompt")
    error = _URL_SECRETS.sub(r"\1?…", row.error) if row.error else None
    parts = [
        f'<p><code class="key">{escape(row.key)}</code> <span class="status s-{escape(status)}">'
        f"{escape(status)}</span></p>",
        f'<p class="prompt">{_text(prompt)}</p>' if prompt else "",
        f'<p class="error">{escape(error)}</p>' if error else "",
        f"<dl>{details}</dl>" if details else "",
    ]
    meta = f'<div class="meta">{"".join(parts)}</div>'
    return f'<article class="card s-{escape(status)}">{media}{meta}</article>', has_video


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open rather than tempfile: the report gets the usual permissions (0666 minus umask)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

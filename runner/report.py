"""The HTML report: one page for the people who review a night's output.

``build_report`` reads the ledger (never writes it) and renders ``templates/report.html.j2``
with autoescaping on, so every text from a manifest or the provider is text, never markup.
The page has its CSS inline and one small script (filters by campaign, status and tag; a note
where a video is missing), allowed by its hash in the page's Content-Security-Policy; without
the script every card shows. There is no external resource, and provider URLs (which may
carry signed tokens) are never written: error texts lose their query strings, source images
show by file name.

Per card: the seed or variant (what tells twins apart), soul, source image, duration, aspect
ratio and credits; ids and hashes sit in a ``<details>``. Videos are not embedded: a local
video's ``<video>`` points at its file by a path relative to the page (``preload="metadata"``
shows its first frame: posters would need a video decoder, a new system dependency), and a
video in S3 by a presigned URL that expires after ``presign_expiry`` (default 7 days).
``bundle=True`` copies the local videos into ``videos/`` beside the page, so the folder can be
zipped and shared; the relative links then stay valid wherever it is unpacked.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from runner.app.common import bulk, reading
from runner.app.queries import redacting
from runner.engine import charged, charged_credits
from runner.ledger import JobRow, JobStatus, utcnow
from runner.manifest import Manifest, load_manifest
from runner.outputs import PRESIGN_EXPIRY, exists, is_remote, presign

BUNDLE_VIDEOS = "videos"  # the folder beside a bundled page that holds its videos
REQUEST_SHOWN = (("duration", "duration"), ("aspect_ratio", "aspect ratio"),
                 ("resolution", "resolution"), ("model", "model"))  # fmt: skip
# Query strings and fragments of URLs quoted in error texts may hold signed tokens.
_URL_SECRETS = re.compile(r"(https?://[^\s?#\"'<>]*)[?#][^\s\"'<>]*", re.IGNORECASE)
_CSP = "script-src '{hash}'; object-src 'none'; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True)
class ReportSummary:
    """What ``build_report`` wrote: the file, how many jobs, their statuses, how many videos
    (and, for a bundle, how many video files it copied)."""

    path: Path
    jobs: int
    counts: dict[str, int]  # status → number of jobs, in life-cycle order
    videos: int  # jobs shown with a player (downloaded, video where the ledger says)
    copied: int = 0  # video files copied into a bundle by this call


# A job's video as its card shows it: the player's URL, the video's name as the page refers
# to it (for messages), and where a downloaded video was expected but is not.
_Link = tuple[str | None, str, str | None]
_NO_LINK: _Link = (None, "", None)


class _Card:
    """What the template shows of one job, worked out once (it reads most of it twice or
    more). Made as the page is written, and dropped once written: a page may hold 100,000."""

    __slots__ = ("campaign", "error", "fields", "file", "ids", "key", "missing", "prompt", "row",
                 "soul", "src", "status", "tags", "variant_label")  # fmt: skip

    def __init__(self, row: JobRow, link: _Link) -> None:
        request, matrix = _decoded(row, "request"), _decoded(row, "vars")
        self.row = row
        self.key = row.key
        self.campaign = row.campaign
        self.status = row.status.value
        self.tags = row.tags
        self.soul = row.soul
        prompt = request.get("prompt")
        self.prompt = None if prompt is None else _text(prompt)
        self.error = tidy_error(row.error)
        self.variant_label = _variant_label(row, request)
        self.fields = _fields(row, request, matrix)
        self.ids = _ids(row)
        self.src, self.file, self.missing = link


class _Cards:
    """One section's cards, made one at a time as the template reads them."""

    def __init__(self, rows: Sequence[JobRow], links: Sequence[_Link], picked: list[int]):
        self.rows, self.links, self.picked = rows, links, picked

    def __len__(self) -> int:
        return len(self.picked)

    def __iter__(self) -> Iterator[_Card]:
        for i in self.picked:
            yield _Card(self.rows[i], self.links[i])


def _decoded(row: JobRow, column: str) -> Any:
    """A JSON column of ``row`` decoded for its card only (the row keeps its text: a page's
    rows stay small)."""
    text = row.stored_json(column)
    return json.loads(text) if text is not None else getattr(row, column)


def _variant_label(row: JobRow, request: dict[str, Any]) -> str | None:
    """What tells a job from its seed or variant twins."""
    seed = request.get("seed")
    if row.variant is not None:
        return f"variant {row.variant}" + (f" · seed {seed}" if seed is not None else "")
    return None if seed is None else f"seed {seed}"


@bulk()  # 100,000 rows and their links live through it: see bulk
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
    manifest = load_manifest(manifest_path) if manifest_path is not None else None
    rows: list[JobRow] = []
    with reading(state_dir, ledger) as opened:
        if opened is not None:
            rows = opened.jobs(
                manifest=str(manifest.path) if manifest else None,
                status=list(statuses) or None,
                campaign=list(campaigns) or None,
            )
    redacted = redacting()
    rows = [redacted(r) for r in rows if not tags or set(tags) & set(r.tags)]
    copier = _Bundle(out_file.parent) if bundle else None
    links = [_link(row, out_file.parent, presign_expiry, copier) for row in rows]
    videos = sum(link[0] is not None for link in links)
    _write_atomically(out_file, _render(rows, links, videos, now or utcnow(), manifest))
    return ReportSummary(out_file, len(rows), _counts(rows), videos, copier.copied if copier else 0)


def tidy_error(error: str | None) -> str | None:
    """An error as people should read it: a phrase said twice in a row once
    (``generation failed: generation failed``), signed URLs without their query."""
    if not error:
        return None
    parts: list[str] = []
    for part in error.split(": "):
        if not parts or part.strip().lower() != parts[-1].strip().lower():
            parts.append(part)
    return _URL_SECRETS.sub(r"\1?…", ": ".join(parts))


def _counts(rows: Iterable[JobRow]) -> dict[str, int]:
    statuses = [row.status for row in rows]
    return {s.value: n for s in JobStatus if (n := statuses.count(s))}


def _text(value: Any) -> str:
    """Strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _credits(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _image_name(url: str) -> str:
    """A source image by its file name: no host, no query (they may be signed)."""
    path = urlsplit(url).path if "://" in url else url
    return PurePosixPath(path).name or "image"


def _fields(
    row: JobRow, request: dict[str, Any], matrix: dict[str, Any]
) -> list[tuple[str, str]]:
    """What a reviewer compares between cards: the matrix row, the request's shape, the
    soul and source image, the credits."""
    fields = [(name, _text(value)) for name, value in matrix.items()]
    for name, label in REQUEST_SHOWN:
        value = request.get(name)
        if value is not None and name not in matrix:  # a matrix value shows once
            fields.append((label, f"{value} s" if name == "duration" else _text(value)))
    if row.soul:
        fields.append(("soul", row.soul))
    image = request.get("image_url")
    if isinstance(image, str) and image:
        fields.append(("source image", _image_name(image)))
    refunded = row.status is JobStatus.FAILED and row.generation_id and not charged(row)
    credits = _credits(row.credits)
    fields.append(("credits", f"{credits} (refunded)" if refunded else credits))
    if row.attempts > 1:
        fields.append(("attempts", str(row.attempts)))
    return fields


def _ids(row: JobRow) -> list[tuple[str, str]]:
    ids = [
        ("generation", row.generation_id),
        ("sha256", row.sha256),
        ("bytes", f"{row.bytes:,}" if row.bytes is not None else None),
        ("file", row.location or row.path),
        ("manifest", row.manifest),
        ("updated", row.updated_at),
    ]
    return [(name, value) for name, value in ids if value]


class _Bundle:
    """Copies local videos into ``videos/`` beside a page, one file per job."""

    def __init__(self, report_dir: Path) -> None:
        self.root = report_dir / BUNDLE_VIDEOS
        self.taken: dict[Path, str] = {}  # target → the key whose video it holds
        self.copied = 0

    def add(self, row: JobRow, source: Path) -> Path:
        target = self.root / row.path
        if self.taken.get(target, row.key) != row.key:  # same name from another manifest
            target = self.root / row.key / Path(row.path).name
        self.taken[target] = row.key
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self.copied += 1
        return target


def _link(
    row: JobRow, report_dir: Path, presign_expiry: timedelta, bundle: _Bundle | None
) -> _Link:
    """How the card of ``row`` shows its video (the video checked, or copied into a bundle)."""
    location = row.location
    if row.status is not JobStatus.DOWNLOADED:
        return _NO_LINK
    if location is not None and is_remote(location):
        if exists(location, row.bytes):
            return presign(location, presign_expiry), location, None
        return None, "", location
    if not location or not os.path.isfile(location):
        return None, "", location or row.path
    file = str(bundle.add(row, Path(location))) if bundle is not None else location
    try:
        relative = _relative_path(file, str(report_dir))
    except ValueError:  # another drive (Windows): only an absolute URL can reach it
        return Path(file).as_uri(), file, None
    return quote(relative.replace(os.sep, "/")), relative, None  # the URL percent-encoded


def _relative_path(file: str, start: str) -> str:
    """``os.path.relpath(file, start)``, the folder's part worked out once per folder."""
    folder, name = os.path.split(os.path.abspath(file))
    relative = _relative_folder(folder, start)
    return name if relative == os.curdir else os.path.join(relative, name)


@functools.lru_cache(maxsize=1024)
def _relative_folder(folder: str, start: str) -> str:
    return os.path.relpath(folder, start)


@functools.cache
def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("runner", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _asset(name: str) -> str:
    return resources.files("runner").joinpath("templates", name).read_text(encoding="utf-8")


def _render(
    rows: list[JobRow], links: list[_Link], videos: int, now: datetime, manifest: Manifest | None
) -> Iterator[str]:
    """The whole document, a piece at a time (a page of 100,000 jobs is 100+ MB)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):  # the ledger's order: by manifest, then manifest order
        groups.setdefault((row.manifest, row.campaign), []).append(i)
    several = len({m for m, _ in groups}) > 1
    sections = [
        {
            "id": f"c{i}-{campaign}",
            "campaign": campaign,
            "manifest": manifest_file if several else None,
            "cards": _Cards(rows, links, group),
            "counts": _counts(rows[i] for i in group),
            "credits": _credits(charged_credits(rows[i] for i in group)),
        }
        for i, ((manifest_file, campaign), group) in enumerate(groups.items())
    ]
    # Failed after the provider took them, and not charged: the provider gave the money back.
    refunded = [
        r for r in rows if r.status is JobStatus.FAILED and r.generation_id and not charged(r)
    ]
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    title = f"runner report: {manifest.path.name}" if manifest else "runner report"
    return iter(
        _templates()
        .get_template("report.html.j2")
        .generate(
            title=title,
            csp=_CSP.format(hash=f"sha256-{digest}"),
            css=_asset("report.css"),
            script=script,
            generated=now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            span=_span(rows),
            jobs=len(rows),
            videos=videos,
            totals=_counts(rows),
            credits={
                "charged": _credits(charged_credits(rows)),
                "refunded": _credits(sum(r.credits for r in refunded)),
                "pending": _credits(sum(r.credits for r in rows if r.status is JobStatus.PENDING))
                if any(r.status is JobStatus.PENDING for r in rows)
                else None,
            },
            filters={
                "campaigns": sorted({r.campaign for r in rows}),
                "statuses": list(_counts(rows)),
                "tags": sorted({t for r in rows for t in r.tags}),
            },
            sections=sections,
            whose=" for this manifest" if manifest else "",
        )
    )


def _span(rows: Sequence[JobRow]) -> tuple[str, str] | None:
    """When the shown jobs were first recorded and last changed (ledger times, UTC)."""
    if not rows:
        return None

    def short(at: str) -> str:
        return at.replace("T", " ")[:16] + " UTC" if "T" in at else at

    return short(min(r.created_at for r in rows)), short(max(r.updated_at for r in rows))


def _write_atomically(path: Path, text: Iterable[str]) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open rather than tempfile: the report gets the usual permissions (0666 minus umask)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


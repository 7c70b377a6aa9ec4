"""Where a card's player finds its video: a path relative to the page, a presigned S3 URL,
or a copy in the bundle beside the page; and where a downloaded video is missing."""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from runner.ledger import JobStatus, ReportRow
from runner.outputs import exists, is_remote, presign

BUNDLE_VIDEOS = "videos"  # the folder beside a bundled page that holds its videos

# A job's video as its card shows it: the player's URL, the video's name as the page refers
# to it (for messages), and where a downloaded video was expected but is not.
Link = tuple[str | None, str, str | None]
NO_LINK: Link = (None, "", None)
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote() leaves as it is
_POSIX = os.sep == "/" and os.altsep is None
_DOWNLOADED = JobStatus.DOWNLOADED


class Files:
    """Which local files are there: one ``os.scandir`` per folder instead of a stat per file
    (a page may show 100,000 videos from one folder). A name the listing does not have is
    checked by its own stat (a case-insensitive disk, a file made since), so the answer is
    ``os.path.isfile``'s as of the listing. Each folder is listed once; past ``KEPT`` names
    in all (~100 bytes each) the files of further folders are checked by a stat each."""

    KEPT = 200_000

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str] | None] = {}  # None: a stat per file
        self._kept = 0

    def is_file(self, path: str) -> bool:
        """``os.path.isfile(path)``."""
        return self.has(*_split(path), path)

    def has(self, folder: str, name: str, path: str) -> bool:
        """``os.path.isfile(path)``, ``path`` split into ``folder`` and ``name``."""
        try:
            names = self._names[folder]
        except KeyError:
            names = _listed(folder or os.curdir)
            if self._kept + len(names) > self.KEPT:
                names = None
            else:
                self._kept += len(names)
            self._names[folder] = names
        return (names is not None and name in names) or os.path.isfile(path)


def _split(path: str) -> tuple[str, str]:
    """``os.path.split``, by hand on POSIX without its normalising of the folder's trailing
    slashes (a cost per card): the folder as spelled (``/`` for a file at the root), the
    name."""
    if not _POSIX:
        return os.path.split(path)
    folder, slash, name = path.rpartition("/")
    return folder or slash, name


def _listed(folder: str) -> frozenset[str]:
    """The names of the regular files (or links to one) in ``folder``; none if it cannot be
    listed (each file is then checked by its own stat)."""
    try:
        with os.scandir(folder) as entries:
            return frozenset([entry.name for entry in entries if entry.is_file()])
    except OSError:
        return frozenset()


class Bundle:
    """Copies local videos into ``videos/`` beside a page, one file per job."""

    def __init__(self, report_dir: Path) -> None:
        self.root = report_dir / BUNDLE_VIDEOS
        self.taken: dict[Path, str] = {}  # target → the key whose video it holds
        self.copied = 0

    def add(self, row: ReportRow, source: Path) -> Path:
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


def link(
    row: ReportRow,
    report_dir: str,
    presign_expiry: timedelta,
    bundle: Bundle | None,
    files: Files | None = None,
) -> Link:
    """How the card of ``row`` shows its video (the video checked, or copied into a bundle);
    ``report_dir`` is the page's folder, absolute; ``files`` checks local videos (one listing
    per folder), else each is checked by a stat."""
    if row.status is not _DOWNLOADED:
        return NO_LINK
    location = row.location
    if location is not None and is_remote(location):
        if exists(location, row.bytes):
            return presign(location, presign_expiry), location, None
        return None, "", location
    if not location:
        return None, "", row.path
    folder, name = _split(location)  # by hand on POSIX (relpath makes the folder normal)
    if not (files.has(folder, name, location) if files else os.path.isfile(location)):
        return None, "", location
    file = location
    if bundle is not None:
        file = str(bundle.add(row, Path(location)))
        folder, name = _split(file)
    if not (_POSIX and file.startswith("/")):  # relpath makes the folder absolute and normal:
        # only a relative file needs it first
        folder, name = os.path.split(file if os.path.isabs(file) else os.path.abspath(file))
    try:
        relative, url = _relative_folder(folder, report_dir)
    except ValueError:  # another drive (Windows): only an absolute URL can reach it
        return Path(file).as_uri(), file, None
    # the URL percent-encoded (most names need none)
    return url + (name if _URL_SAFE.fullmatch(name) else quote(name)), relative + name, None


@functools.lru_cache(maxsize=1024)
def _relative_folder(folder: str, start: str) -> tuple[str, str]:
    """``folder`` relative to ``start`` as the start of a file's path (empty, or ending in a
    separator) and of its URL (percent-encoded): worked out once per folder."""
    relative = os.path.relpath(folder, start)
    if relative == os.curdir:
        return "", ""
    return relative + os.sep, quote(relative.replace(os.sep, "/") + "/")

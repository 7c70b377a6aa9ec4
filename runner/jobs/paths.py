"""Output paths checked where they land: collisions, the state directory's files, OS limits.

What can only fail at run time is refused at validate time (SPEC v2 §3): output paths that
collide (with another job's file, its ``.part``/``.part.id``, a folder another job needs, on
a case-insensitive disk too), that land on the runner's own state files, or that pass the
operating system's limits (NAME_MAX and PATH_MAX of the filesystem the output folder is on,
or the length of an S3 object key).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path

from runner.jobs.keys import Job
from runner.manifest import Manifest

# Files a download writes beside its video while it runs (runner.outputs.local).
TEMPORARY_SUFFIXES = (".part", ".part.id")
# The state directory's own files (runner.ledger.sqlite): no video may take these names.
STATE_FILES = frozenset(
    {"ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db-journal", "runner.lock"}
)
DEFAULT_NAME_MAX = 255  # bytes per path segment, where the filesystem cannot be asked
DEFAULT_PATH_MAX = 4096  # bytes per absolute path (Linux); macOS allows 1024
S3_KEY_MAX = 1024  # bytes per object key


def _fold(path: str) -> str:
    """How a case-insensitive, normalizing disk (macOS, Windows, exFAT, SMB) sees a path."""
    if path.isascii():
        return path.lower()  # the same for ASCII, and much cheaper
    return unicodedata.normalize("NFC", path).casefold()


def check_paths(m: Manifest, jobs: Sequence[Job], state_dir: str | Path | None) -> None:
    """Refuse output paths that would collide or could never be written (linear time)."""
    paths = [job.path for job in jobs]
    if not _plainly_distinct(paths):
        _check_each(m, jobs, [_fold(path) for path in paths])
    # Every path has as many segments as the template (an empty one renders "_"), so a file
    # never stands where another job needs a folder.
    _check_limits(m, jobs, paths, state_dir)


def _plainly_distinct(paths: list[str]) -> bool:
    """The usual case, told in C: ASCII paths, distinct however cased, none ending like a
    temporary or state file. Then :func:`_check_each` would find nothing."""
    if not all(map(str.isascii, paths)):
        return False
    folded = list(map(str.lower, paths))  # _fold of an ASCII path
    return len(set(folded)) == len(folded) and not any(
        map(str.endswith, folded, repeat((*TEMPORARY_SUFFIXES, *STATE_FILES)))
    )


def _check_each(m: Manifest, jobs: Sequence[Job], folded_paths: list[str]) -> None:
    """Every job's path against the state files' names and the other jobs' files."""
    at = m.where(("output", "filename"))
    # A temporary file can only stand where another job's video is if a video's name ends
    # like one: unless one does, comparing the videos' own names is enough.
    temporary = any(p.endswith(TEMPORARY_SUFFIXES) for p in folded_paths)
    files: dict[str, tuple[str, Job]] = {}  # folded name → (name, job), .part files included
    for job, folded_path in zip(jobs, folded_paths, strict=True):
        last = job.path.rpartition("/")[2]
        # an ASCII name folds alone as it does in its path
        if (folded_path.rpartition("/")[2] if job.path.isascii() else _fold(last)) in STATE_FILES:
            # Wherever output.dir is, it may be the state directory (or be made it by --state).
            raise at.error(
                f"job {job.key} would be written to {job.path!r}: {last!r} is a name "
                "of the runner's own state files (the ledger, its lock); rename it"
            )
        names = (
            ((job.path, ""), *((job.path + s, s) for s in TEMPORARY_SUFFIXES))
            if temporary
            else ((job.path, ""),)
        )
        for name, suffix in names:
            folded = folded_path + suffix  # the suffixes are ASCII: they fold to themselves
            if folded in files and files[folded][1].key != job.key:
                other_name, other = files[folded]
                raise at.error(
                    f"jobs {other.key} and {job.key} would write {other_name!r} and {name!r}, "
                    "the same file (a download's temporary file, or on a case-insensitive "
                    "disk); put {key} in the filename"
                )
            files[folded] = (name, job)


def _check_limits(
    m: Manifest, jobs: Sequence[Job], paths: list[str], state_dir: str | Path | None
) -> None:
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
    length = max(map(len, paths), default=0) + len(longest)
    if length <= name_max and base + length < path_max and all(map(str.isascii, paths)):
        return  # what the loop below would find of each path, found of the longest
    for job in jobs:
        length = len(job.path) + len(longest)
        if length <= name_max and base + length < path_max and job.path.isascii():
            continue  # bytes are characters, and no segment is longer than the whole path
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

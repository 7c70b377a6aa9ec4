"""Bounded globs for local files a manifest names (soul reference images).

``glob.glob("/*/*/*/*/*/*")`` walks a whole disk before it answers. This walker does what a
soul's ``images:`` needs and no more: ``*``, ``?``, ``[...]`` within a segment and ``**``
across folders, looking at no more than ``MAX_GLOB_ENTRIES`` directory entries and returning
no more than ``MAX_MATCHES`` files. Hidden names match only patterns that start with a dot,
as in the shell. Symlinked folders are not descended into by ``**``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

MAX_GLOB_ENTRIES = 20_000  # directory entries one glob may look at
MAX_MATCHES = 100  # files one glob may match: a soul is trained from a handful of photos

_MAGIC = re.compile(r"[*?\[]")


class GlobError(ValueError):
    """A glob that looks at or matches too much."""


def has_magic(segment: str) -> bool:
    """Whether a path segment is a pattern rather than a plain name."""
    return _MAGIC.search(segment) is not None


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise GlobError(
                f"looks at more than {self.limit} directory entries; name a narrower folder"
            )


def _entries(folder: Path, budget: _Budget) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            found = []
            for entry in it:
                budget.spend()
                found.append(entry)
            return found
    except OSError:
        return []


def _subfolders(folder: Path, budget: _Budget) -> list[Path]:
    """``folder`` and every folder under it (not through symlinks, not hidden ones)."""
    out = [folder]
    stack = [folder]
    while stack:
        current = stack.pop()
        for entry in _entries(current, budget):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    path = Path(entry.path)
                    out.append(path)
                    stack.append(path)
            except OSError:
                continue
    return out


def bounded_glob(
    pattern: str,
    root: Path,
    *,
    max_entries: int = MAX_GLOB_ENTRIES,
    max_matches: int = MAX_MATCHES,
) -> list[Path]:
    """Files matching ``pattern`` (relative to ``root``, or absolute), sorted; GlobError when
    the walk or the result would pass its bound."""
    path = Path(pattern)
    parts = list(path.parts)
    base = root
    if path.is_absolute():
        base, parts = Path(parts[0]), parts[1:]
    budget = _Budget(max_entries)
    candidates = [base]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        following: list[Path] = []
        if part == "**":
            for folder in candidates:
                following.extend(_subfolders(folder, budget))
        elif not has_magic(part):
            following = [c / part for c in candidates]
            if not last:
                following = [c for c in following if c.is_dir()]
        else:
            for folder in candidates:
                for entry in _entries(folder, budget):
                    if entry.name.startswith(".") and not part.startswith("."):
                        continue
                    if fnmatch.fnmatchcase(entry.name, part):
                        following.append(Path(entry.path))
        candidates = following
        if len(candidates) > max_entries:
            raise GlobError(f"expands to more than {max_entries} paths; narrow it")
    files = sorted({c for c in candidates if c.is_file()})
    if len(files) > max_matches:
        raise GlobError(f"matches {len(files)} files, more than {max_matches}")
    return files

"""Where videos go: the output store (local files now; S3 next).

A store turns a job's relative output name into a ``location`` (an absolute path, later an
``s3://`` URI) that the ledger records with ``downloaded``; it saves a video from a URL so that
nothing is ever left under the final name unless it is complete; it checks that a recorded
video is still there; and it moves a video when its name changes. Nothing else in the runner
touches an output file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from runner.outputs.fetch import DownloadPolicy, check_url


@dataclass(frozen=True)
class Saved:
    """A verified video in the store."""

    location: str
    bytes: int
    sha256: str


class OutputStore(Protocol):
    """The interface every output store implements."""

    @property
    def root(self) -> str:
        """Where this store's videos go, for messages."""
        ...

    def location(self, relative: str) -> str:
        """The location of output name ``relative``; ``UnsafeURLError`` if it escapes."""
        ...

    async def save(
        self,
        client: httpx.AsyncClient,
        url: str,
        relative: str,
        *,
        policy: DownloadPolicy,
        resume_token: str | None = None,
    ) -> Saved:
        """Fetch ``url`` into output name ``relative``, resuming what ``resume_token`` (the
        generation id) left partial; verified before it takes its final name."""
        ...

    def problem(self, location: str, size: int | None) -> str | None:
        """Why the video recorded at ``location`` with ``size`` bytes is not usable (missing,
        another size), or ``None`` when it is."""
        ...

    def relocate(self, old: str, relative: str) -> str | None:
        """Move the video at location ``old`` to output name ``relative``; its new location,
        or ``None`` when there was nothing to move (or the new name is taken)."""
        ...


def exists(location: str, size: int | None = None) -> bool:
    """Whether the video recorded at ``location`` is there (with ``size`` bytes, if given)."""
    from runner.outputs.local import LocalStore

    return LocalStore.present(location, size)


def open_store(output_dir: str) -> OutputStore:
    """The store for a manifest's resolved ``output.dir``."""
    from runner.outputs.local import LocalStore

    return LocalStore(output_dir)


__all__ = ["DownloadPolicy", "OutputStore", "Saved", "check_url", "exists", "open_store"]

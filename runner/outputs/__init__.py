"""Where videos go: the output store (local files, or S3 with the ``s3`` extra).

A store turns a job's relative output name into a ``location`` (an absolute path, or an
``s3://bucket/key`` URI) that the ledger records with ``downloaded``; it saves a video from a
URL so that nothing is ever left under the final name unless it is complete; it checks that a
recorded video is still there; and it moves a video when its name changes. Nothing else in the
runner touches an output file. ``runner.outputs.s3`` (and obstore) is imported only when an
``s3://`` location is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runner.errors import UsageError
from runner.lazy import exports

if TYPE_CHECKING:
    import httpx

    from runner.outputs.fetch import DownloadPolicy, check_url

S3_SCHEME = "s3://"
PRESIGN_EXPIRY = timedelta(days=7)  # presigned S3 links in the report; SigV4's longest


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
        generation id) left partial; verified before it takes its final name.
        ``UnsafeURLError``, before anything is fetched, if ``relative`` escapes."""
        ...

    def problem(self, location: str, size: int | None) -> str | None:
        """Why the video recorded at ``location`` with ``size`` bytes is not usable (missing,
        another size), or ``None`` when it is."""
        ...

    def placed(self, old: str, relative: str) -> bool:
        """Whether location ``old`` is output name ``relative``'s, as the names alone tell
        (no I/O): then ``relocate`` has nothing to move."""
        ...

    def relocate(self, old: str, relative: str) -> str | None:
        """Move the video at location ``old`` to output name ``relative``; its new location,
        or ``None`` when there was nothing to move (or the new name is taken)."""
        ...


def is_remote(location: str) -> bool:
    """Whether ``location`` is an object-store URI rather than a local path."""
    return location.startswith(S3_SCHEME)


@contextmanager
def _s3_extra() -> Iterator[None]:
    """Turn a missing obstore into a clear usage error."""
    try:
        yield
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "obstore":
            raise
        raise UsageError(
            "s3:// outputs need the s3 extra (obstore): pip install 'runner[s3]'"
        ) from err


def exists(
    location: str, size: int | None = None, *, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether the video recorded at ``location`` is there (with ``size`` bytes, if given).
    ``environ`` holds the AWS variables for an ``s3://`` location (default: the process's)."""
    if is_remote(location):
        with _s3_extra():
            from runner.outputs.s3 import object_size
        found = object_size(location, environ=environ)
        return found is not None and (size is None or found == size)
    return present(location, size)


def present(location: str, size: int | None = None) -> bool:
    """Whether a file is at local path ``location`` (with ``size`` bytes, if given)."""
    file = Path(location)
    return file.is_file() and (size is None or file.stat().st_size == size)


def presign(
    location: str,
    expires_in: timedelta = PRESIGN_EXPIRY,
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    """A URL that lets whoever holds it GET the video at an ``s3://`` location until
    ``expires_in`` has passed."""
    with _s3_extra():
        from runner.outputs.s3 import presign as sign

    return sign(location, expires_in, environ=environ)


def open_store(output_dir: str, *, environ: Mapping[str, str] | None = None) -> OutputStore:
    """The store for a manifest's resolved ``output.dir``: a local folder, or
    ``s3://bucket/prefix`` with credentials from ``environ``'s AWS variables."""
    if is_remote(output_dir):
        with _s3_extra():
            from runner.outputs.s3 import S3Store

        return S3Store(output_dir, environ=environ)
    from runner.outputs.local import LocalStore

    return LocalStore(output_dir)


__all__ = [
    "PRESIGN_EXPIRY",
    "S3_SCHEME",
    "DownloadPolicy",
    "OutputStore",
    "Saved",
    "check_url",
    "exists",
    "is_remote",
    "open_store",
    "presign",
]

# The download's policy and URL check, imported when first asked for (they bring httpx):
# the report asks whether a video exists without importing an HTTP client.
__getattr__, __dir__ = exports(__name__, {"runner.outputs.fetch": ("DownloadPolicy", "check_url")})

"""Local files a request refers to (soul images, a job's ``image_url``), made public before the
request is sent: uploaded once through the provider's upload endpoint, remembered in the
ledger by the sha256 of their content, so a re-sent request carries the same URL (the same
body under the same idempotency key)."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from pathlib import Path

import anyio

from runner.engine.calls import Calls
from runner.errors import PermanentError
from runner.ledger import Ledger
from runner.providers import Provider, uploader

URL = re.compile(r"^(?:https?|data):", re.IGNORECASE)


def is_local(value: str) -> bool:
    """Whether ``value`` names a local file rather than a URL the provider can fetch."""
    return not URL.match(value)


def inside(path: str, folder: Path) -> Path:
    """``path`` (relative to ``folder``, or absolute) as an absolute path, refused with a
    ``PermanentError`` unless it stays inside ``folder`` (symlinks resolved): a row of a CSV
    cannot make the runner upload ``/etc/passwd`` or ``~/.ssh`` to the provider."""
    resolved = (folder / Path(path).expanduser()).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise PermanentError(
            f"{path!r} is outside the manifest's folder {folder}: local images are uploaded "
            "to the provider only from inside it"
        )
    return resolved


async def public_url(
    image: str,
    *,
    ledger: Ledger,
    provider: Provider,
    calls: Calls,
    what: str = "image",
    locks: dict[str, anyio.Lock] | None = None,
) -> str:
    """The URL the provider can fetch ``image`` from: a URL as it is; a local file uploaded
    once (``PermanentError`` when the provider cannot upload or the file cannot be read).
    Callers that run at once share ``locks`` (by content hash): one of them uploads a file,
    the others wait and take its URL."""
    if not is_local(image):
        return image
    try:
        data = Path(image).read_bytes()
    except OSError as err:
        raise PermanentError(f"{what} {image}: {err.strerror or err}") from err
    digest = hashlib.sha256(data).hexdigest()
    lock = (locks if locks is not None else {}).setdefault(digest, anyio.Lock())
    async with lock:
        return await _upload(image, data, digest, ledger, provider, calls, what)


async def _upload(
    image: str,
    data: bytes,
    digest: str,
    ledger: Ledger,
    provider: Provider,
    calls: Calls,
    what: str,
) -> str:
    known = ledger.get_upload(digest)
    if known:
        return known
    host = uploader(provider)
    if host is None:
        raise PermanentError(
            f"provider {provider.name} has no upload endpoint; a local {what} needs provider "
            f"`higgsfield` (or give {image} as a URL)"
        )
    content_type = mimetypes.guess_type(image)[0] or "application/octet-stream"
    url = await calls(lambda: host.upload(data, content_type))
    return ledger.record_upload(digest, url)  # another process's, if it recorded one first

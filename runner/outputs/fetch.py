"""Fetching a video over HTTP: the URL policy, redirects, Range, Content-Length checks.

Downloads never carry the provider's key: the engine gives them a client of their own.
Where the bytes go (and how a file is made final) is the output store's business.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from runner.errors import DownloadError, ExpiredURLError, TransientError, UnsafeURLError

CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
EXPIRED_STATUSES = frozenset({403, 404, 410})
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class DownloadPolicy:
    """Which addresses a video URL may point at.

    Link-local addresses (where cloud metadata lives) are always refused. Private and loopback
    addresses are refused unless the provider's own base URL is on one (the mock server).
    """

    allow_private: bool = False

    @classmethod
    def for_base_url(cls, base_url: str) -> DownloadPolicy:
        """Allow private addresses only when the provider itself lives on one."""
        host = urlsplit(base_url).hostname or ""
        try:
            addresses = _resolve_sync(host)
        except OSError:
            return cls(allow_private=False)
        return cls(allow_private=any(_is_private(a) for a in addresses))


def _is_private(address: IPAddress) -> bool:
    return address.is_private or address.is_loopback


def _resolve_sync(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_url(url: str, policy: DownloadPolicy) -> None:
    """Refuse a URL whose scheme or resolved addresses the policy does not allow."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURLError(f"refusing video URL with scheme {parts.scheme or '(none)'!r}")
    host = parts.hostname
    if not host:
        raise UnsafeURLError("refusing video URL without a host")
    try:
        addresses = await anyio.to_thread.run_sync(_resolve_sync, host)
    except OSError as err:
        raise TransientError(f"cannot resolve video host {host}: {err}") from err
    for address in addresses:
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            raise UnsafeURLError(f"refusing video URL on link-local/reserved address {address}")
        if _is_private(address) and not policy.allow_private:
            raise UnsafeURLError(f"refusing video URL on private address {address}")


async def fetch(
    client: httpx.AsyncClient, url: str, part: Path, offset: int, policy: DownloadPolicy
) -> None:
    # Identity encoding: Content-Length must count the bytes we store.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    for _ in range(MAX_REDIRECTS + 1):
        await check_url(url, policy)
        request = client.build_request("GET", url, headers=headers, timeout=DOWNLOAD_TIMEOUT)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.is_redirect:
                url = urljoin(url, response.headers.get("location", ""))
                continue
            await _write_body(response, part, offset)
            return
        finally:
            await response.aclose()
    raise DownloadError(f"too many redirects downloading the video (more than {MAX_REDIRECTS})")


async def _write_body(response: httpx.Response, part: Path, offset: int) -> None:
    status = response.status_code
    if status in EXPIRED_STATUSES:
        raise ExpiredURLError(f"video URL answered {status}")
    if status == 416 and offset:
        # Our partial file is longer than the video: start over.
        part.unlink(missing_ok=True)
        raise TransientError("video range not satisfiable; restarting the download")
    if status in (408, 429) or status >= 500:
        raise TransientError(f"video download answered {status}")
    if status not in (200, 206):
        raise DownloadError(f"video download answered {status}")

    start = 0
    total: int | None = None
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if not match or int(match.group(1)) != offset:
            part.unlink(missing_ok=True)
            raise TransientError("video server answered a range we did not ask for")
        start = offset
        if match.group(3) != "*":
            total = int(match.group(3))
    length = response.headers.get("content-length")
    if total is None and length is not None:
        total = start + int(length)

    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise DownloadError(f"video server sent a {encoding}-encoded body; expected identity")

    written = start
    with open(part, "r+b" if start else "wb") as fh:
        fh.seek(start)
        fh.truncate()
        async for chunk in response.aiter_bytes(CHUNK_SIZE):
            fh.write(chunk)
            written += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    if total is None:
        raise DownloadError("video server sent no Content-Length; cannot verify the file")
    if written != total:
        raise TransientError(f"video body cut short: {written} of {total} bytes")

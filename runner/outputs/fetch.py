"""Fetching a video over HTTP: the URL policy, redirects, Range, Content-Length checks.

Downloads never carry the provider's key: the engine gives them a client of their own.
``fetch`` hands the checked body to whoever stores it (a ``.part`` file, a multipart upload);
where the bytes go, and how they are made final, is the output store's business.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from runner.errors import DownloadError, ExpiredURLError, TransientError, UnsafeURLError
from runner.outputs.pinned import POLICY_EXTENSION
from runner.outputs.policy import DownloadPolicy, check_url, join_redirect

CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
EXPIRED_STATUSES = frozenset({403, 404, 410})
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# A body that trickles in (a byte every 20 s never trips the read timeout) is cut once it has
# taken longer than RATE_GRACE at under MIN_RATE on average; the bytes so far are kept for a
# Range resume, and the cut counts as a transient failure, so a run always ends.
MIN_RATE = 16 * 1024  # bytes per second
RATE_GRACE = 60.0  # seconds

# The URL policy (what a URL may reach, decided on the address connected to) is
# runner.outputs.policy; these names are re-exported for the stores and the engine.
__all__ = ["Body", "DownloadPolicy", "check_url", "fetch"]


@dataclass
class Body:
    """A video body on its way: where it starts, how big the whole video is, the bytes.

    ``start`` is the byte the body begins at (the Range offset the server honoured, else 0)
    and ``total`` the size of the whole video, or ``None`` when the server did not say (no
    Content-Length, a chunked body): then the body is complete when the stream ends cleanly
    (a chunked body cut short is a protocol error, so it is not). :meth:`chunks` yields the
    rest as it arrives and, after the last chunk, raises ``TransientError`` when the bytes do
    not add up to ``total``: a sink that stores chunks as they come keeps them out of sight
    until the iteration ends cleanly, and a cut anywhere leaves every byte received so far
    for a Range resume.
    """

    start: int
    total: int | None
    _response: httpx.Response
    clock: Callable[[], float] = time.monotonic

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body from ``start`` on, checked against ``total`` at its end."""
        received = self.start
        began = self.clock()
        try:
            # No chunk size: each piece is handed on as it arrives, none held back in a buffer.
            async for chunk in self._response.aiter_bytes():
                received += len(chunk)
                yield chunk
                elapsed = self.clock() - began
                if elapsed > RATE_GRACE and (received - self.start) / elapsed < MIN_RATE:
                    raise TransientError(
                        f"video body too slow: {received - self.start} bytes in {elapsed:.0f}s "
                        f"(under {MIN_RATE} bytes/s); resuming later"
                    )
        except httpx.TransportError as err:
            raise _interrupted(err) from err
        if self.total is not None and received < self.total:
            raise TransientError(f"video body cut short: {received} of {self.total} bytes")
        if self.total is not None and received > self.total:
            raise TransientError(f"video body too long: {received} of {self.total} bytes")


@asynccontextmanager
async def fetch(
    client: httpx.AsyncClient,
    url: str,
    *,
    policy: DownloadPolicy,
    offset: int = 0,
    discard: Callable[[], None] | None = None,
) -> AsyncIterator[Body]:
    """GET a video URL, following redirects under the same policy, and hand over its body.

    ``offset`` asks for the body from that byte on (Range). ``discard`` is called when the
    answer shows that the bytes kept from an earlier attempt are unusable (416, a range we
    did not ask for): the next attempt starts from zero. The status, Content-Range,
    Content-Length and encoding are checked before the first byte is handed over.

    Raises ``ExpiredURLError`` for 403/404/410, ``TransientError`` for what is worth retrying
    (connection errors, 408, 429, 5xx, short bodies), ``UnsafeURLError`` for refused URLs and
    ``DownloadError`` for the rest (an encoded body, too many redirects). A body without
    Content-Length is accepted: complete when its stream ends cleanly.
    """
    # Identity encoding: Content-Length must count the bytes we store.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    for _ in range(MAX_REDIRECTS + 1):
        target = await check_url(url, policy)
        request = client.build_request(
            "GET",
            target,
            headers=headers,
            timeout=DOWNLOAD_TIMEOUT,
            extensions={POLICY_EXTENSION: policy},  # a PinnedTransport decides by it
        )
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as err:
            raise _interrupted(err) from err
        except (httpx.InvalidURL, ValueError, UnicodeError) as err:
            # httpx parses a redirect's Location even when not following it.
            raise UnsafeURLError(f"refusing malformed redirect: {type(err).__name__}") from None
        try:
            if response.is_redirect:
                url = join_redirect(url, response.headers.get("location"))
                continue
            yield _body(response, offset, discard or _nothing_kept)
            return
        finally:
            await response.aclose()
    raise DownloadError(f"too many redirects downloading the video (more than {MAX_REDIRECTS})")


def _interrupted(err: httpx.TransportError) -> TransientError:
    return TransientError(f"download interrupted: {type(err).__name__}")


def _nothing_kept() -> None:
    """No bytes were kept from an earlier attempt: nothing to throw away."""


def _body(response: httpx.Response, offset: int, discard: Callable[[], None]) -> Body:
    """The answer's body once its status and headers say it can be verified."""
    status = response.status_code
    if status in EXPIRED_STATUSES:
        raise ExpiredURLError(f"video URL answered {status}")
    if status == 416 and offset:
        # What we kept is longer than the video: start over.
        discard()
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
            discard()
            raise TransientError("video server answered a range we did not ask for")
        start = offset
        if match.group(3) != "*":
            total = int(match.group(3))
    length = response.headers.get("content-length")
    if total is None and length is not None:
        if not length.strip().isdigit():
            raise DownloadError("video server sent a malformed Content-Length")
        total = start + int(length)

    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise DownloadError(f"video server sent a {encoding}-encoded body; expected identity")
    return Body(start=start, total=total, _response=response)

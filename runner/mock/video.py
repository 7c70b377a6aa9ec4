"""Videos the mock serves, byte ranges, and answers that break off on purpose.

``sample.mp4`` is a real 1 s, 64x64 H.264 clip (made with ffmpeg's ``testsrc``). Each
generation gets its own bytes: the sample plus a top-level ``free`` box naming the generation,
which players skip, so a test can tell swapped files apart while every file stays playable.
"""

from __future__ import annotations

import functools
import re
import struct
from importlib import resources

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

BOX_HEADER = 8  # 32-bit size + 4-byte type
_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the app to break a response off mid-way.

    Over a socket uvicorn closes the connection, and the client's httpx raises
    ``RemoteProtocolError`` itself; in-process, ``httpx.ASGITransport`` re-raises this very
    exception, which is already an httpx transport error. Either way the client sees a
    transport failure after the server has acted on the request.
    """


class RangeNotSatisfiable(Exception):
    """A ``Range`` header in bytes that does not fit the file (answered 416)."""


@functools.cache
def sample_mp4() -> bytes:
    """The committed MP4 fixture."""
    return resources.files("runner.mock").joinpath("sample.mp4").read_bytes()


def video_for(generation_id: str, *, min_size: int = 0) -> bytes:
    """The sample plus a ``free`` box holding the generation id, padded to ``min_size``."""
    payload = f"runner-mock generation {generation_id}\n".encode()
    base = sample_mp4()
    padding = max(0, min_size - len(base) - BOX_HEADER - len(payload))
    size = BOX_HEADER + len(payload) + padding
    return base + struct.pack(">I", size) + b"free" + payload + b"\0" * padding


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(first, last)`` byte positions a ``Range`` header asks for, inclusive.

    ``None`` means serve the whole file: no header, a unit other than bytes, or several ranges
    (RFC 9110 lets a server ignore those). A bytes range that is malformed or lies past the end
    raises :class:`RangeNotSatisfiable`.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    match = _RANGE.fullmatch(spec)
    if not match or not (match[1] or match[2]):
        raise RangeNotSatisfiable(header)
    if not match[1]:  # suffix range: the last N bytes
        count = int(match[2])
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - count), size - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


class BrokenResponse(Response):
    """A response that announces its full Content-Length, sends ``sent`` bytes, then drops."""

    def __init__(
        self,
        content: bytes,
        *,
        sent: int = 0,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self.sent = sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.sent:
            await send(
                {"type": "http.response.body", "body": self.body[: self.sent], "more_body": True}
            )
        raise ConnectionDropped("mock server dropped the connection on purpose")

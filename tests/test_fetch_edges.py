"""Downloads at their edges: bodies without Content-Length, cuts at any byte, hostile headers.

A raw loopback server (asyncio streams on 127.0.0.1) stands in where the HTTP framing itself
matters (a chunked body cut short); MockTransport serves the rest. No test waits on time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from runner.errors import DownloadError, TransientError, UnsafeURLError
from runner.outputs.fetch import DownloadPolicy
from runner.outputs.local import download

pytestmark = pytest.mark.anyio

LOCAL = DownloadPolicy(allow_private=True)
BODY = bytes(range(256)) * 50  # 12,800 bytes: far below any chunk size


def cut_after(n: int) -> Callable[[httpx.Request], httpx.Response]:
    """A server that sends ``n`` bytes of BODY (honouring Range), then drops the connection."""

    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.headers.get("range", "bytes=0-")[6:].rstrip("-"))

        async def stream() -> AsyncIterator[bytes]:
            yield BODY[start : start + n]
            raise httpx.ReadError("connection dropped")

        headers = {"Content-Length": str(len(BODY) - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"
        return httpx.Response(206 if start else 200, headers=headers, content=stream())

    return answer


@pytest.mark.parametrize("cut", [1, 100, 4096, 10_000])
async def test_resume_with_range_from_any_cut(tmp_path: Path, cut: int) -> None:
    """However few bytes arrived before the cut, the next attempt asks for the rest only."""
    dest = tmp_path / "k.mp4"
    asked: list[str | None] = []
    attempt = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal attempt
        attempt += 1
        asked.append(request.headers.get("range"))
        if attempt == 1:
            return cut_after(cut)(request)
        return _whole_from(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(TransientError):
            await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL, resume_token="g")
        assert (tmp_path / "k.mp4.part").stat().st_size == cut
        saved = await download(
            client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL, resume_token="g"
        )
    assert asked == [None, f"bytes={cut}-"]
    assert dest.read_bytes() == BODY
    assert saved.sha256 == hashlib.sha256(BODY).hexdigest()


def _whole_from(request: httpx.Request) -> httpx.Response:
    start = int(request.headers.get("range", "bytes=0-")[6:].rstrip("-"))
    headers = {"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"} if start else {}
    return httpx.Response(206 if start else 200, headers=headers, content=BODY[start:])


async def test_resume_of_a_body_without_content_length(tmp_path: Path) -> None:
    """A chunked video cut short resumes with Range; the 206 may say `/*` for the total."""
    dest = tmp_path / "k.mp4"
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:

            async def stream() -> AsyncIterator[bytes]:
                yield BODY[:700]
                raise httpx.RemoteProtocolError("incomplete chunked read")

            return httpx.Response(200, content=stream())

        async def rest() -> AsyncIterator[bytes]:
            yield BODY[700:]

        return httpx.Response(206, headers={"Content-Range": "bytes 700-*/*"}, content=rest())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(TransientError):
            await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL, resume_token="g")
        # A 206 whose Content-Range has no end byte is no range we asked for: restart clean.
        with pytest.raises(TransientError, match="range we did not ask for"):
            await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL, resume_token="g")
    assert not (tmp_path / "k.mp4.part").exists()


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "12 34"])
async def test_malformed_content_length(tmp_path: Path, length: str) -> None:
    """A Content-Length that is no number is refused, never an uncaught ValueError."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": length}, content=b"x")

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises((DownloadError, TransientError)):
            await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)
    assert not (tmp_path / "k.mp4").exists()


@pytest.mark.parametrize(
    "location", ["http://h:99999/x", "http://" + "a" * 64 + ".test/", "http://a b/", "x:\\y"]
)
async def test_malformed_redirects_are_unsafe(tmp_path: Path, location: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": location})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises((UnsafeURLError, TransientError)):
            await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)


# --- real HTTP framing over loopback --------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v.mp4"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def chunked(data: bytes, *, finish: bool) -> bytes:
    pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    out = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return out + (b"0\r\n\r\n" if finish else b"")


async def test_chunked_body_over_loopback(tmp_path: Path) -> None:
    """Transfer-Encoding: chunked, no Content-Length: saved, with size and sha256."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        writer.write(chunked(BODY, finish=True))
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server, httpx.AsyncClient() as client:
        saved = await download(client, url, tmp_path / "k.mp4", policy=LOCAL)
    assert (tmp_path / "k.mp4").read_bytes() == BODY
    assert (saved.bytes, saved.sha256) == (len(BODY), hashlib.sha256(BODY).hexdigest())


async def test_chunked_body_cut_short_over_loopback(tmp_path: Path) -> None:
    """A chunked body whose last chunk never comes is incomplete, not a video: TransientError,
    no file under the final name, and the bytes kept for a Range resume."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunked(BODY[:3000], finish=False))
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server, httpx.AsyncClient() as client:
        with pytest.raises(TransientError):
            await download(client, url, tmp_path / "k.mp4", policy=LOCAL, resume_token="g")
    assert not (tmp_path / "k.mp4").exists()
    assert (tmp_path / "k.mp4.part").read_bytes() == BODY[:3000]

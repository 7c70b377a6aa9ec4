"""httpcore connections on asyncio transports (runner.outputs.streams), against a real loopback
server on asyncio's loop and on uvloop's."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util

import anyio
import httpcore
import httpx
import pytest

from runner.outputs.streams import HIGH_WATER, AsyncioBackend, http_transport

NO_UVLOOP = importlib.util.find_spec("uvloop") is None
LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(NO_UVLOOP, reason="no uvloop"))]


def run(loop: str, fn):  # type: ignore[no-untyped-def]
    return anyio.run(fn, backend_options={"use_uvloop": loop == "uvloop"})


async def serve(handler):  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_through_a_pool(loop: str) -> None:
    """GETs and POSTs with bodies, kept-alive connections reused, a large answer whole."""
    big = bytes(range(256)) * (3 * HIGH_WATER // 256)  # the socket's reading pauses and resumes

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := (await reader.readuntil(b"\r\n\r\n")).lower():
            length = head.partition(b"content-length: ")[2].split(b"\r\n")[0] or b"0"
            body = await reader.readexactly(int(length))
            answer = big if head.startswith(b"get /big") else b"echo:" + body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer)
            await writer.drain()

    async def main() -> None:
        server, port = await serve(handler)
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with server, httpx.AsyncClient(transport=http_transport(limits=limits)) as client:
            base = f"http://127.0.0.1:{port}"
            answers = []

            async def post(i: int) -> None:
                answers.append((await client.post(f"{base}/p", content=b"x%d" % i)).content)

            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(post, i)
            assert sorted(answers) == sorted(b"echo:x%d" % i for i in range(40))
            got = await client.get(f"{base}/big")
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(big).digest()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_timeouts_end_and_closed_connections(loop: str) -> None:
    """A silent server is a ReadTimeout; a server that closes is an empty read and a
    connection httpcore sees as readable (so not reused); nothing listening: ConnectError."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read(1) == b"c":
            writer.close()
            closed.set()
        else:
            await reader.read()  # silent until the client goes

    async def main() -> None:
        server, port = await serve(handler)
        async with server:
            backend = AsyncioBackend()
            silent = await backend.connect_tcp("127.0.0.1", port, timeout=5)
            await silent.write(b"s")
            with pytest.raises(httpcore.ReadTimeout):
                await silent.read(100, timeout=0.05)
            await silent.aclose()
            with pytest.raises(httpcore.ReadError):
                await silent.read(100)

            gone = await backend.connect_tcp("127.0.0.1", port, timeout=5)
            assert gone.get_extra_info("is_readable") is False
            assert gone.get_extra_info("server_addr")[1] == port
            await gone.write(b"c")
            await closed.wait()
            assert await gone.read(100, timeout=5) == b""
            assert gone.get_extra_info("is_readable") is True
            await gone.aclose()

        with pytest.raises(httpcore.ConnectError):
            await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)

    run(loop, main)

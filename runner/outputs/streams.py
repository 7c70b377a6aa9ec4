"""httpcore connections straight on asyncio's transports (:class:`AsyncioBackend`).

httpcore's backend for asyncio goes through anyio: each read and each write opens a cancel
scope for its timeout and takes a checkpoint, and each reuse of a kept-alive connection builds
a dict of socket attributes (two system calls) to ask whether the server closed it. At a
thousand generations in flight that was a tenth of the runner's CPU. Here a connection is an
``asyncio.Protocol``: bytes arrive in a buffer (reading pauses while it holds ``HIGH_WATER``),
a read waits on a future with a timer for its timeout, a write hands its bytes to the
transport (and waits only while the transport says its buffer is full), and "closed by the
server?" is a flag the protocol set when it was told. Timeouts and errors are httpcore's own
(``ReadTimeout``, ``ConnectError``...), as with its backend; connecting and TLS are asyncio's
(``create_connection``, ``start_tls``), under a cancel scope for their timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import anyio
import httpcore
import httpx

HIGH_WATER = 1024 * 1024  # bytes held unread before the socket is no longer read (memory flat)


@contextmanager
def _mapped(timeout: type[Exception], error: type[Exception]) -> Iterator[None]:
    """Connecting and TLS: a timeout and an OS or TLS error as httpcore names them."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except (OSError, ssl.SSLError) as exc:
        raise error(str(exc) or type(exc).__name__) from exc


class AsyncioStream(asyncio.Protocol, httpcore.AsyncNetworkStream):
    """One connection: the protocol asyncio feeds, and the stream httpcore reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False  # the server sent its last byte (or the connection is gone)
        self._lost: Exception | None = None  # why the connection broke, if it did
        self._closed = False  # closed here
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None  # a read or a write waiting

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are no subclasses

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= HIGH_WATER and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._writing_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None, error: type[Exception]) -> None:
        """Until the protocol is told something (data, EOF, room to write, the end)."""
        waiter = self._waiter = self._loop.create_future()
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, _time_out, waiter, error)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    # --- httpcore.AsyncNetworkStream -----------------------------------------------------

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._closed:
            raise httpcore.ReadError("the connection is closed")
        if not self._chunks and not self._eof:
            await self._wait(timeout, httpcore.ReadTimeout)
        if not self._chunks:
            if self._lost is not None:
                raise httpcore.ReadError(str(self._lost) or type(self._lost).__name__)
            return b""
        return self._take(max_bytes)

    def _take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of what has arrived, in as few pieces as it came."""
        chunks = self._chunks
        data = chunks.popleft()
        if len(data) > max_bytes:
            chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        elif chunks and len(data) + len(chunks[0]) <= max_bytes:
            parts, size = [data], len(data)
            while chunks and size + len(chunks[0]) <= max_bytes:
                part = chunks.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        self._buffered -= len(data)
        if self._reading_paused and self._buffered < HIGH_WATER // 2 and self._transport:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        transport = self._transport
        if self._closed or self._lost is not None or transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        while self._writing_paused:
            await self._wait(timeout, httpcore.WriteTimeout)
        if self._lost is not None:
            raise httpcore.WriteError(str(self._lost) or type(self._lost).__name__)

    async def aclose(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        assert self._transport is not None
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError), anyio.fail_after(timeout):
                transport = await self._loop.start_tls(
                    self._transport, self, ssl_context, server_hostname=server_hostname
                )
        except BaseException:
            self._transport.abort()
            raise
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._transport = transport
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "is_readable":  # a kept-alive connection the server has closed (or wrote on)
            return self._eof or bool(self._chunks)
        if transport is None:
            return None
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if name in ("ssl_object", "sockname", "peername", "socket"):
            return transport.get_extra_info(name)
        return None


def _time_out(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out"))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on the running asyncio loop (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError), anyio.fail_after(timeout):
            _, stream = await loop.create_connection(
                lambda: AsyncioStream(loop), host, port, local_addr=local
            )
        sock = stream.get_extra_info("socket")  # asyncio sets TCP_NODELAY itself
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError), anyio.fail_after(timeout):
            _, stream = await loop.create_unix_connection(lambda: AsyncioStream(loop), path)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def http_transport(
    *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """``httpx.AsyncHTTPTransport(verify=..., limits=...)`` whose connections are
    :class:`AsyncioStream`\\ s."""
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    transport = httpx.AsyncHTTPTransport(verify=context, limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport

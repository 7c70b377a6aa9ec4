"""Connection pools that stay cheap at hundreds of connections.

httpcore looks at every connection of its pool each time a request starts or ends (and, for
each idle one, asks the socket whether the server closed it: two system calls and a dict of
socket attributes built), so a request through a pool of N connections costs O(N) — at a
thousand generations in flight that was most of the runner's CPU. :class:`ShardedTransport`
holds as many connections in several small pools: a request goes to the pool with the fewest
requests under way, and costs O(``PER_SHARD``). When every pool has a request on each of its
connections, the next waits here, in order, for one to end: in httpcore's queue it would be
looked at again (against every connection) each time any request of its pool started or ended.

:class:`LargeReads` lets a download read what the socket has, up to ``READ_SIZE``, where
httpcore asks for 64 KiB at a time: the event loop then handles a quarter of the chunks and
no longer splits each 256 KiB the socket gives into four copies.

:class:`Client` is ``httpx.AsyncClient`` with a cookie jar that looks at an answer only when it
sets a cookie: httpx builds a ``urllib`` request and response (parsing the URL again) for the
jar on every answer, a twelfth of the CPU of an API call, for answers that set none.
"""

from __future__ import annotations

import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from runner.outputs.streams import http_transport
from runner.outputs.tls import client_context

PER_SHARD = 4  # connections per pool: a request's bookkeeping looks at these only
READ_SIZE = 1024 * 1024  # the most a download reads from its socket at once


class LargeReads(httpcore.AsyncNetworkStream):
    """A connection whose reads take up to ``READ_SIZE`` bytes, whatever httpcore asks for
    (its HTTP parser takes any amount); everything else is the wrapped stream's."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, READ_SIZE), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return LargeReads(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its pool's count back once closed."""

    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._inner = inner
        self._done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._done is not None:
                self._done()
                self._done = None


class _Cookies(httpx.Cookies):
    """``httpx.Cookies`` that skips answers without a cookie (the jar would keep nothing)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class Client(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookies are :class:`_Cookies` (same cookies kept and sent)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _Cookies(super().cookies)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # httpx's CookieTypes
        self._jar = _Cookies(cookies)


@dataclass(eq=False)
class _Turn:
    """A request waiting for room: woken once a pool is counted for it (``pool``)."""

    woken: anyio.Event
    pool: int = -1


class ShardedTransport(httpx.AsyncBaseTransport):
    """``limits.max_connections`` connections as pools of ``per_shard`` each, made by
    ``make(limits_of_one_pool)``; see the module's docstring."""

    def __init__(
        self,
        limits: httpx.Limits,
        make: Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None = None,
        per_shard: int = PER_SHARD,
    ) -> None:
        total = limits.max_connections or per_shard
        keep = limits.max_keepalive_connections
        shards = max(1, math.ceil(total / per_shard))
        one = httpx.Limits(
            max_connections=math.ceil(total / shards),
            max_keepalive_connections=None if keep is None else math.ceil(keep / shards),
            keepalive_expiry=limits.keepalive_expiry,
        )
        if make is None:
            context = client_context()  # one for every pool: it is costly to load
            make = lambda one: http_transport(verify=context, limits=one)  # noqa: E731
        self._shards = [make(one) for _ in range(shards)]
        self._busy = [0] * shards
        self._room = one.max_connections or per_shard  # requests a pool serves at once
        self._waiting: deque[_Turn] = deque()  # requests waiting for room, in order

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        if self._waiting or min(busy) >= self._room:
            i = await self._wait_for_room(request)
        else:
            i = self._take()

        def done() -> None:
            busy[i] -= 1
            self._wake()

        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            done()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, done)
        return response

    def _take(self) -> int:
        """The pool with the fewest requests under way, counted with one more."""
        busy = self._busy
        i = busy.index(min(busy))
        busy[i] += 1
        return i

    async def _wait_for_room(self, request: httpx.Request) -> int:
        """Wait for a pool with a free connection, after those that waited before (at most
        the request's pool timeout, as in httpcore's queue); the pool it was given, counted
        for it when it was woken (so a request arriving meanwhile cannot take that room)."""
        turn = _Turn(anyio.Event())
        self._waiting.append(turn)
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            with anyio.fail_after(timeout):
                await turn.woken.wait()
        except BaseException as err:
            if turn.woken.is_set():  # given a pool, then cancelled: the room goes to the next
                self._busy[turn.pool] -= 1
                self._wake()
            else:
                self._waiting.remove(turn)
            if isinstance(err, TimeoutError):
                raise httpx.PoolTimeout("no connection free in time", request=request) from None
            raise
        return turn.pool

    def _wake(self) -> None:
        """Give the first waiting requests the room there is, in order."""
        while self._waiting and min(self._busy) < self._room:
            turn = self._waiting.popleft()
            turn.pool = self._take()
            turn.woken.set()

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()

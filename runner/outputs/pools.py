"""Connection pools that stay cheap at hundreds of connections.

httpcore looks at every connection of its pool each time a request starts or ends (and, for
each idle one, asks the socket whether the server closed it: two system calls and a dict of
socket attributes built), so a request through a pool of N connections costs O(N) — at a
thousand generations in flight that was most of the runner's CPU. :class:`ShardedTransport`
holds as many connections in several small pools: a request goes to the pool with the fewest
requests under way, and costs O(``PER_SHARD``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import httpx

PER_SHARD = 8  # connections per pool: a request's bookkeeping looks at these only


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
            context = httpx.create_ssl_context()  # one for every pool: it is costly to make
            make = lambda one: httpx.AsyncHTTPTransport(verify=context, limits=one)  # noqa: E731
        self._shards = [make(one) for _ in range(shards)]
        self._busy = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        i = busy.index(min(busy))

        def done() -> None:
            busy[i] -= 1

        busy[i] += 1
        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            done()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, done)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()

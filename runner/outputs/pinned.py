"""The pinned transport: connections for provider-supplied URLs go only where the policy allows.

:class:`PinnedBackend` (an httpcore network backend, used through :class:`PinnedTransport`)
resolves the host **once** per connection, checks **every** address it resolved to with the
:class:`~runner.outputs.policy.URLPolicy` (see :mod:`runner.outputs.policy` for what is
refused), and connects to one of those checked addresses. httpcore still does TLS with the
URL's host name (SNI and certificate checks) and the request keeps its ``Host`` header, so
nothing but the socket's destination changes. A name that answers a public address to one
lookup and a loopback one to the next (DNS rebinding) therefore gains nothing: there is no
second lookup. This module also holds the resolver seam, the request extension that names a
request's policy, and :func:`pinned_client`, the ``httpx.AsyncClient`` built on all of it.

Proxies from the environment are not used by :class:`PinnedTransport`: a proxy would resolve
the name itself, out of the policy's sight.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import anyio
import httpcore
import httpx

from runner.errors import UnsafeURLError
from runner.outputs.heap import keep_heap
from runner.outputs.policy import IPAddress, URLPolicy, literal_address, parse_url
from runner.outputs.pools import Client, LargeReads, ShardedTransport
from runner.outputs.streams import AsyncioBackend
from runner.outputs.tls import client_context

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""``await resolver(host, port)``: every address ``host`` resolves to (an ``OSError`` when it
resolves to nothing). Tests inject one that answers from a table and records each call."""

POLICY_EXTENSION = "runner.url_policy"
"""Request extension naming the :class:`URLPolicy` a :class:`PinnedTransport` applies to it."""

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The operating system's resolver (``getaddrinfo``), as a :data:`Resolver`."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolve once, check every address, connect to a checked one (see the module docstring).

    ``inner`` does the connecting (default: ``streams.AsyncioBackend``); tests give one that
    records the address instead of opening a socket.
    """

    def __init__(
        self,
        policy: URLPolicy,
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner if inner is not None else AsyncioBackend()

    async def addresses(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        """Every address ``host`` stands for, each allowed by the policy (else refused)."""
        literal = literal_address(host)
        if literal is not None:
            found = [literal]
        else:
            try:
                with anyio.fail_after(timeout):
                    found = await self.resolver(host, port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
            except (OSError, UnicodeError, ValueError) as err:
                raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from None
            if not found:
                raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in found:
            why = self.policy.refusal(address)
            if why is not None:
                raise UnsafeURLError(f"refusing to connect to {host}: {why}")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        keep_heap()  # a video's megabyte buffers: see heap.py
        last: Exception | None = None
        for address in await self.addresses(host, port, timeout):
            try:
                stream = await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return LargeReads(stream)  # videos: fewer, larger chunks (pools.py)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                last = err
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURLError("refusing to connect to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    # Most specific first.
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """httpcore's exceptions as httpx's, as ``httpx.AsyncHTTPTransport`` does."""
    try:
        yield
    except Exception as err:
        for source, target in _EXCEPTIONS:
            if isinstance(err, source):
                raise target(str(err), request=request) from err
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            with _httpx_errors(self._request):
                await self._stream.aclose()


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection goes through :class:`PinnedBackend`.

    The policy of a request is its ``extensions[POLICY_EXTENSION]``, else ``policy``; each
    policy gets its own connection pool, so a connection opened under a lenient policy is
    never reused under a strict one. Redirects are not followed here (``httpx`` follows them
    only when asked; the download code checks each hop and connects again through here).
    """

    def __init__(
        self,
        policy: URLPolicy | None = None,
        *,
        resolver: Resolver = system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        verify: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        http2: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy or URLPolicy()
        self._resolver = resolver
        self._inner = network_backend
        self._ssl = ssl_context or httpx.create_ssl_context(verify=verify, trust_env=False)
        self._limits = limits
        self._http2 = http2
        self._pools: dict[URLPolicy, httpcore.AsyncConnectionPool] = {}

    def _pool(self, policy: URLPolicy) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(policy)
        if pool is None:
            backend = PinnedBackend(policy, resolver=self._resolver, inner=self._inner)
            pool = self._pools[policy] = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl,
                max_connections=self._limits.max_connections,
                max_keepalive_connections=self._limits.max_keepalive_connections,
                keepalive_expiry=self._limits.keepalive_expiry,
                http1=True,
                http2=self._http2,
                network_backend=backend,
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = request.extensions.get(POLICY_EXTENSION) or self.policy
        if not isinstance(policy, URLPolicy):
            raise TypeError(f"extension {POLICY_EXTENSION} must be a URLPolicy")
        parse_url(str(request.url), what="URL")
        extensions = {k: v for k, v in request.extensions.items() if k != POLICY_EXTENSION}
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=extensions,
        )
        with _httpx_errors(request):
            response = await self._pool(policy).handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


def pinned_client(
    policy: URLPolicy | None = None,
    *,
    resolver: Resolver = system_resolver,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
    limits: httpx.Limits = DEFAULT_LIMITS,
    timeout: httpx.Timeout | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose connections all go through the URL policy.

    For downloads and uploads: the engine's download client should be one of these (each
    download names its policy with ``extensions={POLICY_EXTENSION: policy}``).
    """
    context = client_context(trust_env=False)  # one for every pool: it is costly

    def shard(one: httpx.Limits) -> PinnedTransport:
        return PinnedTransport(
            policy,
            resolver=resolver,
            network_backend=network_backend,
            limits=one,
            ssl_context=context,
        )

    return Client(
        transport=ShardedTransport(limits, shard),  # cheap at many connections (pools.py)
        trust_env=False,
        follow_redirects=False,
        timeout=timeout if timeout is not None else httpx.Timeout(30.0, connect=10.0),
    )

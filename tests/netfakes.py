"""A resolver and a network backend that record instead of touching the network.

``FakeResolver`` answers host names from a table (a list of answers per name: one per lookup,
the last repeated), and records every lookup. ``RecordingBackend`` is an httpcore network
backend that records every ``connect_tcp`` (the address the policy chose) and every TLS
start (the SNI name), and answers with canned HTTP/1.1 bytes: no socket is ever opened, so a
test may name any address as a destination without a packet leaving the machine.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from runner.outputs.pinned import PinnedTransport
from runner.outputs.policy import IPAddress, URLPolicy


class FakeResolver:
    """``await resolver(host, port)`` from a table; ``calls`` lists every lookup."""

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.answers = {host: [list(a) for a in seq] for host, seq in answers.items()}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        seq = self.answers.get(host)
        if not seq:
            raise OSError(f"[fake] {host} does not resolve")
        answer = seq.pop(0) if len(seq) > 1 else seq[0]
        return [ipaddress.ip_address(a) for a in answer]


def http_response(
    status: int = 200, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """Canned HTTP/1.1 response bytes (with Content-Length, and Connection: close)."""
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


@dataclass
class Connection:
    """One recorded connection: where the backend was asked to connect, TLS name, bytes sent."""

    address: str
    port: int
    sni: str | None = None
    sent: bytearray = field(default_factory=bytearray)

    @property
    def host_header(self) -> str | None:
        for line in bytes(self.sent).split(b"\r\n"):
            if line.lower().startswith(b"host:"):
                return line.split(b":", 1)[1].strip().decode()
        return None


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, record: Connection, answer: bytes) -> None:
        self.record = record
        self._pending = [answer]

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self._pending:
            return b""
        data = self._pending[0]
        chunk, rest = data[:max_bytes], data[max_bytes:]
        if rest:
            self._pending[0] = rest
        else:
            self._pending.pop(0)
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.record.sent += buffer

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.record.sni = server_hostname
        return self

    def get_extra_info(self, info: str) -> Any:
        return None


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records connections; answers each with ``answers[address]`` or ``default``."""

    def __init__(
        self, answers: Mapping[str, bytes] | None = None, default: bytes = b""
    ) -> None:
        self.answers = dict(answers or {})
        self.default = default or http_response(200, b"video")
        self.connections: list[Connection] = []

    @property
    def addresses(self) -> list[str]:
        return [c.address for c in self.connections]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        record = Connection(host, port)
        self.connections.append(record)
        return _Stream(record, self.answers.get(host, self.default))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets here")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("nothing sleeps here")


def recording_client(
    resolver: FakeResolver,
    backend: RecordingBackend,
    policy: URLPolicy | None = None,
) -> httpx.AsyncClient:
    """A download/upload client over the real policy transport, with no network under it."""
    transport = PinnedTransport(policy, resolver=resolver, network_backend=backend)
    return httpx.AsyncClient(transport=transport, trust_env=False)

"""The URL policy (runner/outputs/policy.py): every address form, for video URLs, redirects
and (in tests/test_providers.py's upload tests, through the same table) upload URLs.

Nothing here opens a socket: names resolve through ``FakeResolver`` and connections go to
``RecordingBackend``, which records the address the policy chose and answers canned bytes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpcore
import httpx
import pytest

from runner.errors import TransientError, UnsafeURLError
from runner.outputs.fetch import fetch
from runner.outputs.pinned import PinnedBackend
from runner.outputs.policy import (
    URLPolicy,
    check_url,
    literal_address,
    parse_url,
)
from tests.netfakes import (
    Connection,
    FakeResolver,
    RecordingBackend,
    http_response,
    recording_client,
)

pytestmark = pytest.mark.anyio

STRICT = URLPolicy(allow_private=False)
LENIENT = URLPolicy(allow_private=True)  # the provider's base URL is private (the mock)

ALWAYS = "always"  # refused whatever the base URL
PRIVATE = "private"  # refused unless the base URL is private too
ALLOWED = "allowed"

# (URL host as written, what the policy says). Public examples are decided, never contacted.
ADDRESS_TABLE: list[tuple[str, str]] = [
    # link-local and cloud metadata
    ("169.254.169.254", ALWAYS),
    ("169.254.170.2", ALWAYS),
    ("100.100.100.200", ALWAYS),  # Alibaba metadata, inside CGNAT
    ("192.0.0.192", ALWAYS),  # Oracle metadata, inside 192.0.0.0/24
    ("[fd00:ec2::254]", ALWAYS),  # AWS IMDS over IPv6, inside unique-local
    ("[fe80::1]", ALWAYS),
    ("[fe80::1%25eth0]", ALWAYS),
    # IPv6 forms that carry an IPv4 address
    ("[::ffff:169.254.169.254]", ALWAYS),
    ("[::ffff:a9fe:a9fe]", ALWAYS),
    ("[::ffff:127.0.0.1]", PRIVATE),
    ("[::ffff:8.8.8.8]", ALLOWED),
    ("[64:ff9b::a9fe:a9fe]", ALWAYS),  # NAT64
    ("[64:ff9b::169.254.169.254]", ALWAYS),
    ("[64:ff9b::7f00:1]", PRIVATE),
    ("[64:ff9b::808:808]", ALLOWED),
    ("[64:ff9b:1::a9fe:a9fe]", ALWAYS),  # local-use NAT64
    ("[64:ff9b:1::808:808]", ALWAYS),
    ("[2002:a9fe:a9fe::1]", ALWAYS),  # 6to4
    ("[2002:c000:2ff::1]", ALWAYS),  # 6to4 of 192.0.2.255 (documentation)
    ("[2002:808:808::1]", ALLOWED),
    ("[2001:0:4136:e378:8000:63bf:3fff:fdd2]", ALWAYS),  # Teredo (client 192.0.2.45)
    ("[2001:0:808:808::1]", ALWAYS),  # Teredo tunnels are refused even when public
    ("[::1.2.3.4]", ALWAYS),  # IPv4-compatible (deprecated)
    # special-purpose IPv4
    ("0.0.0.0", ALWAYS),
    ("0.1.2.3", ALWAYS),
    ("100.64.0.1", PRIVATE),  # CGNAT
    ("100.127.255.254", PRIVATE),
    ("192.0.0.8", ALWAYS),
    ("192.0.0.170", ALWAYS),
    ("192.0.2.1", ALWAYS),
    ("192.88.99.1", ALWAYS),
    ("198.18.0.1", ALWAYS),
    ("198.19.255.255", ALWAYS),
    ("198.51.100.7", ALWAYS),
    ("203.0.113.9", ALWAYS),
    ("224.0.0.1", ALWAYS),
    ("239.255.255.250", ALWAYS),
    ("240.0.0.1", ALWAYS),
    ("255.255.255.255", ALWAYS),
    # private and loopback
    ("127.0.0.1", PRIVATE),
    ("127.8.9.10", PRIVATE),
    ("10.1.2.3", PRIVATE),
    ("172.16.0.1", PRIVATE),
    ("172.31.255.255", PRIVATE),
    ("192.168.0.5", PRIVATE),
    ("[::1]", PRIVATE),
    ("[fd12:3456::1]", PRIVATE),
    ("[fc00::1]", PRIVATE),
    # special-purpose IPv6
    ("[::]", ALWAYS),
    ("[100::1]", ALWAYS),
    ("[2001:2::1]", ALWAYS),
    ("[2001:db8::1]", ALWAYS),
    ("[3fff::1]", ALWAYS),
    ("[5f00::1]", ALWAYS),
    ("[fec0::1]", ALWAYS),
    ("[ff02::1]", ALWAYS),
    ("[1::1]", ALWAYS),  # outside 2000::/3
    # legacy IPv4 spellings (read as inet_aton and browsers read them)
    ("2130706433", PRIVATE),
    ("0x7f000001", PRIVATE),
    ("0x7f.1", PRIVATE),
    ("127.1", PRIVATE),
    ("017700000001", PRIVATE),
    ("0xa9fea9fe", ALWAYS),  # 169.254.169.254
    ("0xa9.0xfe.0xa9.0xfe", ALWAYS),
    ("2852039166", ALWAYS),  # 169.254.169.254
    ("1.2.3.4.5", ALWAYS),  # not an address at all
    ("4294967296", ALWAYS),
    # public
    ("8.8.8.8", ALLOWED),
    ("93.184.216.34", ALLOWED),
    ("[2606:4700:4700::1111]", ALLOWED),
]


def expected(kind: str, policy: URLPolicy) -> bool:
    """Whether ``kind`` is refused under ``policy``."""
    return kind == ALWAYS or (kind == PRIVATE and not policy.allow_private)


def case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


async def read_video(client: httpx.AsyncClient, url: str, policy: URLPolicy) -> bytes:
    async with fetch(client, url, policy=policy) as body:
        return b"".join([chunk async for chunk in body.chunks()])


def resolved_form(host: str) -> str | None:
    """The address a table host names (for the 'a name that resolves to it' cases)."""
    try:
        address = literal_address(host.replace("%25", "%"))
    except UnsafeURLError:
        return None
    if address is None:
        return None
    return str(address)


# --- the table, for video URLs ------------------------------------------------------------


@pytest.mark.parametrize("policy", [STRICT, LENIENT], ids=["public-base", "private-base"])
@pytest.mark.parametrize("case", ADDRESS_TABLE, ids=case_id)
async def test_video_url_written_as_an_address(case: tuple[str, str], policy: URLPolicy) -> None:
    """A video URL naming the address directly is decided before any connection."""
    host, kind = case
    url = f"http://{host}/v.mp4"
    if expected(kind, policy):
        with pytest.raises(UnsafeURLError):
            await check_url(url, policy)
    else:
        await check_url(url, policy)


RESOLVABLE = [case for case in ADDRESS_TABLE if resolved_form(case[0]) is not None]


@pytest.mark.parametrize("policy", [STRICT, LENIENT], ids=["public-base", "private-base"])
@pytest.mark.parametrize("case", RESOLVABLE, ids=case_id)
async def test_video_url_whose_name_resolves_to_the_address(
    case: tuple[str, str], policy: URLPolicy
) -> None:
    """A host name is resolved once, every address checked, and the checked one connected."""
    host, kind = case
    address = str(resolved_form(host))
    resolver = FakeResolver({"cdn.video.test": [[address]]})
    backend = RecordingBackend()
    async with recording_client(resolver, backend) as client:
        if expected(kind, policy):
            with pytest.raises(UnsafeURLError):
                await read_video(client, "http://cdn.video.test/v.mp4", policy)
            assert backend.connections == []
        else:
            assert await read_video(client, "http://cdn.video.test/v.mp4", policy) == b"video"
            assert backend.addresses == [address]
    assert resolver.calls == ["cdn.video.test"]


# --- the table, for redirects -------------------------------------------------------------


@pytest.mark.parametrize("case", ADDRESS_TABLE, ids=case_id)
async def test_redirect_to_the_address(case: tuple[str, str]) -> None:
    """Every hop is checked: a redirect from an allowed host to a refused one goes nowhere."""
    host, kind = case
    resolver = FakeResolver({"cdn.video.test": [["8.8.4.4"]]})
    hop = http_response(302, headers=[("Location", f"http://{host}/v.mp4")])
    backend = RecordingBackend({"8.8.4.4": hop})
    async with recording_client(resolver, backend) as client:
        if expected(kind, STRICT):
            with pytest.raises(UnsafeURLError):
                await read_video(client, "http://cdn.video.test/v.mp4", STRICT)
            assert backend.addresses == ["8.8.4.4"]
        else:
            assert await read_video(client, "http://cdn.video.test/v.mp4", STRICT) == b"video"
            assert backend.addresses == ["8.8.4.4", resolved_form(host)]


@pytest.mark.parametrize("case", RESOLVABLE, ids=case_id)
async def test_redirect_to_a_name_that_resolves_to_the_address(case: tuple[str, str]) -> None:
    """The second hop's name is resolved and checked like the first."""
    host, kind = case
    address = str(resolved_form(host))
    resolver = FakeResolver({"cdn.video.test": [["8.8.4.4"]], "edge.video.test": [[address]]})
    hop = http_response(302, headers=[("Location", "https://edge.video.test/v.mp4")])
    backend = RecordingBackend({"8.8.4.4": hop})
    async with recording_client(resolver, backend) as client:
        if expected(kind, STRICT):
            with pytest.raises(UnsafeURLError):
                await read_video(client, "http://cdn.video.test/v.mp4", STRICT)
            assert backend.addresses == ["8.8.4.4"]
        else:
            await read_video(client, "http://cdn.video.test/v.mp4", STRICT)
            assert backend.addresses == ["8.8.4.4", address]
            assert backend.connections[1].sni == "edge.video.test"


# --- what is connected to -----------------------------------------------------------------


async def test_dns_rebinding_gains_nothing() -> None:
    """A name that answers public first and loopback next: each connection resolves once and
    connects to exactly what it checked; the loopback answer is refused, never connected."""
    resolver = FakeResolver({"rebind.test": [["8.8.8.8"], ["127.0.0.1"]]})
    backend = RecordingBackend()
    async with recording_client(resolver, backend) as client:
        assert await read_video(client, "http://rebind.test/v.mp4", STRICT) == b"video"
        assert resolver.calls == ["rebind.test"]
        assert backend.addresses == ["8.8.8.8"]
        with pytest.raises(UnsafeURLError, match=r"127\.0\.0\.1 is loopback"):
            await read_video(client, "http://rebind.test/v.mp4", STRICT)
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert backend.addresses == ["8.8.8.8"]


async def test_one_bad_address_among_many_refuses_the_name() -> None:
    """Every resolved address is checked, not only the first."""
    resolver = FakeResolver({"mixed.test": [["8.8.8.8", "169.254.169.254"]]})
    backend = RecordingBackend()
    async with recording_client(resolver, backend) as client:
        with pytest.raises(UnsafeURLError, match=r"169\.254\.169\.254"):
            await read_video(client, "http://mixed.test/v.mp4", STRICT)
    assert backend.connections == []


async def test_tls_keeps_the_host_name_while_connecting_to_the_checked_address() -> None:
    """SNI and Host name the URL's host; only the socket's destination is pinned."""
    resolver = FakeResolver({"cdn.video.test": [["2606:4700:4700::1111"]]})
    backend = RecordingBackend()
    async with recording_client(resolver, backend) as client:
        await read_video(client, "https://cdn.video.test:8443/v.mp4", STRICT)
    (connection,) = backend.connections
    assert (connection.address, connection.port) == ("2606:4700:4700::1111", 8443)
    assert connection.sni == "cdn.video.test"
    assert connection.host_header == "cdn.video.test:8443"


async def test_unresolvable_name_is_transient() -> None:
    """A name that does not resolve is worth another try later, not a refusal."""
    backend = RecordingBackend()
    async with recording_client(FakeResolver({}), backend) as client:
        with pytest.raises(TransientError):
            await read_video(client, "http://gone.test/v.mp4", STRICT)
    assert backend.connections == []


async def test_policy_comes_with_each_request() -> None:
    """One transport serves strict and lenient downloads with separate connection pools."""
    resolver = FakeResolver({"lab.test": [["10.0.0.7"]]})
    backend = RecordingBackend()
    async with recording_client(resolver, backend) as client:
        assert await read_video(client, "http://lab.test/v.mp4", LENIENT) == b"video"
        with pytest.raises(UnsafeURLError):
            await read_video(client, "http://lab.test/v.mp4", STRICT)
        with pytest.raises(UnsafeURLError):  # no policy named: the transport's own (strict)
            await client.get("http://lab.test/v.mp4")
    assert backend.addresses == ["10.0.0.7"]


async def test_connect_falls_back_to_the_next_checked_address() -> None:
    """When the first checked address does not answer, the next checked one is tried."""

    class FirstFails(RecordingBackend):
        async def connect_tcp(  # type: ignore[override]
            self, host: str, port: int, *args: Any, **kwargs: Any
        ) -> httpcore.AsyncNetworkStream:
            if host == "8.8.8.8":
                self.connections.append(Connection(host, port))
                raise httpcore.ConnectError("no route")
            return await super().connect_tcp(host, port)

    resolver = FakeResolver({"two.test": [["8.8.8.8", "8.8.4.4"]]})
    backend = FirstFails()
    async with recording_client(resolver, backend) as client:
        assert await read_video(client, "http://two.test/v.mp4", STRICT) == b"video"
    assert backend.addresses == ["8.8.8.8", "8.8.4.4"]


async def test_unix_sockets_are_refused() -> None:
    backend = PinnedBackend(STRICT, resolver=FakeResolver({}), inner=RecordingBackend())
    with pytest.raises(UnsafeURLError):
        await backend.connect_unix_socket("/var/run/docker.sock")


# --- URL shapes ---------------------------------------------------------------------------

MALFORMED = [
    "http://cdn.video.test:99999/v.mp4",  # port above 65535
    "http://cdn.video.test:0/v.mp4",
    "http://[::1/x",
    "http://[::1]x/v.mp4",
    "http://" + "a" * 64 + ".test/v.mp4",  # a DNS label over 63 characters
    "http://" + "a." * 127 + "test/v.mp4",  # a host over 253 characters
    "http://a b.test/v.mp4",  # a space in the host
    "http://cdn.video.test/v.mp4 ",
    "http://cdn.video.test/\nv.mp4",
    "http://a..test/v.mp4",
    "http://%61.test/v.mp4",
    "http://xn--zz.test/v.mp4",
    "http://\ud800.test/v.mp4",
    "http://ｅｘａｍｐｌｅ.com/v.mp4",
    "http:///v.mp4",
    "http://:80/v.mp4",
    "http://user:pw@cdn.video.test/v.mp4",
    "ftp://cdn.video.test/v.mp4",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "//cdn.video.test/v.mp4",
    "v.mp4",
    "",
    "http://cdn.video.test/" + "a" * 20_000,
]


@pytest.mark.parametrize("url", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_urls_are_unsafe_url_errors(url: str) -> None:
    """Whatever is wrong with a URL, the answer is UnsafeURLError (never ValueError & co.)."""
    with pytest.raises(UnsafeURLError):
        parse_url(url)
    with pytest.raises(UnsafeURLError):
        await check_url(url, LENIENT)


@pytest.mark.parametrize("value", [None, 42, ["http://x.test/"], {"url": "x"}, b"http://x/"])
def test_non_string_urls_are_refused(value: object) -> None:
    with pytest.raises(UnsafeURLError, match="not a string"):
        parse_url(value)


BAD_LOCATIONS = [MALFORMED[i] for i in (0, 1, 4, 5, 6, 10, 11, 16, 17, 18)]


@pytest.mark.parametrize("url", BAD_LOCATIONS, ids=range(len(BAD_LOCATIONS)))
async def test_malformed_redirects_are_refused(url: str) -> None:
    """A Location header that is no usable URL ends the download with UnsafeURLError."""
    resolver = FakeResolver({"cdn.video.test": [["8.8.4.4"]]})
    location = url
    backend = RecordingBackend({"8.8.4.4": http_response(302, headers=[("Location", location)])})
    async with recording_client(resolver, backend) as client:
        with pytest.raises(UnsafeURLError):
            await read_video(client, "http://cdn.video.test/v.mp4", STRICT)


def test_well_formed_urls_pass() -> None:
    for url in (
        "https://cdn.video.test/a/b.mp4?X-Amz-Signature=abc&x=%20",
        "http://cdn.video.test./v.mp4",
        "https://d111111abcdef8.cloudfront.net/v.mp4",
        "http://under_score.video.test/v.mp4",
        "https://exämple.test/v.mp4",
    ):
        assert parse_url(url).scheme in ("http", "https")


def test_for_base_url() -> None:
    """Private addresses are allowed only when the base URL is on one (no DNS for literals)."""
    assert URLPolicy.for_base_url("http://127.0.0.1:8808/api/v1").allow_private
    assert URLPolicy.for_base_url("http://[::1]:8808/api").allow_private
    assert URLPolicy.for_base_url("http://[::ffff:10.0.0.1]/").allow_private
    assert not URLPolicy.for_base_url("https://93.184.216.34/api").allow_private
    assert not URLPolicy.for_base_url("http://[::1/broken").allow_private


def test_lenient_policy_still_refuses_metadata() -> None:
    """The mock's lenience never reaches metadata or link-local, in any spelling."""
    for text in ("169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "fe80::1"):
        assert LENIENT.refusal(ipaddress.ip_address(text)) is not None

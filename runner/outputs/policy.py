"""Where the runner may connect for URLs a provider hands it: videos, redirects, uploads.

This module judges URLs and addresses; :mod:`runner.outputs.pinned` holds the transport that
applies the judgement to the address actually connected to:

1. :func:`parse_url` refuses what is not a well-formed ``http(s)`` URL (a port past 65535, a
   broken IPv6 literal, a DNS label over 63 characters, whitespace, credentials, ...) with an
   :class:`~runner.errors.UnsafeURLError` — never ``ValueError``/``UnicodeError``/...
2. :class:`~runner.outputs.pinned.PinnedBackend` (an httpcore network backend, used through
   :class:`~runner.outputs.pinned.PinnedTransport`) resolves the host **once** per connection,
   checks **every** address it resolved to, and connects to one of those checked addresses
   (see :mod:`runner.outputs.pinned`).
3. :meth:`URLPolicy.refusal` decides one address. Always refused: link-local (cloud
   metadata), known metadata addresses, multicast, unspecified, broadcast, documentation,
   benchmarking, IETF protocol assignments (``192.0.0.0/24``), discard-only, deprecated and
   reserved ranges, the local-use NAT64 prefix ``64:ff9b:1::/48``, and everything outside
   ``2000::/3`` not listed below. Private and loopback (``10/8``, ``172.16/12``,
   ``192.168/16``, ``127/8``, ``::1``, ``fc00::/7``, CGNAT ``100.64/10``) are refused unless
   the provider's own base URL is on such an address (the mock server). Addresses that embed
   an IPv4 address — IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4
   ``2002::/16``, Teredo ``2001::/32`` — are judged by the IPv4 address inside. Python's
   ``ipaddress`` flags are consulted too, so a range a newer Python knows is refused as well.

Hosts written as legacy IPv4 numbers (``2130706433``, ``0x7f.1``, ``127.1``) are read the way
browsers and ``inet_aton`` read them, so they are judged as the address they name, with no
DNS lookup.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from runner.errors import UnsafeURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 16 * 1024  # presigned URLs run to a few KiB; nothing legitimate is longer
MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 63

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_N = ipaddress.ip_network

# Always refused, whatever the base URL. (IANA special-purpose registries, plus what they miss.)
_FORBIDDEN_V4: tuple[tuple[Network, str], ...] = (
    (_N("0.0.0.0/8"), "'this network' (unspecified)"),
    (_N("169.254.0.0/16"), "link-local (cloud metadata lives there)"),
    (_N("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"),
    (_N("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_N("192.88.99.0/24"), "deprecated 6to4 relay anycast"),
    (_N("198.18.0.0/15"), "benchmarking"),
    (_N("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_N("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_N("224.0.0.0/4"), "multicast"),
    (_N("240.0.0.0/4"), "reserved (240.0.0.0/4, broadcast)"),
)
# Refused unless the provider's base URL is on one of these itself.
_PRIVATE_V4: tuple[tuple[Network, str], ...] = (
    (_N("10.0.0.0/8"), "private"),
    (_N("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_N("127.0.0.0/8"), "loopback"),
    (_N("172.16.0.0/12"), "private"),
    (_N("192.168.0.0/16"), "private"),
)
_FORBIDDEN_V6: tuple[tuple[Network, str], ...] = (
    (_N("::/128"), "unspecified"),
    (_N("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)"),
    (_N("100::/64"), "discard-only"),
    (_N("2001::/23"), "IETF protocol assignments (2001::/23)"),
    (_N("2001:db8::/32"), "documentation"),
    (_N("3fff::/20"), "documentation"),
    (_N("5f00::/16"), "segment routing (SRv6) SIDs"),
    (_N("fe80::/10"), "link-local"),
    (_N("fec0::/10"), "deprecated site-local"),
    (_N("ff00::/8"), "multicast"),
)
_PRIVATE_V6: tuple[tuple[Network, str], ...] = (
    (_N("::1/128"), "loopback"),
    (_N("fc00::/7"), "unique local (private)"),
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud (inside CGNAT space)
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6 (inside unique-local space)
    )
)


def _match(address: IPAddress, table: Iterable[tuple[Network, str]]) -> str | None:
    for network, why in table:
        if address.version == network.version and address in network:
            return why
    return None


def embedded_ipv4(address: IPAddress) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo), by form."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address in _NAT64:
        return "NAT64", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return "6to4", [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return "Teredo", [server, client]
    return None


@dataclass(frozen=True)
class URLPolicy:
    """Which addresses a provider-supplied URL may reach (see the module docstring).

    ``allow_private``: private and loopback addresses are allowed too (set when the
    provider's own base URL is on one: the mock server, a lab proxy).
    """

    allow_private: bool = False

    @classmethod
    def for_base_url(cls, base_url: str) -> URLPolicy:
        """Allow private addresses only when the provider's own base URL is on one."""
        try:
            host = urlsplit(base_url).hostname or ""
            if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: loopback
                return cls(allow_private=True)
            literal = literal_address(host)
            addresses = [literal] if literal is not None else _resolve_sync(host)
        except (OSError, ValueError, UnicodeError):
            return cls(allow_private=False)
        return cls(allow_private=any(_is_private(a) for a in addresses))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` must not be connected to, or ``None`` when it may be."""
        if address in _METADATA:
            return f"{address} is a cloud metadata address"
        embedded = embedded_ipv4(address)
        if embedded is not None:
            form, inner = embedded
            for v4 in inner:
                why = self.refusal(v4)
                if why is not None:
                    return f"{address} is {form} for {v4}: {why}"
            if form != "Teredo":  # Teredo goes on to 2001::/23 below: tunnels are refused
                return None
        why = _match(address, _FORBIDDEN_V4 if address.version == 4 else _FORBIDDEN_V6)
        if why is not None:
            return f"{address} is {why}"
        private = _match(address, _PRIVATE_V4 if address.version == 4 else _PRIVATE_V6)
        if private is not None:
            return None if self.allow_private else f"{address} is {private}"
        if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
            return f"{address} is reserved (outside 2000::/3)"
        if not address.is_global or address.is_multicast or address.is_reserved:
            return f"{address} is a special-purpose address"
        return None


DownloadPolicy = URLPolicy
"""The name the download code has always used."""


def _is_private(address: IPAddress) -> bool:
    inner = embedded_ipv4(address)
    candidates: list[IPAddress] = list(inner[1]) if inner else [address]
    tables = (_PRIVATE_V4, _PRIVATE_V6)
    return any(_match(a, t) is not None for a in candidates for t in tables)


def _resolve_sync(host: str) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def literal_address(host: str, *, what: str = "URL") -> IPAddress | None:
    """The address a URL host names without DNS: an IP literal, or a legacy IPv4 number.

    A host whose last label is a number (``2130706433``, ``0x7f.1``, ``127.1``) is an IPv4
    address the way browsers and ``inet_aton`` read it; ``UnsafeURLError`` when that number
    is not a valid address (``1.2.3.4.5``, ``999999999999``).
    """
    bare = host.strip("[]")
    if ":" in bare:
        if "%" in bare:
            raise UnsafeURLError(f"refusing {what}: scoped IPv6 address {host!r}")
        try:
            return ipaddress.IPv6Address(bare)
        except ValueError:
            raise UnsafeURLError(f"refusing {what}: malformed IPv6 address {host!r}") from None
    last = bare.rstrip(".").rsplit(".", 1)[-1].lower()
    if not last or not (last.isdigit() or (last.startswith("0x") and _is_hex(last[2:]))):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare.rstrip(".")))
    except (OSError, ValueError):
        raise UnsafeURLError(f"refusing {what}: {host!r} is not a valid IPv4 address") from None


# What parse_url refuses in a URL (``\s`` is ``str.isspace``) and what a DNS label may hold;
# a pattern scans in C what a check per character did in Python (three URLs a job).
_UNSAFE_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
_LABEL = re.compile(r"[0-9A-Za-z_-]+")


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _check_hostname(host: str, what: str) -> None:
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > MAX_HOST_CHARS:
        raise UnsafeURLError(f"refusing {what}: host name of {len(name)} characters")
    for label in name.split("."):
        if not label:
            raise UnsafeURLError(f"refusing {what}: empty label in host {host!r}")
        if len(label) > MAX_LABEL_CHARS:
            raise UnsafeURLError(
                f"refusing {what}: a DNS label of {len(label)} characters (at most "
                f"{MAX_LABEL_CHARS})"
            )
        if not _LABEL.fullmatch(label):
            raise UnsafeURLError(f"refusing {what}: invalid characters in host {host!r}")
        if label.lower().startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise UnsafeURLError(f"refusing {what}: invalid IDNA label {label!r}") from None


def parse_url(url: object, *, what: str = "video URL") -> httpx.URL:
    """``url`` as an ``httpx.URL`` if it is a well-formed http(s) URL with a usable host.

    Everything else is an :class:`~runner.errors.UnsafeURLError` saying what is wrong (the URL
    itself is not quoted: it may carry a token).
    """
    if not isinstance(url, str):
        raise UnsafeURLError(f"refusing {what}: not a string ({type(url).__name__})")
    if len(url) > MAX_URL_CHARS:
        raise UnsafeURLError(f"refusing {what}: {len(url)} characters long")
    if _UNSAFE_CHAR.search(url):
        raise UnsafeURLError(f"refusing {what}: it contains whitespace or control characters")
    try:
        parsed = httpx.URL(url)
        scheme, raw_host, port = parsed.scheme, parsed.raw_host, parsed.port
        host = raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, UnicodeError, TypeError, OverflowError) as err:
        raise UnsafeURLError(f"refusing malformed {what}: {type(err).__name__}") from None
    if scheme not in ("http", "https"):
        raise UnsafeURLError(f"refusing {what} with scheme {scheme or '(none)'!r}")
    if not host:
        raise UnsafeURLError(f"refusing {what} without a host")
    if port is not None and not 0 < port <= 65535:
        raise UnsafeURLError(f"refusing {what}: port {port} is out of range")
    if parsed.userinfo:
        raise UnsafeURLError(f"refusing {what} with credentials in it")
    if literal_address(host, what=what) is None:
        _check_hostname(host, what)
    return parsed


def join_redirect(url: str, location: str | None) -> str:
    """Where a redirect from ``url`` leads; ``UnsafeURLError`` when it leads nowhere sane."""
    if not location:
        raise UnsafeURLError("refusing a redirect without a Location")
    try:
        return urljoin(url, location)
    except (ValueError, UnicodeError, TypeError) as err:
        raise UnsafeURLError(f"refusing malformed redirect: {type(err).__name__}") from None


async def check_url(url: str, policy: URLPolicy, *, what: str = "video URL") -> httpx.URL:
    """Refuse a URL whose shape, scheme or literal address the policy does not allow.

    A host *name* is decided when connecting, by
    :class:`~runner.outputs.pinned.PinnedBackend` (resolve once, check every address, connect
    to a checked one); here only literal addresses are judged, so this never waits on DNS.
    """
    parsed = parse_url(url, what=what)
    literal = literal_address(parsed.raw_host.decode("ascii"), what=what)
    if literal is not None:
        why = policy.refusal(literal)
        if why is not None:
            raise UnsafeURLError(f"refusing {what}: {why}")
    return parsed

"""Ledger URLs fit for messages: never with a password."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

MASK = "***"


class _Parts(NamedTuple):
    scheme: str
    userinfo: str | None  # before the last "@" of the authority; None without one
    hosts: str
    path: str
    query: list[str] | None  # the "&"-separated pairs; None without a "?"
    fragment: str  # "#..." or ""


def masked_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@`` or ``?password=``) replaced by ``***``;
    everything else exactly as written (``postgresql:///db`` stays as it is)."""
    parts = _split(url)
    if parts is None:
        return url
    authority = parts.hosts
    if parts.userinfo is not None:
        user, colon, _ = parts.userinfo.partition(":")
        authority = f"{user}{colon and ':' + MASK}@{parts.hosts}"
    query = ""
    if parts.query is not None:
        pairs = [f"{p.split('=', 1)[0]}={MASK}" if _is_password(p) else p for p in parts.query]
        query = "?" + "&".join(pairs)
    return f"{parts.scheme}://{authority}{parts.path}{query}{parts.fragment}"


def passwords_in(url: str) -> list[str]:
    """Every password ``url`` holds, as written and decoded (to scrub them from messages),
    longest first."""
    parts = _split(url)
    if parts is None:
        return []
    found = []
    if parts.userinfo is not None and ":" in parts.userinfo:
        found.append(parts.userinfo.split(":", 1)[1])
    found += [p.split("=", 1)[1] for p in parts.query or [] if _is_password(p) and "=" in p]
    found += [unquote(p) for p in found]
    return sorted({p for p in found if p}, key=len, reverse=True)


def scrub(text: str, passwords: list[str]) -> str:
    """``text`` (say, a driver's error message) with these passwords (see :func:`passwords_in`)
    replaced."""
    for password in passwords:
        text = text.replace(password, MASK)
    return text


def _split(url: str) -> _Parts | None:
    # By hand rather than urllib: urlunsplit drops an empty authority (postgresql:///db
    # would come back as postgresql:/db) and urlsplit refuses some hosts libpq takes.
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    return _Parts(
        scheme=scheme,
        userinfo=userinfo if at else None,
        hosts=hosts,
        path=path,
        query=query.split("&") if question else None,
        fragment=hash_ + fragment,
    )


def _is_password(pair: str) -> bool:
    return unquote(pair.split("=", 1)[0]).strip().lower() == "password"

"""Credentials that never show themselves, and what redacts them from a text.

Apart from :mod:`runner.providers.base` (and httpx), so that a command that only reads the
ledger can mask a row's secrets without importing an HTTP client.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, quote_plus

MIN_REDACTED_PART = 4  # redacting shorter fragments would garble messages for no safety gain


def _spellings(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Each part as written and as a URL would carry it (percent-encoded), longest first."""
    forms = {
        form
        for part in parts
        if len(part) >= MIN_REDACTED_PART
        for form in (part, quote(part, safe=""), quote(part), quote_plus(part))
    }
    return tuple(sorted(forms, key=len, reverse=True))


class Secret:
    """A credential that never shows itself in ``repr``/``str``; ``reveal()`` is explicit.

    ``parts`` are secret pieces of the value (the key without its scheme word, the secret
    half); ``ids`` are pieces that are redacted too but may legitimately appear in a URL (the
    public key id).
    """

    __slots__ = ("_parts", "_secret_parts", "_value")

    def __init__(
        self, value: str, *, parts: tuple[str, ...] = (), ids: tuple[str, ...] = ()
    ) -> None:
        self._value = value
        self._parts = _spellings((value, *parts, *ids))
        self._secret_parts = _spellings((value, *parts))

    def reveal(self) -> str:
        """The raw value, for the one place that builds the Authorization header."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with the secret (its halves, and their percent-encoded spellings)
        replaced by ``***``."""
        for part in self._parts:
            text = text.replace(part, "***")
        return text

    def leaks(self, text: str) -> bool:
        """Whether ``text`` carries the secret (a key id alone does not count)."""
        return any(part in text for part in self._secret_parts)

    def fingerprint(self) -> str:
        """An opaque name for the account this credential opens (a salted hash, so equal
        credentials match without the ledger ever holding one)."""
        return hashlib.sha256(b"runner-account:" + self._value.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

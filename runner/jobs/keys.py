"""The job record and its identity: :class:`Job`, its key, and the seeds of its variants.

Keys: the first 16 hex digits of sha256 over the canonical JSON (sorted keys, compact) of
``[campaign, row, request, variant]``, and ``soul`` appended when the campaign uses one, since
the soul is sent beside the body and changes the video.

Variant seeds (``variants: N``): variant ``v`` of a row gets the seed
``int(sha256(canonical_json(["seed", campaign, row, request, v]))[:8], 16) & 0x7FFFFFFF``,
where ``request`` is the row's request before the seed is set. So seeds are stable across
runs and machines, and distinct per row and variant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any


@dataclass(frozen=True, slots=True)
class Job:
    """One generation to make: a campaign's matrix row turned into a request body."""

    key: str  # 16 hex of sha256 over canonical JSON (campaign, row, request, variant)
    campaign: str
    manifest: str  # the manifest's path, as resolved (absolute)
    index: int  # position in manifest order
    vars: dict[str, Any]  # the matrix row
    request: dict[str, Any]  # the body that will be sent (soul model id added at submit)
    path: str  # output filename relative to output.dir, already sanitized
    credits: float  # estimated credits
    priced_by: str = "unpriced"  # "budget.prices[i]" (the rule), "provider" (its estimate)
    variant: int | None = None
    soul: str | None = None  # name of a soul in the manifest's ``souls:``
    tags: tuple[str, ...] = field(default_factory=tuple)


class _Building:
    """A :class:`Job` being built: the same slots, set the plain way, then made a Job
    (``__class__`` can be swapped between classes of the same slots; a change to Job's
    layout makes the swap a TypeError, never a wrong Job). A frozen dataclass's constructor
    sets each field through ``object.__setattr__``: ~2.6 µs a Job, ~0.6 µs this way."""

    __slots__ = tuple(f.name for f in fields(Job))

    def __init__(
        self,
        key: str,
        campaign: str,
        manifest: str,
        index: int,
        vars: dict[str, Any],
        request: dict[str, Any],
        path: str,
        credits: float,
        priced_by: str,
        variant: int | None,
        soul: str | None,
        tags: tuple[str, ...],
    ) -> None:
        self.key = key
        self.campaign = campaign
        self.manifest = manifest
        self.index = index
        self.vars = vars
        self.request = request
        self.path = path
        self.credits = credits
        self.priced_by = priced_by
        self.variant = variant
        self.soul = soul
        self.tags = tags
        self.__class__ = Job  # type: ignore[assignment]


#: ``Job(...)`` of every field, in order, made the cheap way (see :class:`_Building`).
built_job: Callable[
    [
        str,
        str,
        str,
        int,
        dict[str, Any],
        dict[str, Any],
        str,
        float,
        str,
        int | None,
        str | None,
        tuple[str, ...],
    ],
    Job,
] = _Building  # type: ignore[assignment]


def canonical_json(value: Any) -> str:
    """JSON that is the same for equal data, whatever the order of mapping keys:
    ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``."""
    if type(value) is str:
        return encode_basestring(value)
    if _CANONICAL_C is None:  # no C speedups
        return _CANONICAL.encode(value)
    try:
        return "".join(_CANONICAL_C(value, 0))
    except RecursionError:  # circular, or too deep: refused as json.dumps refuses it
        return _CANONICAL.encode(value)


# json.dumps with these arguments, without building an encoder on every call
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The C encoder ``_CANONICAL.encode`` builds on every call, built once: what
# ``JSONEncoder.iterencode`` passes it, but without circular-reference markers (state shared
# by every call): a circular value recurses until RecursionError, then goes the slow way.
_CANONICAL_C: Any = (
    c_make_encoder(
        None,
        _CANONICAL.default,
        encode_basestring,
        None,
        _CANONICAL.key_separator,
        _CANONICAL.item_separator,
        _CANONICAL.sort_keys,
        _CANONICAL.skipkeys,
        _CANONICAL.allow_nan,
    )
    if c_make_encoder is not None
    else None
)


def job_key(
    campaign: str,
    row: Mapping[str, Any],
    request: Mapping[str, Any],
    variant: int | None = None,
    soul: str | None = None,
) -> str:
    """The job's identity in the ledger (see the module docstring)."""
    text = canonical_json([campaign, dict(row), dict(request)])[:-1]
    return key_of_text(text + key_suffix(variant, soul))


def key_parts(campaign: str, row: Mapping[str, Any], request: Mapping[str, Any]) -> tuple[str, str]:
    """The text of the keys of a row's jobs, which differ only by their seed (and variant),
    in two parts: ``head + canonical_json(seed) + tail + key_suffix(variant, soul)`` is what
    :func:`job_key` hashes for ``{**request, "seed": seed}``. So a row's jobs encode their
    campaign, row and request once."""
    before = {k: v for k, v in request.items() if k < "seed"}
    after = {k: v for k, v in request.items() if k > "seed"}
    # as sort_keys orders them: before's names, "seed", after's
    head = canonical_json([campaign, row if type(row) is dict else dict(row), before])[:-2]
    head += "," if before else ""
    return head + '"seed":', ("," + canonical_json(after)[1:] if after else "}")


def key_of_text(text: str) -> str:
    """A key from the whole canonical JSON of ``[campaign, row, request, variant(, soul)]``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def keys_of_texts(texts: Iterable[str]) -> list[str]:
    """:func:`key_of_text` of each text, without a call of it per key (a call per key is a
    tenth of expanding). A comprehension: Python 3.11 calls the methods in it faster than
    ``map`` over ``methodcaller`` and ``itemgetter`` does (~1.2 µs a key, not ~1.6)."""
    sha256 = hashlib.sha256
    return [sha256(text.encode()).hexdigest()[:16] for text in texts]


def key_suffix(variant: int | None, soul: str | None) -> str:
    """What follows the request in a key's canonical JSON (see :func:`job_key`)."""
    return (
        ","
        + canonical_json(variant)
        + ("," + canonical_json(soul) if soul is not None else "")
        + "]"
    )


def variant_seed(
    campaign: str, row: Mapping[str, Any], request: Mapping[str, Any], variant: int
) -> int:
    """The derived seed of a variant: deterministic, 31 bits (see the module docstring)."""
    material = ["seed", campaign, dict(row), dict(request), variant]
    digest = hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF

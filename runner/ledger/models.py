"""The records a ledger returns: jobs, their events, soul models, and plan diffs.

Plain frozen dataclasses, the same whatever implementation stores them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

from runner.jsontext import dumps, one_per_line
from runner.ledger.status import JobStatus


def _loads(text: str | None, default: Any) -> Any:
    return default if text is None else json.loads(text)


_STATUSES = {status.value: status for status in JobStatus}
_new_tuple = tuple.__new__
_Tuple = TypeVar("_Tuple", bound=tuple[Any, ...])


@dataclass(frozen=True)
class JobRow:
    """One row of the ``jobs`` table, JSON columns decoded."""

    key: str
    campaign: str
    manifest: str  # the manifest's path, as the plan recorded it
    job_index: int  # position in manifest order
    status: JobStatus
    request: dict[str, Any]
    vars: dict[str, Any]  # the matrix row
    path: str  # output filename relative to output.dir
    credits: float
    soul: str | None
    tags: tuple[str, ...]
    variant: int | None
    idempotency_key: str  # <key>-<n>; n grows only with deliberate retries
    attempts: int
    generation_id: str | None
    error: str | None
    video_url: str | None
    bytes: int | None
    sha256: str | None
    location: str | None  # where the video is: an absolute path or an s3:// URI
    expires_at: str | None  # when the provider drops the finished result (ISO), if it says
    # a retried job's earlier generation, asked for before a new one is paid for
    prior_generation_id: str | None
    priced_by: str | None  # which source priced ``credits`` (a budget.prices rule, provider)
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRow:
        """Build from a ``jobs`` row as the database returns it."""
        return cls(
            key=row["key"],
            campaign=row["campaign"],
            manifest=row["manifest"],
            job_index=row["job_index"],
            request=_loads(row["request"], {}),
            vars=_loads(row["vars"], {}),
            path=row["path"],
            status=JobStatus(row["status"]),
            idempotency_key=row["idempotency_key"],
            attempts=row["attempts"],
            credits=row["credits"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            generation_id=row["generation_id"],
            error=row["error"],
            video_url=row["video_url"],
            bytes=row["bytes"],
            sha256=row["sha256"],
            location=row["location"],
            expires_at=row["expires_at"],
            prior_generation_id=row["prior_generation_id"],
            priced_by=row["priced_by"],
            soul=row["soul"],
            variant=row["variant"],
            tags=tuple(_loads(row["tags"], [])),
        )

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> JobRow:
        """Build from the values of :data:`JOB_COLUMNS`, in that order: the same row as
        :meth:`from_row`, made the cheap way for reads of many rows. Its JSON columns
        (``request``, ``vars``, ``tags``) are decoded when first read, so a read that only
        looks at statuses or paths never decodes them."""
        row = object.__new__(cls)
        state = dict(zip(_STORED, values, strict=True))
        state["status"] = _STATUSES.get(state["status"]) or JobStatus(state["status"])
        object.__setattr__(row, "__dict__", state)
        return row

    def stored_json(self, name: str) -> str | None:
        """The text of JSON column ``name`` as read, while it is not decoded yet (a row of
        :meth:`from_values`); ``None`` otherwise (then compare :attr:`request` etc.)."""
        text = self.__dict__.get(_RAW + name)
        return text if isinstance(text, str) else None

    def plan_texts(self) -> tuple[str | None, str | None, str | None]:
        """:meth:`stored_json` of ``tags``, ``request`` and ``vars`` (as ``PlannedRow``'s)."""
        return (self.stored_json("tags"), self.stored_json("request"), self.stored_json("vars"))

    def to_dict(self) -> dict[str, Any]:
        """The ledger columns as plain JSON-able values (``status`` as its word)."""
        doc = {name: getattr(self, name) for name in JOB_COLUMNS}
        doc["status"] = self.status.value
        doc["tags"] = list(self.tags)
        doc["request"] = dict(self.request)  # the row's own stay as they are
        doc["vars"] = dict(self.vars)
        return doc

    def json_text(self, name: str) -> str:
        """JSON column ``name`` (``request``, ``vars`` or ``tags``) as
        ``json.dumps(value, ensure_ascii=False)`` writes it: the text the ledger holds while
        the column is not decoded (every writer stores that encoder's text, and its text of
        the decoded value is the same), so no decoding is needed."""
        text = self.__dict__.get(_RAW + name)
        if isinstance(text, str):
            return text
        value = getattr(self, name)
        return dumps(list(value) if name == "tags" else value)

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), ensure_ascii=False)``, byte for byte, made without
        decoding the JSON columns (:meth:`json_text`) and with one call of the C encoder for
        the other columns: for exports of many rows."""
        state = self.__dict__
        values = list(map(state.get, JOB_COLUMNS))
        values[_STATUS_AT] = self.status.value
        for at, _ in _JSON_AT:
            values[at] = None  # (a decoded value, if any) spliced in below as its text
        parts = one_per_line(values)
        for at, name in _JSON_AT:
            parts[at] = self.json_text(name)
        return _OBJECT_TEXT % tuple(parts)


@dataclass(frozen=True)
class Transition:
    """One status change of :meth:`Ledger.transition_many`: as ``transition(key, to,
    detail=detail, **columns)``."""

    key: str
    to: JobStatus | str
    detail: str | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)


#: The ``jobs`` columns, in :class:`JobRow`'s order (what :meth:`JobRow.from_values` takes).
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobRow))

_RAW = "_raw_"


class _LazyJSON:
    """A JSON column of a row made by ``from_values``, decoded on first read (then kept in
    the instance, which takes precedence over this non-data descriptor from then on)."""

    def __init__(self, name: str, empty: Callable[[], Any], convert: Callable[[Any], Any]):
        self.name = name
        self.empty = empty
        self.convert = convert

    def __get__(self, row: JobRow | None, owner: type[JobRow]) -> Any:
        if row is None:
            raise AttributeError(self.name)
        state = row.__dict__
        if self.name in state:  # another thread decoded it between its lookup and ours
            return state[self.name]
        text = state.get(_RAW + self.name)
        value = self.empty() if text is None else self.convert(json.loads(text))
        if state.setdefault(self.name, value) is value:  # the first to decode drops the text
            state.pop(_RAW + self.name, None)
        return state[self.name]


_LAZY_JSON = ("request", "vars", "tags")
_STORED = tuple(_RAW + name if name in _LAZY_JSON else name for name in JOB_COLUMNS)
setattr(JobRow, "request", _LazyJSON("request", dict, lambda v: v))  # noqa: B010
setattr(JobRow, "vars", _LazyJSON("vars", dict, lambda v: v))  # noqa: B010
setattr(JobRow, "tags", _LazyJSON("tags", tuple, tuple))  # noqa: B010

# JobRow.to_json: the columns' places, and the object with a %s for each value's text.
_STATUS_AT = JOB_COLUMNS.index("status")
_JSON_AT = tuple((JOB_COLUMNS.index(name), name) for name in _LAZY_JSON)
_OBJECT_TEXT = "{" + ", ".join(encode_basestring(name) + ": %s" for name in JOB_COLUMNS) + "}"


def _with_status(cls: type[_Tuple], values: Sequence[Any], at: int) -> _Tuple:
    """``cls(*values)`` with value ``at`` (``status``) made a :class:`JobStatus`, without the
    NamedTuple's Python frame."""
    values = list(values)
    values[at] = _STATUSES.get(values[at]) or JobStatus(values[at])
    return _new_tuple(cls, values)


class JobBrief(NamedTuple):
    """The columns of a job that counts, budgets and file checks read (``Ledger.briefs``):
    far cheaper to read than a ``JobRow`` when there are 100,000 of them."""

    key: str
    manifest: str
    campaign: str
    status: JobStatus
    path: str
    location: str | None
    bytes: int | None
    credits: float
    generation_id: str | None
    error: str | None

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> JobBrief:
        """Build from the values of :data:`BRIEF_COLUMNS`, in that order."""
        return _with_status(cls, values, 3)


#: The ``jobs`` columns of a :class:`JobBrief`, in its order.
BRIEF_COLUMNS: tuple[str, ...] = JobBrief._fields


class PlannedRow(NamedTuple):
    """The columns of a known job that recording a plan may refresh (``plan.refreshed_columns``),
    ``tags`` as the JSON text the ledger holds: what ``record_plan`` reads of 100,000 jobs
    instead of whole rows. The rest of a job (campaign, vars, request, variant, soul) is what
    its key is the hash of, so a job the ledger holds under that key has them already."""

    key: str
    manifest: str
    status: JobStatus
    job_index: int
    path: str
    credits: float
    priced_by: str | None
    tags: str  # JSON text

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> PlannedRow:
        """Build from the values of :data:`PLANNED_COLUMNS`, in that order."""
        return _with_status(cls, values, 2)


#: The ``jobs`` columns of a :class:`PlannedRow`, in its order.
PLANNED_COLUMNS: tuple[str, ...] = PlannedRow._fields

#: What recording a plan reads when it also gives the manifest's briefs
#: (``Ledger.record_plan_checked``): :data:`PLANNED_COLUMNS`, then the rest of
#: :data:`BRIEF_COLUMNS` — one read of 100,000 jobs instead of two. Of its values,
#: ``planned_values`` gives a ``PlannedRow``'s and ``brief_values`` a ``JobBrief``'s.
RECORDED_COLUMNS: tuple[str, ...] = PLANNED_COLUMNS + tuple(
    c for c in BRIEF_COLUMNS if c not in PLANNED_COLUMNS
)
planned_values = itemgetter(slice(0, len(PLANNED_COLUMNS)))
brief_values = itemgetter(*(RECORDED_COLUMNS.index(c) for c in BRIEF_COLUMNS))


class ReportRow(NamedTuple):
    """The columns of a job that the HTML report shows or counts (``Ledger.report_rows``),
    its JSON columns as the text the ledger holds: what ``runner report`` reads of 100,000
    jobs instead of whole rows. In the order it uses them: what twins (the seeds and variants
    of one matrix row) share is together, from ``manifest`` to ``vars``."""

    key: str
    status: JobStatus
    manifest: str
    campaign: str
    tags: str | None  # JSON text
    soul: str | None
    vars: str | None  # JSON text
    request: str | None  # JSON text
    variant: int | None
    credits: float
    attempts: int
    generation_id: str | None
    error: str | None
    bytes: int | None
    sha256: str | None
    location: str | None
    path: str
    created_at: str
    updated_at: str

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> ReportRow:
        """Build from the values of :data:`REPORT_COLUMNS`, in that order."""
        status = values[1]
        converted = (values[0], _STATUSES.get(status) or JobStatus(status))
        return _new_tuple(cls, converted + tuple(values[2:]))


#: The ``jobs`` columns of a :class:`ReportRow`, in its order.
REPORT_COLUMNS: tuple[str, ...] = ReportRow._fields


class JobState(NamedTuple):
    """What a diff reads of a job (``plan.Recorded``), and what says whether its credits were
    charged (``engine.budget.charged``): ``plan --json`` reads these columns of 100,000 jobs
    instead of their briefs, once for both."""

    key: str
    manifest: str
    status: JobStatus
    credits: float
    generation_id: str | None
    error: str | None

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> JobState:
        """Build from the values of :data:`STATE_COLUMNS`, in that order."""
        return _with_status(cls, values, 2)


#: The ``jobs`` columns of a :class:`JobState`, in its order.
STATE_COLUMNS: tuple[str, ...] = JobState._fields


@dataclass(frozen=True)
class EventRow:
    """One status change of a job, from the append-only ``events`` table."""

    id: int
    job_key: str
    at: str
    from_status: JobStatus | None  # None when the job was first recorded
    to_status: JobStatus
    detail: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventRow:
        """Build from an ``events`` row as the database returns it."""
        return cls(
            id=row["id"],
            job_key=row["job_key"],
            at=row["at"],
            from_status=JobStatus(row["from_status"]) if row["from_status"] else None,
            to_status=JobStatus(row["to_status"]),
            detail=row["detail"],
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        doc = asdict(self)
        doc["from_status"] = self.from_status.value if self.from_status else None
        doc["to_status"] = self.to_status.value
        return doc


@dataclass(frozen=True)
class GenerationTime:
    """How long one finished generation took, as the ledger saw it: ``seconds`` from the event
    that recorded its generation id to the one that recorded it completed, and that event's
    ``detail`` (which may say more precisely; see ``runner.engine.learning``)."""

    seconds: float
    detail: str | None


@dataclass(frozen=True)
class SoulRow:
    """A soul model trained (or being trained) for a manifest's ``souls:`` entry."""

    name: str  # the key under ``souls:`` in the manifest
    manifest: str
    status: str  # the provider's normalized soul status (e.g. pending, training, ready, failed)
    created_at: str
    updated_at: str
    model_id: str | None = None
    error: str | None = None
    images_hash: str | None = None  # identity of what trained it: provider, name, images
    idempotency_key: str | None = None  # of its training request, committed before the POST

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SoulRow:
        """Build from a ``souls`` row as the database returns it."""
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PlanDiff:
    """How a manifest's jobs compare with the ledger (what ``record_plan`` does or would do).

    ``statuses`` maps each produced job the ledger knows to its status after the plan (an
    orphaned job the manifest produces again shows the status it is restored to); a key
    missing from it is new to the ledger.
    """

    statuses: dict[str, str]
    total: int  # jobs the manifest produces
    new: int  # nothing sent yet: unknown to the ledger, or pending in it
    done: int  # downloaded
    # submitting, queued, running, or completed but not downloaded; ``finishing`` jobs included
    in_flight: int
    failed: int
    orphaned: int  # ledger jobs of this manifest that it no longer produces (not finishing)
    new_credits: float  # estimated credits of the ``new`` jobs
    added: tuple[str, ...] = ()  # keys the ledger had not seen
    orphaned_keys: tuple[str, ...] = ()  # keys that are (or become) orphaned
    restored_keys: tuple[str, ...] = ()  # orphaned keys the manifest produces again
    # jobs the manifest no longer produces that were already sent (SPEC v2 §4): they stay in
    # flight until a run cancels them while queued or downloads them, then become orphaned
    finishing_keys: tuple[str, ...] = ()
    # ``record_plan`` only: True when recording it wrote nothing (no new job, refreshed
    # column or status change), so what was read of the jobs before it still holds
    unchanged: bool = False
    # ``diff(charged=...)`` only: the estimated credits of the jobs recorded for this manifest
    # that ``charged`` says were charged, counted from the diff's own read of them
    charged_credits: float = 0.0

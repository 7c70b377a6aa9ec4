"""The mock's memory: generations, souls, idempotency keys, video URLs, the log and counters.

Every state is derived lazily from the clock (no background tasks): a generation is queued,
then running (when :mod:`runner.mock.scheduling` starts it), then finished once its drawn
latency has elapsed. Video URLs, video bytes and upload slots are :mod:`runner.mock.media`
(a base class of :class:`MockState`). Methods take a lock because a test thread reads what
the server thread writes. Times are seconds on the app's clock; :meth:`MockState.iso` turns
one into the ISO wall-clock time the platform writes (``expires_at``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random
from typing import Any, Literal

from runner.mock.media import VideoUploads
from runner.mock.options import GLITCH_KINDS, GlitchKind, MockOptions
from runner.mock.records import (
    Generation,
    GenerationState,
    Outcome,
    Soul,
    SoulResult,
    SubmitResult,
    Upload,
)
from runner.mock.scheduling import AccountQueue

Clock = Callable[[], float]

COUNTERS = (
    "requests",
    "generations_created",
    "idempotent_replays",
    "idempotency_conflicts",
    "duplicate_bodies",
    "concurrency_rejections",
    "throttled",
    "server_errors",
    "auth_failures",
    "dropped_connections",
    "video_downloads",
    "range_downloads",
    "truncated_videos",
    "expired_video_urls",
    "expired_results",
    "queue_full_rejections",
    "canceled",
    "estimates",
    "souls_created",
    "soul_replays",
    "duplicate_souls",
    "dropped_soul_answers",
    "reference_listings",
    "uploads",
    "upload_refusals",
    "glitches",
    *(f"glitch_{kind}" for kind in GLITCH_KINDS),
)
"""Every counter of :meth:`MockState.stats` (``canceled``: generations cancelled while
queued, which the platform refunds; ``glitch_<kind>``: status glitches injected per kind)."""


@dataclass
class MockState(VideoUploads):
    """All of the mock's state, shared by the routes and exposed as ``app.state.mock``."""

    options: MockOptions
    clock: Clock = time.monotonic
    rng: Random = field(init=False)
    generations: dict[str, Generation] = field(default_factory=dict)
    souls: dict[str, Soul] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)
    max_in_flight: int = 0
    creations: list[tuple[float, str, int]] = field(default_factory=list)
    """Each generation created: (app-clock time, account, its account's generations in flight
    with it), so a test can hold the in-flight count to the limit that applied at the time."""
    wall_offset: float = field(init=False)
    """Wall-clock epoch seconds minus app-clock seconds, fixed when the state is made."""
    _queues: dict[str, AccountQueue] = field(default_factory=dict)
    _keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _soul_keys: dict[tuple[str, str], str] = field(default_factory=dict)
    _bodies: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)
    _video_tokens: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    _current_token: dict[str, str] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        seed = self.options.seed if self.options.seed is not None else secrets.randbits(64)
        self.rng = Random(seed)
        self.wall_offset = time.time() - self.clock()

    def now(self) -> float:
        """The app clock."""
        return self.clock()

    def iso(self, instant: float) -> str:
        """An app-clock instant as an ISO 8601 UTC time (``2025-01-31T12:00:00Z``)."""
        when = datetime.fromtimestamp(self.wall_offset + instant, UTC)
        return when.isoformat(timespec="seconds").replace("+00:00", "Z")

    def queues_submits(self, dialect: str) -> bool:
        """Whether submits above the concurrency limit wait in the account queue (the
        platform with ``queue_limit``) rather than being refused."""
        return dialect == "platform" and self.options.queue_limit is not None

    def _queue(self, account: str, dialect: str) -> AccountQueue:
        queue = self._queues.get(account)
        if queue is None:
            slots = self.options.concurrency_limit if self.queues_submits(dialect) else None
            queue = self._queues[account] = AccountQueue(slots)
        return queue

    def _advance(self, now: float) -> None:
        for queue in self._queues.values():
            queue.advance(now)

    def state_of(self, generation: Generation) -> GenerationState:
        """The generation's state now (its account's queue advanced to now first)."""
        with self._lock:
            now = self.now()
            self._queue(generation.account, generation.dialect).advance(now)
            return generation.state(now)

    def _active(self, account: str, dialect: str, now: float) -> int:
        queue = self._queue(account, dialect)
        queue.advance(now)
        if queue.slots is not None:
            return len(queue.waiting) + queue.running(now)
        return sum(1 for g in self.generations.values() if g.account == account and g.active(now))

    def roll(self, rate: float) -> bool:
        """True with probability ``rate``; draws nothing when the rate is zero."""
        if rate <= 0.0:
            return False
        with self._lock:
            return self.rng.random() < rate

    def choice(self, options: tuple[Any, ...]) -> Any:
        """One of ``options``, from the seeded generator."""
        with self._lock:
            return self.rng.choice(options)

    def new_id(self) -> str:
        """A UUID4-shaped id from the seeded generator."""
        with self._lock:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def count(self, name: str, n: int = 1) -> None:
        """Bump a counter."""
        with self._lock:
            self.counters[name] += n

    def submit(
        self,
        *,
        account: str,
        dialect: str,
        route: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> SubmitResult:
        """Replay, refuse, or create a generation — atomically, so races cannot double-create."""
        body_hash = _hash([route, body])
        with self._lock:
            now = self.now()
            if idempotency_key is not None:
                seen = self._keys.get((account, idempotency_key))
                if seen is not None:
                    seen_hash, generation_id = seen
                    if seen_hash != body_hash:
                        self.counters["idempotency_conflicts"] += 1
                        return SubmitResult("conflict")
                    self.counters["idempotent_replays"] += 1
                    return SubmitResult("replay", self.generations[generation_id])
            active = self._active(account, dialect, now)
            limit = self.options.concurrency_limit
            if limit is not None and self.queues_submits(dialect):
                if active >= limit + (self.options.queue_limit or 0):
                    self.counters["queue_full_rejections"] += 1
                    return SubmitResult("queue_full", active=active)
            elif limit is not None and active >= limit:
                self.counters["concurrency_rejections"] += 1
                return SubmitResult("busy", active=active)
            generation = self._create(account, dialect, route, body, body_hash, idempotency_key)
            self._queue(account, dialect).add(generation)
            self._queue(account, dialect).advance(now)
            self.max_in_flight = max(self.max_in_flight, active + 1)
            self.creations.append((now, account, active + 1))
            return SubmitResult("created", generation, active + 1)

    def cancel(self, generation: Generation) -> Literal["canceled", "already", "started"]:
        """Cancel a generation still queued (refunded); ``already`` if it was cancelled before,
        ``started`` once it runs or finished."""
        with self._lock:
            now = self.now()
            word = self.state_of(generation)
            if word == "canceled":
                return "already"
            if word != "queued":
                return "started"
            queue = self._queue(generation.account, generation.dialect)
            if generation in queue.waiting:
                queue.cancel(generation)
            generation.canceled_at = now
            self.counters["canceled"] += 1
            return "canceled"

    def _create(
        self,
        account: str,
        dialect: str,
        route: str,
        body: dict[str, Any],
        body_hash: str,
        idempotency_key: str | None,
    ) -> Generation:
        opts = self.options
        draw = self.rng.random()
        outcome: Outcome = "completed"
        if draw < opts.fail_rate:
            outcome = "failed"
        elif draw < opts.fail_rate + opts.nsfw_rate:
            outcome = "nsfw"
        generation = Generation(
            id=self.new_id(),
            account=account,
            dialect=dialect,
            route=route,
            body=body,
            body_hash=body_hash,
            idempotency_key=idempotency_key,
            created_at=self.now(),
            latency=self.rng.uniform(opts.latency_min, opts.latency_max),
            outcome=outcome,
            result_ttl=opts.result_ttl if dialect == "platform" else None,
        )
        self.generations[generation.id] = generation
        self.counters["generations_created"] += 1
        earlier_keys = self._bodies.setdefault((account, body_hash), set())
        if earlier_keys and (idempotency_key is None or idempotency_key not in earlier_keys):
            self.counters["duplicate_bodies"] += 1
        earlier_keys.add(idempotency_key)
        if idempotency_key is not None:
            self._keys[(account, idempotency_key)] = (body_hash, generation.id)
        return generation

    def generation(self, generation_id: str, account: str | None = None) -> Generation | None:
        """A generation by id (only if it belongs to ``account``, when one is given)."""
        generation = self.generations.get(generation_id)
        if generation is None or (account is not None and generation.account != account):
            return None
        return generation

    def create_soul(
        self,
        *,
        account: str,
        name: str,
        images: list[str],
        body: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> SoulResult:
        """Replay, refuse, or start a soul training, honouring ``Idempotency-Key`` as
        generations do (keys of souls and of generations are apart)."""
        body_hash = _hash(body)
        with self._lock:
            if idempotency_key is not None:
                seen = self._soul_keys.get((account, idempotency_key))
                if seen is not None:
                    if self.souls[seen].body_hash != body_hash:
                        self.counters["idempotency_conflicts"] += 1
                        return SoulResult("conflict")
                    self.counters["soul_replays"] += 1
                    return SoulResult("replay", self.souls[seen])
            if any(
                s.account == account and s.name == name and s.images == images
                for s in self.souls.values()
            ):
                self.counters["duplicate_souls"] += 1
            soul = Soul(
                id=self.new_id(),
                account=account,
                name=name,
                images=images,
                created_at=self.now(),
                training_seconds=self.options.soul_training_seconds,
                fails=self.roll(self.options.soul_fail_rate),
                idempotency_key=idempotency_key,
                body_hash=body_hash,
            )
            self.souls[soul.id] = soul
            if idempotency_key is not None:
                self._soul_keys[(account, idempotency_key)] = soul.id
            self.counters["souls_created"] += 1
            return SoulResult("created", soul)

    def account_souls(self, account: str) -> list[Soul]:
        """The account's souls, oldest first."""
        with self._lock:
            return [s for s in self.souls.values() if s.account == account]

    def soul(self, soul_id: str, account: str) -> Soul | None:
        """A soul of ``account`` by id."""
        soul = self.souls.get(soul_id)
        return soul if soul is not None and soul.account == account else None

    def glitch_for(self, generation: Generation) -> GlitchKind | None:
        """The status glitch to answer this call with, if one is drawn (``glitch_rate``): a
        kind of ``glitches`` not yet used on this generation that fits its state."""
        if self.options.glitch_rate <= 0.0:
            return None
        with self._lock:
            now = self.now()
            word = self.state_of(generation)
            fresh = word == "completed" and not generation.expired(now)
            eligible = [
                kind
                for kind in self.options.glitches
                if kind not in generation.glitched
                and (kind != "no_url" or fresh)
                and (kind != "regressed" or (fresh and generation.answered_completed))
            ]
            if not eligible or not self.roll(self.options.glitch_rate):
                return None
            kind: GlitchKind = self.rng.choice(eligible)
            generation.glitched.add(kind)
            self.counters["glitches"] += 1
            self.counters[f"glitch_{kind}"] += 1
            return kind

    def record(self, entry: dict[str, Any]) -> None:
        """Append one request to the log (never headers: no credentials in here)."""
        with self._lock:
            self.counters["requests"] += 1
            self.log.append(entry)

    def stats(self) -> dict[str, Any]:
        """Counters (every name in :data:`COUNTERS`, zero if unused) and figures of now:
        ``in_flight`` (queued or running), ``queued``, ``running``, ``max_in_flight``,
        ``max_running`` (most of one account running at once, under ``queue_limit``),
        ``charged`` (generations the account pays for: not cancelled, not failed or NSFW)
        and ``refunded`` (cancelled, failed or NSFW)."""
        with self._lock:
            now = self.now()
            self._advance(now)
            doc: dict[str, Any] = {name: self.counters[name] for name in COUNTERS}
            states = Counter(g.state(now) for g in self.generations.values())
            doc["in_flight"] = states["queued"] + states["running"]
            doc["queued"] = states["queued"]
            doc["running"] = states["running"]
            doc["max_in_flight"] = self.max_in_flight
            doc["max_running"] = max((q.max_running for q in self._queues.values()), default=0)
            charged = sum(
                1
                for g in self.generations.values()
                if g.canceled_at is None and g.outcome == "completed"
            )
            doc["charged"] = charged
            doc["refunded"] = len(self.generations) - charged
            return doc

    def log_entries(self) -> list[dict[str, Any]]:
        """A copy of the request log."""
        with self._lock:
            return [dict(entry) for entry in self.log]


def _hash(value: Any) -> str:
    """sha256 of a JSON value's canonical form: the idempotency fingerprint of a body."""
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()

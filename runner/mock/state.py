"""The mock's memory: generations, souls, idempotency keys, video URLs, the log and counters.

Every state is derived lazily from the clock (no background tasks): a generation is queued,
then running, then finished once its drawn latency has elapsed. Methods take a lock because a
test thread reads what the server thread writes.
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
from random import Random
from typing import Any, Literal

from runner.mock.options import QUEUE_FRACTION, MockOptions
from runner.mock.video import video_for

Clock = Callable[[], float]
Outcome = Literal["completed", "failed", "nsfw"]
GenerationState = Literal["queued", "running", "completed", "failed", "nsfw", "canceled"]
SoulState = Literal["not_ready", "queued", "training", "ready", "failed"]

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
    "souls_created",
    "uploads",
)


@dataclass
class Generation:
    """One accepted submit; its state at any time follows from ``created_at`` and latency."""

    id: str
    account: str
    dialect: str
    route: str
    body: dict[str, Any]
    body_hash: str
    idempotency_key: str | None
    created_at: float
    latency: float
    outcome: Outcome
    canceled_at: float | None = None

    def state(self, now: float) -> GenerationState:
        """Where the generation is at clock time ``now``."""
        if self.canceled_at is not None and now >= self.canceled_at:
            return "canceled"
        # Absolute instants, so a test that sets the clock to created_at + latency lands exactly.
        if now < self.created_at + self.latency * QUEUE_FRACTION:
            return "queued"
        if now < self.created_at + self.latency:
            return "running"
        return self.outcome

    def active(self, now: float) -> bool:
        """Queued or running: counts against the account's concurrency limit."""
        return self.state(now) in ("queued", "running")


@dataclass
class Soul:
    """One soul (identity) training, ready or failed after ``training_seconds``."""

    id: str
    account: str
    name: str
    images: list[str]
    created_at: float
    training_seconds: float
    fails: bool

    def state(self, now: float) -> SoulState:
        """``not_ready`` → ``queued`` → ``training`` (thirds of the time) → ready/failed."""
        if now >= self.created_at + self.training_seconds:
            return "failed" if self.fails else "ready"
        third = self.training_seconds / 3
        if now < self.created_at + third:
            return "not_ready"
        return "queued" if now < self.created_at + 2 * third else "training"


@dataclass(frozen=True)
class SubmitResult:
    """What :meth:`MockState.submit` decided."""

    kind: Literal["created", "replay", "conflict", "busy"]
    generation: Generation | None = None
    active: int = 0


@dataclass
class Upload:
    """A presigned upload slot and, once PUT, its bytes."""

    content_type: str
    data: bytes | None = None


@dataclass
class MockState:
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
    _keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _bodies: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)
    _video_tokens: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    _current_token: dict[str, str] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        seed = self.options.seed if self.options.seed is not None else secrets.randbits(64)
        self.rng = Random(seed)

    def now(self) -> float:
        """The app clock."""
        return self.clock()

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
        body_hash = hashlib.sha256(
            json.dumps([route, body], sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
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
            active = sum(
                1 for g in self.generations.values() if g.account == account and g.active(now)
            )
            limit = self.options.concurrency_limit
            if limit is not None and active >= limit:
                self.counters["concurrency_rejections"] += 1
                return SubmitResult("busy", active=active)
            generation = self._create(account, dialect, route, body, body_hash, idempotency_key)
            self.max_in_flight = max(self.max_in_flight, active + 1)
            return SubmitResult("created", generation, active + 1)

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

    def create_soul(self, *, account: str, name: str, images: list[str]) -> Soul:
        """Start a soul training."""
        fails = self.roll(self.options.soul_fail_rate)
        with self._lock:
            soul = Soul(
                id=self.new_id(),
                account=account,
                name=name,
                images=images,
                created_at=self.now(),
                training_seconds=self.options.soul_training_seconds,
                fails=fails,
            )
            self.souls[soul.id] = soul
            self.counters["souls_created"] += 1
            return soul

    def soul(self, soul_id: str, account: str) -> Soul | None:
        """A soul of ``account`` by id."""
        soul = self.souls.get(soul_id)
        return soul if soul is not None and soul.account == account else None

    def video_path(self, generation: Generation) -> str:
        """``/_mock/videos/{id}.mp4?token=…``: reused until it expires, then a fresh one."""
        with self._lock:
            now = self.now()
            token = self._current_token.get(generation.id)
            if token is not None:
                expires = self._video_tokens[token][1]
                if expires is None or now < expires:
                    return f"/_mock/videos/{generation.id}.mp4?token={token}"
            token = secrets.token_hex(8)
            ttl = self.options.url_ttl
            self._video_tokens[token] = (generation.id, None if ttl is None else now + ttl)
            self._current_token[generation.id] = token
            return f"/_mock/videos/{generation.id}.mp4?token={token}"

    def check_video_token(self, generation_id: str, token: str) -> Literal["ok", "expired", "bad"]:
        """Whether a video URL's token is valid for this generation now."""
        with self._lock:
            entry = self._video_tokens.get(token)
            if entry is None or entry[0] != generation_id:
                return "bad"
            expires = entry[1]
            return "expired" if expires is not None and self.now() >= expires else "ok"

    def video_bytes(self, generation_id: str) -> bytes:
        """The exact bytes served for a generation's video."""
        return video_for(generation_id, min_size=self.options.video_size)

    def video_sha256(self, generation_id: str) -> str:
        """sha256 hex of :meth:`video_bytes`, for tests comparing downloads."""
        return hashlib.sha256(self.video_bytes(generation_id)).hexdigest()

    def new_upload(self, content_type: str) -> str:
        """A presigned upload slot; returns its token."""
        with self._lock:
            token = secrets.token_hex(12)
            self.uploads[token] = Upload(content_type)
            return token

    def record(self, entry: dict[str, Any]) -> None:
        """Append one request to the log (never headers: no credentials in here)."""
        with self._lock:
            self.counters["requests"] += 1
            self.log.append(entry)

    def stats(self) -> dict[str, Any]:
        """Counters (every name in :data:`COUNTERS`, zero if unused) and in-flight figures."""
        with self._lock:
            now = self.now()
            doc: dict[str, Any] = {name: self.counters[name] for name in COUNTERS}
            doc["in_flight"] = sum(1 for g in self.generations.values() if g.active(now))
            doc["max_in_flight"] = self.max_in_flight
            return doc

    def log_entries(self) -> list[dict[str, Any]]:
        """A copy of the request log."""
        with self._lock:
            return [dict(entry) for entry in self.log]

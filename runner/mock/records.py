"""The mock's records: generations, souls, uploads, and what a submit or a soul creation
decided. Their state at any moment follows from their fields and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from runner.mock.options import QUEUE_FRACTION, GlitchKind

Outcome = Literal["completed", "failed", "nsfw"]
GenerationState = Literal["queued", "running", "completed", "failed", "nsfw", "canceled"]
SoulState = Literal["not_ready", "queued", "training", "ready", "failed"]


@dataclass
class Generation:
    """One accepted submit; its state at any time follows from when it started (see
    :mod:`runner.mock.scheduling`) and its latency."""

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
    result_ttl: float | None = None
    """How long a completed result is kept (platform generations); None: forever."""
    canceled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    glitched: set[GlitchKind] = field(default_factory=set)
    """Glitch kinds already injected for this generation (each at most once)."""
    answered_completed: bool = False
    """A status answer has handed out its video URL."""

    @property
    def ready_at(self) -> float:
        """When it may start running: its own share of the latency spent queued."""
        return self.created_at + self.latency * QUEUE_FRACTION

    def start(self, at: float) -> None:
        """Start running at ``at``; it finishes once the rest of its latency has passed."""
        self.started_at = at
        # Absolute instants, so a test that sets the clock to created_at + latency lands exactly.
        if at == self.ready_at:
            self.finished_at = self.created_at + self.latency
        else:
            self.finished_at = at + self.latency * (1 - QUEUE_FRACTION)

    def state(self, now: float) -> GenerationState:
        """Where the generation is at clock time ``now`` (once its account was advanced)."""
        if self.canceled_at is not None and now >= self.canceled_at:
            return "canceled"
        if self.started_at is None or self.finished_at is None or now < self.started_at:
            return "queued"
        if now < self.finished_at:
            return "running"
        return self.outcome

    def active(self, now: float) -> bool:
        """Queued or running: counts against the account's concurrency limit."""
        return self.state(now) in ("queued", "running")

    @property
    def expires_at(self) -> float | None:
        """When a completed result stops being served (None: not finished, or kept forever)."""
        if self.outcome != "completed" or self.finished_at is None or self.result_ttl is None:
            return None
        return self.finished_at + self.result_ttl

    def expired(self, now: float) -> bool:
        """A completed result past its ``expires_at``."""
        expires = self.expires_at
        return expires is not None and now >= expires and self.state(now) == "completed"


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
    idempotency_key: str | None = None
    body_hash: str = ""

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

    kind: Literal["created", "replay", "conflict", "busy", "queue_full"]
    generation: Generation | None = None
    active: int = 0


@dataclass(frozen=True)
class SoulResult:
    """What :meth:`MockState.create_soul` decided."""

    kind: Literal["created", "replay", "conflict"]
    soul: Soul | None = None


@dataclass
class Upload:
    """A presigned upload slot (the headers its PUT must carry) and, once PUT, its bytes."""

    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None

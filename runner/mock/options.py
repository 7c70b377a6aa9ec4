"""The mock server's knobs: accepted keys, latency and the faults it injects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RetryAfterMode = Literal["seconds", "date", "none", "mixed"]
RETRY_AFTER_MODES: tuple[RetryAfterMode, ...] = ("seconds", "date", "none", "mixed")
GlitchKind = Literal[
    "html", "no_status", "numeric_status", "not_found", "no_url", "redirect", "regressed"
]
GLITCH_KINDS: tuple[GlitchKind, ...] = (
    "html",  # 200 with an HTML page for a body
    "no_status",  # JSON without "status"
    "numeric_status",  # "status": 3
    "not_found",  # 404, as from a replica that has not seen the generation yet
    "no_url",  # "completed" without a video URL (only once it is completed)
    "redirect",  # 307 to another origin
    "regressed",  # back to processing after it was answered completed (a URL had expired)
)

DEFAULT_SEED_KEYS = ("test-key",)
DEFAULT_PLATFORM_KEYS = ("test-id:test-secret",)
DEFAULT_LATENCY_MIN = 0.05
DEFAULT_LATENCY_MAX = 0.2
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_SOUL_TRAINING_SECONDS = 0.2
DEFAULT_RESULT_TTL = 7 * 24 * 3600.0  # the platform keeps results 7 days by default
QUEUE_FRACTION = 0.25  # share of a generation's latency it spends queued before running


@dataclass(frozen=True)
class MockOptions:
    """Everything the mock can be told; every fault is off by default.

    Rates are probabilities in [0, 1], drawn from one ``random.Random(seed)`` so a run with a
    ``seed`` is reproducible (``None`` seeds from the OS). Times are seconds on the app's clock.
    """

    seed_api_keys: tuple[str, ...] = DEFAULT_SEED_KEYS
    """Bearer keys the ``higgsfieldapi`` routes accept."""
    platform_api_keys: tuple[str, ...] = DEFAULT_PLATFORM_KEYS
    """``id:secret`` keys the platform routes accept."""
    forbidden_keys: tuple[str, ...] = ()
    """Keys (either form) that authenticate but are refused with 403 (out of credits)."""
    latency_min: float = DEFAULT_LATENCY_MIN
    latency_max: float = DEFAULT_LATENCY_MAX
    """A generation finishes after a uniform draw from [latency_min, latency_max] seconds."""
    fail_rate: float = 0.0
    nsfw_rate: float = 0.0
    rate_429: float = 0.0
    """Share of authenticated API calls answered 429 before they are looked at."""
    retry_after_mode: RetryAfterMode = "seconds"
    """Retry-After on 429s: delay-seconds, HTTP-date, absent, or a random one of the three."""
    retry_after: float = DEFAULT_RETRY_AFTER
    rate_5xx: float = 0.0
    """Share of authenticated API calls answered 500/502/503."""
    concurrency_limit: int | None = None
    """Generations per account. Without ``queue_limit`` (the legacy behaviour) it counts those
    queued or running, and over it the platform answers 400 "Maximum number of concurrent
    requests (N) has been reached", the seed API 429."""
    queue_limit: int | None = None
    """The platform's account queue (needs ``concurrency_limit``): at most
    ``concurrency_limit`` generations of an account run at once; more are accepted and wait
    ``queued`` (first come, first started) until a slot frees, up to ``concurrency_limit +
    queue_limit`` queued or running in all. Past that, a submit answers 429
    ``{"code": "account_queue_full"}`` with Retry-After (``retry_after_mode``), and nothing is
    created or charged. The seed dialect keeps its 429 at ``concurrency_limit``."""
    drop_after_accept_rate: float = 0.0
    """Share of new submits recorded, then answered by a dropped connection."""
    truncate_rate: float = 0.0
    """Share of video downloads cut short of their Content-Length."""
    url_ttl: float | None = None
    """Video URLs expire after this many seconds (410); a status call mints a fresh one."""
    result_ttl: float | None = DEFAULT_RESULT_TTL
    """Platform results are kept this long after they complete (``expires_at``); then the
    status answers them expired and every video URL 410s. None keeps them forever."""
    glitch_rate: float = 0.0
    """Share of status calls answered by a glitch; each kind of ``glitches`` hits a generation
    at most once."""
    glitches: tuple[GlitchKind, ...] = GLITCH_KINDS
    """Which status glitches ``glitch_rate`` may inject (see :data:`GLITCH_KINDS`)."""
    soul_training_seconds: float = DEFAULT_SOUL_TRAINING_SECONDS
    soul_fail_rate: float = 0.0
    drop_soul_answer_rate: float = 0.0
    """Share of new soul trainings accepted, then answered by a dropped connection."""
    drop_soul_replays: bool = False
    """Drop the answers to replayed soul trainings too (at ``drop_soul_answer_rate``): a
    training whose every answer is lost, however often it is asked again."""
    seed: int | None = None
    video_size: int = 0
    """Pad each video to at least this many bytes (0: the fixture's own ~2 KB)."""

    def __post_init__(self) -> None:
        for name in (
            "fail_rate",
            "nsfw_rate",
            "rate_429",
            "rate_5xx",
            "drop_after_accept_rate",
            "truncate_rate",
            "soul_fail_rate",
            "glitch_rate",
            "drop_soul_answer_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.fail_rate + self.nsfw_rate > 1.0:
            raise ValueError("fail_rate + nsfw_rate must not exceed 1")
        if not 0.0 <= self.latency_min <= self.latency_max:
            raise ValueError("need 0 <= latency_min <= latency_max")
        if self.retry_after_mode not in RETRY_AFTER_MODES:
            raise ValueError(f"retry_after_mode must be one of {', '.join(RETRY_AFTER_MODES)}")
        if self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError("concurrency_limit must be at least 1")
        if self.queue_limit is not None:
            if self.concurrency_limit is None:
                raise ValueError("queue_limit needs a concurrency_limit")
            if self.queue_limit < 0:
                raise ValueError("queue_limit must not be negative")
        if self.url_ttl is not None and self.url_ttl <= 0:
            raise ValueError("url_ttl must be positive")
        if self.result_ttl is not None and self.result_ttl <= 0:
            raise ValueError("result_ttl must be positive")
        unknown = sorted(set(self.glitches) - set(GLITCH_KINDS))
        if unknown:
            raise ValueError(
                f"unknown glitch {', '.join(unknown)}: expected {', '.join(GLITCH_KINDS)}"
            )
        if self.soul_training_seconds < 0 or self.video_size < 0:
            raise ValueError("soul_training_seconds and video_size must not be negative")

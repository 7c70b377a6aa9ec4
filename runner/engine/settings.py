"""The engine's limits, as one value object (built by ``runner.settings``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from runner.engine.polling import PollSchedule
from runner.engine.throttle import Backoff


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine needs to know about limits; built from the manifest + flags."""

    concurrency: int = 4
    requests_per_second: float = 2.0
    download_concurrency: int = 4
    max_attempts: int = 5
    poll: PollSchedule = field(default_factory=PollSchedule)
    backoff: Backoff = field(default_factory=Backoff)
    submit: bool = True  # False for `collect`
    download: bool = True  # False for `run --submit-only`
    generation_timeout: float | None = None  # stop waiting this long after a submit
    until: datetime | None = None  # no new submission after this moment (--until)
    max_failures: int | None = None  # no new submission after this many failures (--max-failures)

"""Flow control for provider calls: the rate limiter, Retry-After pauses, adaptive concurrency
and backoff. The executor owns one ``Throttle`` per run; every API call goes through it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from aiolimiter import AsyncLimiter

T = TypeVar("T")

# Calls are spaced a little wider than 1/rps so that network jitter between our clock and the
# provider's cannot make any 1-second window at the provider hold rps + 1 calls.
RATE_SAFETY = 1.05
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_CAP = 60.0
# A throttle answer without Retry-After: wait this long at least before the next call.
DEFAULT_THROTTLE_WAIT = 2.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: a random wait in [0, min(cap, base·2^n)]."""

    base: float = DEFAULT_BACKOFF_BASE
    cap: float = DEFAULT_BACKOFF_CAP

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(0, ceiling)


class Throttle:
    """One gate for every call to the provider.

    - a leaky bucket of capacity 1 (no initial burst) releasing one call per 1/rps seconds;
    - a provider-wide pause: a ``Retry-After`` stops every call, not just the one that got it;
    - nothing is sent while the pause is in force, even by calls already waiting on the limiter.

    Create it inside the running event loop (aiolimiter binds to the loop it first runs on).
    """

    def __init__(self, requests_per_second: float, *, clock: Callable[[], float] = time.monotonic):
        interval = RATE_SAFETY / requests_per_second
        self._limiter = AsyncLimiter(1, interval)
        self._clock = clock
        self._paused_until = 0.0

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every call for ``seconds`` from now (an earlier, longer pause is kept)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def wait_turn(self) -> None:
        """Return when this caller may send one request."""
        while True:
            while (left := self.paused_for) > 0:
                await anyio.sleep(left)
            await self._limiter.acquire()
            # A pause may have started while we waited on the limiter: honour it, then queue
            # again so the calls released after the pause are still spaced.
            if self.paused_for == 0:
                return

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Wait for a turn, then run ``fn``."""
        await self.wait_turn()
        return await fn()


class AdaptiveSlots:
    """Generations in flight, with a ceiling that falls on throttling and climbs on success.

    ``acquire`` waits (first come, first served) until fewer than ``limit`` generations are in
    flight. ``throttled`` lowers the limit to what the provider is clearly holding right now;
    each generation that finishes raises it by one again, up to the configured maximum.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.in_flight = 0
        self._changed = anyio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            while self.in_flight >= self.limit:
                await self._changed.wait()
            self.in_flight += 1

    def adopt(self) -> None:
        """Count a generation that is already at the provider (found in flight on resume)."""
        self.in_flight += 1

    async def release(self, *, succeeded: bool) -> None:
        async with self._changed:
            self.in_flight = max(0, self.in_flight - 1)
            if succeeded and self.limit < self.maximum:
                self.limit += 1
            self._changed.notify_all()

    def throttled(self) -> None:
        """The provider said 'too many': stop adding until something finishes."""
        self.limit = max(1, min(self.limit, self.in_flight - 1))


def retry_wait(retry_after: float | None, attempt: int, backoff: Backoff) -> float:
    """How long to wait after a throttle answer: its Retry-After, else the backoff."""
    if retry_after is not None and math.isfinite(retry_after):
        return max(0.0, retry_after)
    return max(backoff.delay(attempt), min(DEFAULT_THROTTLE_WAIT, backoff.cap))

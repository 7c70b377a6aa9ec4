"""One poll schedule for everything the provider works on (generations and soul models).

The first poll comes ``initial`` seconds after the start, then each quiet poll waits
``growth`` times longer, up to ``maximum``. A zero ``initial`` still backs off (from
``MIN_STEP``): a provider is never polled in a tight loop. Each wait is jittered a little so
that jobs submitted together do not poll in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from runner.engine.clock import Clock

T = TypeVar("T")

POLL_GROWTH = 1.5
MIN_STEP = 0.01  # seconds: the smallest wait after the first
JITTER = 0.1  # each wait is drawn from [1 - JITTER, 1 + JITTER] of its nominal value


@dataclass(frozen=True)
class PollSchedule:
    """When to look again at something the provider is working on."""

    initial: float = 5.0
    maximum: float = 30.0
    growth: float = POLL_GROWTH

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The waits before each poll, forever."""
        delay = self.initial
        while True:
            yield min(self.maximum, delay) * rng.uniform(1 - JITTER, 1 + JITTER)
            delay = min(self.maximum, max(delay * self.growth, MIN_STEP))

    async def until(
        self, check: Callable[[], Awaitable[T | None]], *, clock: Clock, rng: random.Random
    ) -> T:
        """Wait, check, and again, until ``check`` returns something other than ``None``."""
        for delay in self.delays(rng):
            await clock.sleep(delay)
            result = await check()
            if result is not None:
                return result
        raise AssertionError("unreachable: the schedule never ends")

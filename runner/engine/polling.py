"""One poll schedule for everything the provider works on (generations and soul models).

The first poll comes ``initial`` seconds after the start, then each quiet poll waits
``growth`` times longer, up to ``maximum``. A zero ``initial`` still backs off (from
``MIN_STEP``): a provider is never polled in a tight loop. Each wait is jittered a little so
that jobs submitted together do not poll in lockstep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from runner.engine.clock import Clock
from runner.errors import DeadlineError

T = TypeVar("T")

POLL_GROWTH = 1.5
MIN_STEP = 0.01  # seconds: the smallest wait after the first
JITTER = 0.1  # each wait is drawn from [1 - JITTER, 1 + JITTER] of its nominal value


def iso(moment: datetime | None) -> str | None:
    """A provider's expiry as the ledger stores it."""
    return moment.isoformat() if moment is not None else None


def expiry(stored: str | None) -> float:
    """A stored expiry as a download priority: its POSIX time, or last when there is none."""
    return datetime.fromisoformat(stored).timestamp() if stored else math.inf


def deadline(timeout: float | None, since: str | None, clock: Clock) -> float | None:
    """When (on ``clock``) to stop waiting for something submitted at ``since`` (an ISO time
    from the ledger; ``None`` for just now), ``timeout`` seconds after it."""
    if timeout is None:
        return None
    return clock.now() + timeout - age(since)


def age(since: str | None) -> float:
    """Seconds since ``since`` (an ISO time from the ledger; ``None`` for just now)."""
    if since is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds())


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
        self,
        check: Callable[[], Awaitable[T | None]],
        *,
        clock: Clock,
        rng: random.Random,
        deadline: float | None = None,
        what: str = "it",
        delays: Iterator[float] | None = None,
        sleep: Callable[[float], Awaitable[bool]] | None = None,
    ) -> T:
        """Wait, check, and again, until ``check`` returns something other than ``None``.

        The waits are ``delays`` (a learned schedule, ``runner.engine.learning``) or this
        schedule's own, slept on ``clock`` or by ``sleep``, which returns True when it was cut
        short (the schedule was learned meanwhile): no check then, the next of ``delays``
        (from now) is the wait instead. With a ``deadline`` (on ``clock``), the last check is
        made at the deadline; if that finds nothing either, ``DeadlineError`` says so.
        """
        for delay in delays if delays is not None else self.delays(rng):
            last = deadline is not None and clock.now() + delay >= deadline
            if deadline is not None and last:
                delay = max(0.0, deadline - clock.now())
            if sleep is not None:
                if await sleep(delay):
                    continue
            else:
                await clock.sleep(delay)
            result = await check()
            if result is not None:
                return result
            if last:
                raise DeadlineError(f"{what} was not finished by its deadline")
        raise AssertionError("unreachable: the schedule never ends")

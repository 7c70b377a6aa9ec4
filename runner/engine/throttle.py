"""Flow control for provider calls: call spacing, Retry-After pauses, adaptive concurrency and
backoff. One ``Throttle`` per run; every API call takes a turn from it (see ``calls``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from runner.engine.clock import SYSTEM_CLOCK, Clock

# Every 1-second window at the provider may hold rps calls: any rps + 1 calls in a row span
# at least 1 s + WINDOW_SLACK when they leave here, the slack absorbing how much their trips to
# the provider differ (up to ~10 ms at the mock on a loaded 2-core machine). 10 ms in a second
# leaves 99 % of the rate in use.
WINDOW_SLACK = 0.010
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_CAP = 60.0
# A throttle answer without Retry-After: wait this long at least before the next call.
DEFAULT_THROTTLE_WAIT = 2.0
# The longest pause a provider's Retry-After can impose (seconds): `Retry-After: 1e9` or an
# HTTP date ten years ahead must not hold a nightly run (and its lock) for decades.
MAX_PAUSE = 600.0


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

    - calls are spaced ``(1 + WINDOW_SLACK) / rps`` apart from the very first one (no burst),
      in the order they asked (each caller reserves the next free slot);
    - and, whatever made a caller late for its slot (a busy event loop), a call never leaves
      sooner than ``1 + WINDOW_SLACK`` seconds after the one ``rps`` calls before it, so that
      late callers catching up cannot crowd one window (``⌈rps⌉`` for a fractional rate);
    - a provider-wide pause: a ``Retry-After`` stops every call, not just the one that got it;
    - nothing is sent while a pause is in force, even by calls already waiting for their slot.

    aiolimiter did this before; it reads the event loop's real clock, and the engine's rules
    must run on an injected one.
    """

    def __init__(self, requests_per_second: float, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.window = max(1, math.floor(requests_per_second))  # calls per span
        self.span = (1.0 + WINDOW_SLACK) * self.window / requests_per_second
        self.interval = self.span / self.window
        self.clock = clock
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._sent: deque[float] = deque(maxlen=self.window)  # when the last calls left

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when none)."""
        return max(0.0, self._paused_until - self.clock.now())

    def pause(self, seconds: float) -> None:
        """Hold every call for ``seconds`` from now, at most ``MAX_PAUSE`` (an earlier, longer
        pause is kept)."""
        seconds = min(seconds, MAX_PAUSE)
        self._paused_until = max(self._paused_until, self.clock.now() + seconds)

    async def wait_turn(self) -> None:
        """Return when this caller may send one request."""
        while True:
            while (left := self.paused_for) > 0:
                await self.clock.sleep(left)
            now = self.clock.now()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
            if slot > now:  # a free slot is taken at once: no turn of the event loop
                await self.clock.sleep(slot - now)
            while len(self._sent) == self.window and (
                (early := self._sent[0] + self.span - self.clock.now()) > 0
            ):
                await self.clock.sleep(early)
            # A pause may have started while we waited for our slot: honour it, then take a
            # new slot so the calls released after the pause are still spaced.
            if self.paused_for == 0:
                self._sent.append(self.clock.now())
                return


class AdaptiveSlots:
    """Generations in flight, with a ceiling that falls on throttling and climbs on success.

    ``acquire`` waits (first come, first served) until fewer than ``limit`` generations are in
    flight. ``throttled`` lowers the limit to what the provider is clearly holding right now;
    each generation that finishes raises it by one again, up to the configured maximum.

    A freed slot is handed straight to the first waiter, which wakes owning it: the next
    submit follows a finished generation as closely as the event loop allows (a lock and a
    condition took several turns of the loop, each as long as the other tasks' work in it).
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.in_flight = 0
        self._waiting: deque[anyio.Event] = deque()  # first come, first served

    async def acquire(self) -> None:
        await anyio.lowlevel.checkpoint()  # the run's first submits start as they are let in
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return
        handed = anyio.Event()
        self._waiting.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():  # handed a slot just as we were cancelled: pass it on
                self.in_flight -= 1
                self._hand_over()
            else:
                self._waiting.remove(handed)
            raise

    def adopt(self) -> None:
        """Count a generation that is already at the provider (found in flight on resume)."""
        self.in_flight += 1

    async def release(self, *, succeeded: bool) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if succeeded and self.limit < self.maximum:
            self.limit += 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiting and self.in_flight < self.limit:
            self.in_flight += 1  # counted for the waiter, which wakes owning it
            self._waiting.popleft().set()

    def throttled(self) -> None:
        """The provider said 'too many': stop adding until something finishes."""
        self.limit = max(1, min(self.limit, self.in_flight - 1))


def retry_wait(retry_after: float | None, attempt: int, backoff: Backoff) -> float:
    """How long to wait after a throttle answer: its Retry-After (at most ``MAX_PAUSE``), else
    the backoff."""
    if retry_after is not None and not math.isnan(retry_after):
        return min(MAX_PAUSE, max(0.0, retry_after))
    return max(backoff.delay(attempt), min(DEFAULT_THROTTLE_WAIT, backoff.cap))


class PriorityGate:
    """At most ``size`` holders at once; waiters get in lowest ``priority`` first (ties in
    arrival order). Downloads use it so that the result that expires soonest goes first."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.held = 0
        # min-heap of (priority, arrival, event): a freed slot is handed straight to its head
        self._waiting: list[tuple[float, int, anyio.Event]] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: float = math.inf) -> AsyncIterator[None]:
        """Hold one of the slots for the block."""
        if self.held < self.size and not self._waiting:
            self.held += 1
        else:
            entry = (priority, next(self._arrivals), anyio.Event())
            heapq.heappush(self._waiting, entry)
            try:
                await entry[2].wait()
            except BaseException:
                if entry[2].is_set():  # handed a slot just as we were cancelled: pass it on
                    self._release()
                else:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        if self._waiting:
            heapq.heappop(self._waiting)[2].set()  # the slot changes hands; held stays
        else:
            self.held -= 1

"""Time for the engine: what it reads (``now``) and how it waits (``sleep``), injectable.

Every rule of the engine that involves time (rate spacing, Retry-After pauses, backoff, poll
schedules) reads this clock, so tests run those rules on :class:`VirtualClock` instead of
waiting for real seconds to pass.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio
import anyio.to_thread

# How long the virtual clock's driver waits for real work (e.g. a thread) when no task sleeps.
_IDLE_POLL = 0.001


class Clock(Protocol):
    """Monotonic seconds and a way to wait for them."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock (a checkpoint when <= 0)."""
        ...

    def running(self) -> AbstractAsyncContextManager[Any]:
        """Keep the clock going for the duration of a run (the real one always goes)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``anyio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SystemClock]:
        yield self


SYSTEM_CLOCK = SystemClock()


class VirtualClock:
    """Time that moves only when every task is waiting.

    A sleep parks the task; when all tasks are blocked, the driver (see :meth:`running`) jumps
    time to the earliest deadline and wakes the sleepers due then, in deadline order. Rules
    about seconds are then exact and take no real time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # min-heap of (deadline, order, event): the earliest deadline wakes first, ties FIFO
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (sleepers still wake only through the driver)."""
        self._now += seconds

    async def _drive(self) -> None:
        while True:
            await _all_tasks_blocked()
            # A task waiting for a worker thread (a file's fsync, its hash) counts as blocked,
            # but its work takes no virtual time: time jumps only once no thread is busy, so a
            # loaded machine's slow threads cannot move a run's virtual timeline.
            if not self._sleepers or _threads_busy():
                await anyio.sleep(_IDLE_POLL)
                continue
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                heapq.heappop(self._sleepers)[2].set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[VirtualClock]:
        """Drive this clock for the duration of the block."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drive)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()


async def _all_tasks_blocked() -> None:
    """Return once every other task waits on something (as ``anyio.wait_all_tasks_blocked``,
    which looks again only after 0.1 s of real time whenever a task is ready to run: a run's
    many ``sleep(0)`` turns made virtual-time tests spend most of their time in those waits)."""
    import asyncio  # only under a virtual clock: a command that runs nothing does not import it

    this = asyncio.current_task()
    while True:
        await anyio.lowlevel.checkpoint()
        for task in asyncio.all_tasks():
            waiter = getattr(task, "_fut_waiter", None)  # what the task awaits (asyncio's own)
            if task is not this and (waiter is None or waiter.done()):
                await anyio.sleep(_IDLE_POLL)
                break
        else:
            return


def _threads_busy() -> bool:
    """Whether any worker thread of ``anyio.to_thread`` (default limiter) is running."""
    return anyio.to_thread.current_default_thread_limiter().borrowed_tokens > 0

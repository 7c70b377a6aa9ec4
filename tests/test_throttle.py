"""Flow control: backoff, adaptive concurrency, the no-burst limiter and Retry-After pauses."""

from __future__ import annotations

import itertools
import random

import anyio
import pytest

from runner.throttle import AdaptiveSlots, Backoff, Throttle, retry_wait

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_backoff_is_full_jitter_and_capped() -> None:
    """Delays fall in [0, min(cap, base·2^(n-1))] and use the whole range."""
    backoff = Backoff(base=1.0, cap=8.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9 and min(delays) < ceiling * 0.1


def test_retry_wait_prefers_retry_after() -> None:
    """A Retry-After value is obeyed as given; without one the backoff decides."""
    assert retry_wait(7.5, 1, Backoff()) == 7.5
    assert retry_wait(-3, 1, Backoff()) == 0.0
    assert 0 < retry_wait(None, 1, Backoff(base=0.01, cap=0.01)) <= 0.01


async def test_slots_fall_on_throttling_and_climb_on_success() -> None:
    """Throttling lowers the ceiling below what is in flight; successes raise it back."""
    slots = AdaptiveSlots(4)
    for _ in range(4):
        await slots.acquire()
    slots.throttled()
    assert slots.limit == 3
    await slots.release(succeeded=False)
    await slots.release(succeeded=False)
    slots.throttled()
    assert slots.limit == 1
    await slots.release(succeeded=True)
    await slots.release(succeeded=True)
    assert slots.limit == 3 and slots.in_flight == 0
    await slots.acquire()
    await slots.release(succeeded=True)
    assert slots.limit == 4
    await slots.acquire()
    await slots.release(succeeded=True)
    assert slots.limit == 4  # never above the configured maximum


async def test_slots_block_at_the_limit() -> None:
    """A fifth acquire waits until one of four in flight is released."""
    slots = AdaptiveSlots(4)
    for _ in range(4):
        await slots.acquire()
    got = anyio.Event()

    async def fifth() -> None:
        await slots.acquire()
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(fifth)
        await anyio.wait_all_tasks_blocked()
        assert not got.is_set()
        await slots.release(succeeded=True)
        await got.wait()
    assert slots.in_flight == 4


async def test_limiter_has_no_initial_burst() -> None:
    """Calls are spaced by at least 1/rps from the very first one."""
    throttle = Throttle(100.0)
    stamps = []
    for _ in range(6):
        await throttle.wait_turn()
        stamps.append(anyio.current_time())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.01 * 0.99


async def test_pause_holds_every_caller() -> None:
    """During a pause nobody gets a turn; afterwards everybody does."""
    now = [0.0]
    throttle = Throttle(1000.0, clock=lambda: now[0])
    throttle.pause(5.0)
    assert throttle.paused_for == 5.0
    throttle.pause(1.0)  # a shorter pause does not cut the longer one
    assert throttle.paused_for == 5.0
    now[0] = 5.0
    assert throttle.paused_for == 0.0
    await throttle.wait_turn()

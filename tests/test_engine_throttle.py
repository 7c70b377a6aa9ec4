"""Flow control: backoff, adaptive concurrency, the no-burst limiter and Retry-After pauses."""

from __future__ import annotations

import itertools
import random

import anyio
import pytest

from runner.engine import AdaptiveSlots, Backoff, Throttle, VirtualClock, retry_wait

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


async def test_a_freed_slot_goes_to_the_first_waiter_and_a_cancelled_one_passes_it_on() -> None:
    """Waiters get slots in arrival order, each handed its slot by the release; one cancelled
    just as it was handed a slot gives it to the next; a newcomer never overtakes a waiter."""
    slots = AdaptiveSlots(1)
    await slots.acquire()
    order: list[str] = []

    async def waiter(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            await slots.acquire()
            order.append(name)

    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()
        tg.start_soon(waiter, "never", first)
        for name in ("b", "c"):
            tg.start_soon(waiter, name)
        await anyio.wait_all_tasks_blocked()
        first.cancel()  # the first waiter is being cancelled as it is handed the slot
        await slots.release(succeeded=True)
        await anyio.wait_all_tasks_blocked()
        assert order == ["b"] and slots.in_flight == 1
        tg.start_soon(waiter, "newcomer")
        await anyio.wait_all_tasks_blocked()
        await slots.release(succeeded=True)
        await anyio.wait_all_tasks_blocked()
        assert order == ["b", "c"] and slots.in_flight == 1
        await slots.release(succeeded=True)
    assert order == ["b", "c", "newcomer"] and slots.in_flight == 1


async def test_calls_are_spaced_from_the_very_first_one() -> None:
    """No burst: on virtual time the first call goes at once, then one every 1.01/rps."""
    async with VirtualClock().running() as clock:
        throttle = Throttle(100.0, clock=clock)
        stamps = []
        for _ in range(6):
            await throttle.wait_turn()
            stamps.append(clock.now())
    assert stamps[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps == pytest.approx([1.01 / 100] * 5)


async def test_concurrent_callers_take_turns_in_order() -> None:
    """Ten callers at once are released one slot apart, first come first served."""
    order: list[tuple[int, float]] = []
    async with VirtualClock().running() as clock:
        throttle = Throttle(2.0, clock=clock)

        async def caller(i: int) -> None:
            await throttle.wait_turn()
            order.append((i, clock.now()))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(caller, i)
    assert [i for i, _ in order] == list(range(10))
    assert [t for _, t in order] == pytest.approx([i * 0.505 for i in range(10)])


async def test_pause_holds_every_caller() -> None:
    """A pause holds every caller, those already waiting for a slot included; a shorter pause
    never cuts a longer one; afterwards the calls are still spaced."""
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        throttle = Throttle(10.0, clock=clock)

        async def caller() -> None:
            await throttle.wait_turn()
            sent.append(clock.now())

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(caller)
            await clock.sleep(0.2)  # two calls out (at 0 and 0.101), three waiting
            throttle.pause(5.0)
            throttle.pause(1.0)
            assert throttle.paused_for == pytest.approx(5.0)
    assert len(sent) == 5
    assert sent[:2] == pytest.approx([0.0, 0.101])
    assert all(t >= 5.2 for t in sent[2:])
    assert [b - a for a, b in itertools.pairwise(sent[2:])] == pytest.approx([0.101] * 2)


async def test_priority_gate_lets_the_lowest_priority_in_first() -> None:
    """With the one slot held, waiters get in by priority (soonest expiry first), ties in
    arrival order; a cancelled waiter gives up its place."""
    from runner.engine.throttle import PriorityGate

    gate = PriorityGate(1)
    order: list[str] = []

    async def wait(name: str, priority: float) -> None:
        async with gate.slot(priority):
            order.append(name)

    async with anyio.create_task_group() as tg, gate.slot(0):
        for name, priority in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:
            tg.start_soon(wait, name, priority)
        with anyio.CancelScope() as doomed:
            doomed.cancel()
            async with gate.slot(0.5):  # cancelled before it gets in
                order.append("never")
        await anyio.wait_all_tasks_blocked()
    assert order == ["a", "a2", "b", "c"]
    assert gate.held == 0


async def test_late_callers_never_crowd_a_window() -> None:
    """Callers that wake late for their slots (an event loop busy for 0.3 s) catch up, but no
    1-second window holds more than rps calls: a call leaves no sooner than 1.01 s after the
    one rps calls before it."""
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        throttle = Throttle(5.0, clock=clock)
        for i in range(40):
            await throttle.wait_turn()
            sent.append(clock.now())
            if i % 7 == 3:
                await clock.sleep(0.3)  # this caller comes back late for the next slot
    assert all(b - a >= 1.01 - 1e-9 for a, b in zip(sent, sent[5:], strict=False))
    busiest = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert busiest == 5


@pytest.mark.parametrize("rps", [5.0, 50.0])
async def test_waiting_work_uses_the_rate(rps: float) -> None:
    """With callers always waiting, the throttle lets through 99 % of rps, and never more
    than rps in any 1-second window."""
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        throttle = Throttle(rps, clock=clock)

        async def caller() -> None:
            while clock.now() < 20.0:
                await throttle.wait_turn()
                sent.append(clock.now())

        async with anyio.create_task_group() as tg:
            for _ in range(int(rps) * 2):
                tg.start_soon(caller)
    inside = [t for t in sent if t < 20.0]
    assert len(inside) / (20.0 * rps) >= 0.99
    busiest = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert busiest == int(rps)

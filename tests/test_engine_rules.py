"""The engine's rules on virtual time: the call policy, the poll schedule and the budget."""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable

import anyio
import pytest

from runner.engine import Backoff, Budget, Calls, PollSchedule, Throttle, VirtualClock
from runner.engine.budget import submission_order
from runner.errors import (
    BudgetExceededError,
    DeadlineError,
    ExhaustedError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)
from runner.ledger import JobStatus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_calls(clock: VirtualClock, *, rps: float = 100.0, max_attempts: int = 3) -> Calls:
    return Calls(
        throttle=Throttle(rps, clock=clock),
        clock=clock,
        max_attempts=max_attempts,
        backoff=Backoff(base=1.0, cap=4.0),
        rng=random.Random(1),
    )


def scripted(answers: list[BaseException | str], log: list[float], clock: VirtualClock) -> Callable[
    [], Awaitable[str]
]:
    """A provider call that answers from ``answers`` in turn, logging when it was sent."""

    async def call() -> str:
        log.append(clock.now())
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return call


# --- the call policy -------------------------------------------------------------------------


async def test_throttles_use_no_attempts() -> None:
    """Ten 429s in a row, then success: with max_attempts 3 the call still succeeds, and no
    attempt is counted."""
    counted: list[int] = []
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        calls = make_calls(clock)
        answers: list[BaseException | str] = [ThrottledError("429") for _ in range(10)]
        call = scripted([*answers, "gen-1"], sent, clock)
        got = await calls(call, count=lambda err, n: counted.append(n))
    assert got == "gen-1"
    assert counted == []
    assert len(sent) == 11


async def test_retry_after_pauses_every_caller() -> None:
    """A 429 with Retry-After: 30 seen by one caller holds every other caller's calls too."""
    sent: dict[str, list[float]] = {"a": [], "b": []}
    async with VirtualClock().running() as clock:
        calls = make_calls(clock, rps=1000.0)

        async def a() -> None:
            await calls(scripted([ThrottledError("429", retry_after=30.0), "ok"], sent["a"], clock))

        async def b() -> None:
            await clock.sleep(1.0)  # after the 429 reached a
            for _ in range(3):
                await calls(scripted(["ok"], sent["b"], clock))

        async with anyio.create_task_group() as tg:
            tg.start_soon(a)
            tg.start_soon(b)
    assert sent["a"][0] == 0.0 and sent["a"][1] >= 30.0
    assert sent["b"] and all(t >= 30.0 for t in sent["b"])


async def test_a_caller_giving_up_at_the_throttle_ceiling_still_pauses_the_others() -> None:
    """The 429 that ends a call at the throttle ceiling asked for a pause too: the call gives
    up (DeadlineError), and every other caller still waits the pause out."""
    sent: dict[str, list[float]] = {"a": [], "b": []}
    async with VirtualClock().running() as clock:
        calls = make_calls(clock, rps=1000.0)
        calls.throttle_ceiling = 100.0
        throttles: list[BaseException | str] = [
            ThrottledError("429", retry_after=60.0) for _ in range(3)
        ]

        async def a() -> None:
            with pytest.raises(DeadlineError, match="throttled for 120s"):
                await calls(scripted(throttles, sent["a"], clock))

        async def b() -> None:
            await clock.sleep(119.0)  # waiting for its turn when a's last 429 arrives
            await calls(scripted(["ok"], sent["b"], clock))

        async with anyio.create_task_group() as tg:
            tg.start_soon(a)
            tg.start_soon(b)
    assert sent["a"] == [0.0, 60.0, 120.0]
    assert sent["b"] and sent["b"][0] >= 180.0


async def test_retry_after_on_a_transient_error_pauses_everyone_and_uses_an_attempt() -> None:
    """A 503 with Retry-After: counted as an attempt, and nobody calls until it has passed."""
    counted: list[int] = []
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        calls = make_calls(clock)
        call = scripted([TransientError("503", retry_after=12.0), "ok"], sent, clock)
        await calls(call, count=lambda err, n: counted.append(n))
    assert counted == [1]
    assert sent[1] >= 12.0


async def test_transient_attempts_continue_from_earlier_runs() -> None:
    """With 2 attempts used in earlier runs and max_attempts 3, one more failure exhausts it:
    the count is told the running total, and ExhaustedError carries the last error."""
    counted: list[int] = []
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        calls = make_calls(clock, max_attempts=3)
        lost = UnknownOutcomeError("connection dropped after the POST")
        call = scripted([lost, "never"], sent, clock)
        with pytest.raises(ExhaustedError) as info:
            await calls(call, used=2, count=lambda err, n: counted.append(n))
    assert counted == [3]
    assert info.value.attempts == 3 and info.value.last is lost
    assert len(sent) == 1


async def test_transient_errors_back_off_with_jitter_within_the_cap() -> None:
    """Retries wait a full-jitter backoff: in [0, base·2^(n-1)], never past the cap."""
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        calls = make_calls(clock, max_attempts=6)
        answers: list[BaseException | str] = [TransientError("500") for _ in range(5)]
        await calls(scripted([*answers, "ok"], sent, clock))
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(0 <= g <= c + 0.011 for g, c in zip(gaps, ceilings, strict=True))


async def test_permanent_errors_are_not_retried() -> None:
    """A 4xx refusal goes straight to the caller."""
    sent: list[float] = []
    async with VirtualClock().running() as clock:
        calls = make_calls(clock)
        with pytest.raises(PermanentError):
            await calls(scripted([PermanentError("bad prompt"), "ok"], sent, clock))
    assert len(sent) == 1


# --- the poll schedule -----------------------------------------------------------------------


async def poll_times(schedule: PollSchedule, ready_after: float) -> list[float]:
    """When ``schedule`` polls something that is ready ``ready_after`` seconds in."""
    polls: list[float] = []
    async with VirtualClock().running() as clock:

        async def check() -> str | None:
            polls.append(clock.now())
            return "done" if clock.now() >= ready_after else None

        await schedule.until(check, clock=clock, rng=random.Random(3))
    return polls


async def test_poll_schedule_starts_late_and_backs_off_to_the_maximum() -> None:
    """First poll near ``initial``, then waits growing 1.5× up to ``maximum`` (±10 % jitter)."""
    polls = await poll_times(PollSchedule(initial=5.0, maximum=30.0), ready_after=200.0)
    assert 4.5 <= polls[0] <= 5.5
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    nominal = [7.5, 11.25, 16.875, 25.3125] + [30.0] * (len(gaps) - 4)
    assert all(0.9 * n <= g <= 1.1 * n for g, n in zip(gaps, nominal, strict=True))


async def test_poll_schedule_with_zero_initial_still_backs_off() -> None:
    """poll_initial 0 (which the schema allows) never polls in a tight loop: over 60 s of
    virtual time a schedule capped at 5 s makes a few dozen polls, not thousands."""
    polls = await poll_times(PollSchedule(initial=0.0, maximum=5.0), ready_after=60.0)
    assert polls[0] == 0.0
    assert len(polls) < 40
    assert polls[-1] >= 60.0


# --- the budget ------------------------------------------------------------------------------


class Row:
    def __init__(self, key: str, status: JobStatus, credits: float) -> None:
        self.key, self.status, self.credits = key, status, credits


def test_budget_reserves_until_the_run_cap_and_refunds() -> None:
    """Reservations stop before the run cap; a refund makes room again; re-sends are free."""
    budget = Budget(run_cap=20)
    budget.reserve(Row("a", JobStatus.PENDING, 8))
    budget.reserve(Row("b", JobStatus.PENDING, 8))
    budget.reserve(Row("r", JobStatus.SUBMITTING, 8))  # paid for by an earlier run
    with pytest.raises(BudgetExceededError, match=r"this run to 24 credits.*cap of 20"):
        budget.reserve(Row("c", JobStatus.PENDING, 8))
    budget.refund(Row("b", JobStatus.PENDING, 8))
    budget.reserve(Row("c", JobStatus.PENDING, 8))
    assert budget.this_run == 16


def test_budget_total_cap_counts_what_was_charged_before() -> None:
    """The total cap counts earlier charges; refunding an earlier job lowers them."""
    budget = Budget(run_cap=100, total_cap=50, charged_before=40)
    with pytest.raises(BudgetExceededError, match=r"total to 52 credits.*max_total_credits 50"):
        budget.reserve(Row("a", JobStatus.PENDING, 12))
    budget.refund(Row("old", JobStatus.QUEUED, 10))  # an earlier generation failed
    budget.reserve(Row("a", JobStatus.PENDING, 12))
    assert budget.total == 42


def test_submission_order_sends_interrupted_jobs_first_and_limits_only_new_ones() -> None:
    """Jobs left mid-submit go first, whatever --limit says; then pending ones in order."""
    rows = [
        Row("p1", JobStatus.PENDING, 1),
        Row("s1", JobStatus.SUBMITTING, 1),
        Row("d1", JobStatus.DOWNLOADED, 1),
        Row("p2", JobStatus.PENDING, 1),
        Row("s2", JobStatus.SUBMITTING, 1),
    ]
    assert [r.key for r in submission_order(rows)] == ["s1", "s2", "p1", "p2"]
    assert [r.key for r in submission_order(rows, limit=1)] == ["s1", "s2", "p1"]


def test_dry_run_selection_is_the_runs_reservation() -> None:
    """Budget.select (the dry run) stops exactly where reserve (the run) would."""
    rows = [Row(f"j{i}", JobStatus.PENDING, 7) for i in range(6)]
    sent, stop = Budget(run_cap=20).select(rows)
    assert [r.key for r in sent] == ["j0", "j1"]
    assert stop is not None and "j2" in stop

"""Learned poll schedules (runner.engine.learning): the estimate from interval-censored polls,
the schedule built from it, and its bounds; pure functions, fake randomness, no clock."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.engine.learning import (
    DESCENT,
    LAG_FRACTION,
    LAG_GROWTH,
    MIN_HISTORY,
    Estimate,
    GenerationTimes,
    bounds,
    completion_detail,
    jittered,
    learned_times,
)
from runner.engine.polling import PollSchedule
from runner.ledger import SqliteLedger

SPEC_DEFAULT = PollSchedule(initial=5, maximum=30)


def polled(times: Iterator[float], finished: float) -> tuple[float, float, int]:
    """Poll at ``times`` a generation that finishes at ``finished``: (lower, upper, calls)."""
    lower = 0.0
    for calls, t in enumerate(times, 1):
        if t >= finished:
            return lower, t, calls
        lower = t
    raise AssertionError("unreachable")


def fallback_times(rng: random.Random) -> Iterator[float]:
    return itertools.accumulate(SPEC_DEFAULT.delays(rng))


def test_the_estimate_is_not_the_poll_schedule() -> None:
    """Generations of 51–69 s polled on the SPEC schedule (polls at ~40 and ~66 s) are seen
    done at ~66 s or later; the estimate from both bounds puts their median near 60 s, where
    the upper bounds alone would say ~66."""
    rng = random.Random(1)
    observed = [polled(fallback_times(rng), rng.uniform(51, 69))[:2] for _ in range(300)]
    estimate = Estimate.fit(observed)
    uppers = sorted(up for _, up in observed)
    assert uppers[150] > 65
    assert 56 <= estimate.quantile(0.5) <= 64
    assert estimate.cdf(40) < 0.05 and estimate.cdf(96) == 1.0


def test_narrow_intervals_give_the_distribution_back() -> None:
    """With polls every second, the estimate's quantiles are the generations' own."""
    rng = random.Random(2)
    times = sorted(rng.uniform(51, 69) for _ in range(400))
    estimate = Estimate.fit([(int(t), int(t) + 1.0) for t in times])
    for p in (0.1, 0.5, 0.9):
        assert estimate.quantile(p) == pytest.approx(51 + 18 * p, abs=1.5)


def test_learned_polls_cluster_where_generations_end() -> None:
    """On a learned estimate of 51–69 s generations, polls start past its low end, are a few
    seconds apart through its body (the first step at most LAG_FRACTION of the time elapsed,
    each next at most LAG_GROWTH times that share), and a generation takes at most 3 calls on
    average and is noticed a few seconds after it ends."""
    rng = random.Random(3)
    history = [(float(int(t)), int(t) + 1.0) for t in (rng.uniform(51, 69) for _ in range(200))]
    estimate = Estimate.fit(history)
    body = list(itertools.takewhile(lambda t: t < 70, learned_times(estimate, SPEC_DEFAULT)))
    assert 55 <= body[0] <= 62 and len(body) >= 3
    steps = enumerate(itertools.pairwise(body))
    assert all(0 < b - a <= LAG_FRACTION * LAG_GROWTH**k * a + 1e-9 for k, (a, b) in steps)
    assert body[1] - body[0] <= 6
    finishing = [rng.uniform(51, 69) for _ in range(500)]
    runs = [polled(learned_times(estimate, SPEC_DEFAULT), f) for f in finishing]
    assert sum(calls for *_, calls in runs) / len(runs) <= 3
    lags = [upper - f for (_, upper, _), f in zip(runs, finishing, strict=True)]
    assert sum(lags) / len(lags) <= 4 and max(lags) <= 0.1 * 69 + 1


def test_bounds_hold_and_past_the_tail_polls_back_off_to_poll_max() -> None:
    """poll_initial is the least first wait (±1 % jitter); after it no wait is over poll_max
    (±10 % jitter, as the fallback's);
    past the longest generation seen, waits grow to poll_max and stay there."""
    estimate = Estimate.fit([(0.5, 1.0)] * 10)
    limits = PollSchedule(initial=2, maximum=8)
    waits = list(itertools.islice(jittered(learned_times(estimate, limits), random.Random(5)), 30))
    assert 2 * 0.99 <= waits[0] <= 2 * 1.01
    assert all(w <= 8 * 1.1 for w in waits[1:])
    assert waits[1:5] == sorted(waits[1:5])
    assert all(w >= 8 * 0.9 for w in waits[-10:])


def test_details_carry_both_bounds() -> None:
    """The completed event's detail says both bounds; one without them (older runners) is
    taken as (0, the seconds between the ledger's events]."""
    assert bounds(99.0, completion_detail(54.125, 56.5)) == (54.12, 56.5)
    assert bounds(99.0, completion_detail(0.0, 56.5)) == (0.0, 56.5)
    assert "unfinished" not in completion_detail(0.0, 56.5)
    assert bounds(61.5, "generation completed") == (0.0, 61.5)


def test_without_enough_history_the_fallback_schedule_holds(tmp_path: Path) -> None:
    """Fewer than MIN_HISTORY generations of a shape: the waits are PollSchedule's own, to the
    jitter; other shapes' history does not count."""
    with SqliteLedger.open(tmp_path / "ledger.db") as ledger:
        times = GenerationTimes(ledger)
        request = {"type": "text-to-video", "duration": 5, "prompt": "a"}
        for _ in range(MIN_HISTORY):
            times.observe({**request, "duration": 10}, 50, 51)
        for _ in range(MIN_HISTORY - 1):
            times.observe(request, 50, 51)
        got = list(itertools.islice(times.delays(request, SPEC_DEFAULT, random.Random(6)), 8))
        want = list(itertools.islice(SPEC_DEFAULT.delays(random.Random(6)), 8))
        assert got == want
        times.observe({**request, "prompt": "another prompt, same shape"}, 50, 51)
        learned = next(iter(times.delays(request, SPEC_DEFAULT, random.Random(6))))
        assert 50 * 0.99 <= learned <= 51 * 1.01


REQUEST = {"type": "text-to-video"}


def first_poll(times: GenerationTimes) -> float:
    estimate = times.estimate(REQUEST)
    assert estimate is not None
    return next(learned_times(estimate, SPEC_DEFAULT))


def simulate(
    times: GenerationTimes,
    rng: random.Random,
    draw: Callable[[random.Random], float],
    generations: int,
    batch: int = 20,
) -> list[tuple[int, float, float]]:
    """``generations`` generations of ``draw``'s times, ``batch`` at once (each batch's
    schedules made before any of it finishes), polled on the jittered schedule ``times`` gives,
    each interval learned from: (calls, lag, time) of each generation learned about, in order.
    Generations scheduled before ``MIN_HISTORY`` had finished (the fallback's) are left out."""
    seen: list[tuple[int, float, float]] = []
    for _ in range(0, generations, batch):
        learned = times.estimate(REQUEST) is not None
        waits = [times.delays(REQUEST, SPEC_DEFAULT, rng) for _ in range(batch)]
        for wait in waits:
            finished = draw(rng)
            lower, upper, calls = polled(itertools.accumulate(wait), finished)
            times.observe(REQUEST, lower, upper)
            if learned:
                seen.append((calls, upper - finished, finished))
    return seen


def uniform(low: float, high: float) -> Callable[[random.Random], float]:
    return lambda rng: rng.uniform(low, high)


MOST_CALLS = 5  # polls per generation once learned: at most 4 steps into the body, and a probe


def test_a_steady_distribution_never_costs_a_generation_many_polls(tmp_path: Path) -> None:
    """For 30 seeds, 300 generations of 51–69 s, 20 at a time, each learned from as it is seen
    done: no generation scheduled from the history is polled more than MOST_CALLS times, the
    mean is under 3 calls, and the mean lag between finish and notice under 10 % of the time
    (the fallback schedule: 5.2 calls, lag 18 %)."""
    with SqliteLedger.open(tmp_path / "ledger.db") as ledger:
        runs = [
            simulate(GenerationTimes(ledger), random.Random(seed), uniform(51, 69), 300)
            for seed in range(30)
        ]
    seen = [s for run in runs for s in run]
    assert len(seen) == 30 * 280
    assert max(calls for calls, _, _ in seen) <= MOST_CALLS
    assert sum(calls for calls, _, _ in seen) / len(seen) <= 3
    assert sum(lag / t for _, lag, t in seen) / len(seen) <= 0.1


def fallback_calls(finished: float) -> int:
    """The calls the fallback schedule (unjittered) takes to see done a generation of
    ``finished`` seconds."""
    return polled(itertools.accumulate(SPEC_DEFAULT.delays(Unjittered())), finished)[2]


class Unjittered(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_change_of_speed_is_learned_within_a_few_batches(tmp_path: Path, factor: float) -> None:
    """For 30 seeds, 200 generations of 51–69 s and then 300 `factor` times as long. No
    generation is polled more than MOST_CALLS times, or, while generations run longer than any
    seen, more than one poll (a probe) over what the fallback schedule takes (past the longest
    seen, waits grow to poll_max as the fallback's do). Within a few batches the schedule has
    followed: the sixth batch of 20 takes under 3 calls on average, and the last 100
    generations have the steady state's calls and lag."""
    with SqliteLedger.open(tmp_path / "ledger.db") as ledger:
        runs = []
        for seed in range(30):
            times, rng = GenerationTimes(ledger), random.Random(seed)
            simulate(times, rng, uniform(51, 69), 200)
            runs.append(simulate(times, rng, uniform(51 * factor, 69 * factor), 300))
    for calls, _, t in (s for run in runs for s in run):
        assert calls <= max(MOST_CALLS, fallback_calls(1.1 * t) + 1)
    settled = [s for run in runs for s in run[-100:]]
    assert max(calls for calls, _, _ in settled) <= MOST_CALLS
    assert sum(calls for calls, _, _ in settled) / len(settled) <= 3
    assert sum(lag / t for _, lag, t in settled) / len(settled) <= 0.1
    sixth = [s for run in runs for s in run[100:120]]
    assert sum(calls for calls, _, _ in sixth) / len(sixth) <= 3
    assert sum(lag / t for _, lag, t in sixth) / len(sixth) <= 0.2


def test_faster_generations_move_the_first_poll_sooner_without_collapsing(
    tmp_path: Path,
) -> None:
    """Generations that got faster (51–69 s, now 20–30 s) are all done at the first poll, which
    can only say 'before then'. A batch of those does not throw the history away (the first
    poll stays within DESCENT of where it was); probes below the first poll find them, and
    within a few batches of 20 the first poll is where the new times begin."""
    rng = random.Random(4)
    with SqliteLedger.open(tmp_path / "ledger.db") as ledger:
        times = GenerationTimes(ledger)
        for t in (rng.uniform(51, 69) for _ in range(100)):
            times.observe(REQUEST, float(int(t)), int(t) + 1.0)
        before = first_poll(times)
        assert 55 <= before <= 62
        for _ in range(20):
            times.observe(REQUEST, 0.0, before)
        assert first_poll(times) >= DESCENT * before * 0.99
        simulate(times, rng, uniform(20, 30), 60)
        assert first_poll(times) < 0.6 * before
        simulate(times, rng, uniform(20, 30), 100)
        assert 18 <= first_poll(times) <= 30

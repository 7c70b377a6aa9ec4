"""Learned poll schedules (runner.engine.learning): the estimate from interval-censored polls,
the schedule built from it, and its bounds; pure functions, fake randomness, no clock."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.engine.learning import (
    FASTER_AFTER,
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
    seconds apart through its body, and a generation takes at most 3 calls on average and is
    noticed a few seconds after it ends."""
    rng = random.Random(3)
    history = [(float(int(t)), int(t) + 1.0) for t in (rng.uniform(51, 69) for _ in range(200))]
    estimate = Estimate.fit(history)
    body = list(itertools.takewhile(lambda t: t < 70, learned_times(estimate, SPEC_DEFAULT)))
    assert 55 <= body[0] <= 62 and len(body) >= 4
    assert all(0 < b - a <= 0.1 * a + 1e-9 for a, b in itertools.pairwise(body))
    finishing = [rng.uniform(51, 69) for _ in range(500)]
    runs = [polled(learned_times(estimate, SPEC_DEFAULT), f) for f in finishing]
    assert sum(calls for *_, calls in runs) / len(runs) <= 3
    lags = [upper - f for (_, upper, _), f in zip(runs, finishing, strict=True)]
    assert sum(lags) / len(lags) <= 4 and max(lags) <= 0.1 * 69 + 1


def test_faster_generations_move_the_first_poll_sooner(tmp_path: Path) -> None:
    """Generations that got faster (51–69 s, now 20–30 s) are all done at the first poll,
    which can only say 'before then'; after FASTER_AFTER of those in a row the older history
    is dropped, the next first poll comes much sooner, and the new times are learned."""
    rng = random.Random(4)
    request = {"type": "text-to-video"}
    with SqliteLedger.open(tmp_path / "ledger.db") as ledger:
        times = GenerationTimes(ledger)
        for t in (rng.uniform(51, 69) for _ in range(100)):
            times.observe(request, float(int(t)), int(t) + 1.0)

        def first_poll() -> float:
            estimate = times.estimate(request)
            assert estimate is not None
            return next(learned_times(estimate, SPEC_DEFAULT))

        before = first_poll()
        assert 55 <= before <= 62
        for _ in range(FASTER_AFTER - 1):
            times.observe(request, 0.0, before)
        assert first_poll() == pytest.approx(before, abs=2)  # nine in a row may be chance
        times.observe(request, 0.0, before)
        assert first_poll() < 0.5 * before
        for _ in range(40):
            estimate = times.estimate(request)
            assert estimate is not None
            lower, upper, _ = polled(learned_times(estimate, SPEC_DEFAULT), rng.uniform(20, 30))
            times.observe(request, lower, upper)
        assert 20 <= first_poll() <= 30


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

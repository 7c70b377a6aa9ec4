"""How long generations take, learned from the ledger's history, and where to poll (SPEC v2 §6).

What is observed. The runner never sees a generation finish: it sees a poll say "not yet" and
a later poll say "done". So each finished generation is an interval: it took more than
``lower`` (the last poll that found it unfinished, 0 when the first poll found it done) and at
most ``upper`` (the poll that found it done) seconds after its submit. Taking ``upper`` as the
time would learn the poll schedule instead of the provider (a generation polled at 30 s is
"30 s" however early it finished), and the schedule built from that would never poll sooner.
The completion event's detail records both bounds (:func:`completion_detail`); older events
without them count as ``(0, seconds between the accepted and completed events]``.

How it is estimated. The distribution that best explains the intervals is the Turnbull
nonparametric maximum-likelihood estimate, found by its self-consistency (EM) iteration on the
cells between the intervals' end points (rounded to ``GRAIN``, half a percent, so that a fit of
200 takes ~2 ms). Recent generations count more: an interval ``age`` generations older than the
newest of its shape weighs ``2 ** (-age / HALF_LIFE)``, and each step of the iteration
multiplies an interval's pull on its cells by its weight and divides by the weights' total
(the iteration starts from each interval's weight spread evenly along it, so that the many
short cells between the end points of a few wide intervals do not start with most mass). A
change of speed thus outweighs the older history within a few dozen generations, and no
history is ever dropped at once. Where in a cell its mass lies the intervals do not say; the
estimate puts it in the cell's last ``SPREAD`` (a tenth of its upper end), late rather than
early. Spread evenly from 0 instead, the mass of generations all done at their first poll,
``(0, first poll]``, put the next first poll at 0.4 of the last, and the polls after it walked
back up in steps of 10 %: 9 to 15 polls for a generation.

Faster generations. A generation done at its first poll says only that it took less, so the
estimate places it just under the first poll, where the older history has mass: by itself it
would never learn that generations got faster. Probes do. While the weighted share of
generations done at their first poll is over ``FIRST_QUANTILE`` + ``PROBE_MARGIN`` (the first
poll catches more than it should), ``PROBES`` of the generations are polled once more before
it, at ``DESCENT`` of it. Found done there, they put mass below the first poll, which steps
down by about ``DESCENT`` every batch or two until it meets the new times (a 3× speed-up is
followed in 3 to 5 batches of 20); when nothing got faster, a probe costs one poll.

Where to poll. The first poll is at the ``FIRST_QUANTILE`` of the estimate. The k-th poll
after it goes where a share ``1 - (1 - HAZARD) ** k`` of the generations still unfinished are
expected to be done, but at most ``LAG_FRACTION * LAG_GROWTH ** (k - 1)`` of the time elapsed
later and at least ``MIN_STEP_FRACTION * LAG_GROWTH ** (k - 1)`` of it (no more, though, than
reaches the longest time seen or ``LAG_FRACTION`` further, whichever is later). That is the
trade-off between polls and lag: most generations end by the second or third poll, which are
close (a lag of at most 10 %, then 20 %, of their time); a generation still unfinished after
several polls is one the estimate got wrong (its tail, or a change of speed), and for it each
further poll buys more waiting time: a wrong estimate costs lag rather than polls, at most 5
polls (one a probe) per generation of a steady 51–69 s against ~2 on average. Past the longest
time seen, or its last ``TAIL`` (a generation there is one the estimate barely expects), the
waits back off like the fallback schedule's, from ``LAG_FRACTION`` of the time elapsed up to
``poll_max``: close at first, since a generation at the body's edge lands there. ``poll_initial``
is the least first wait and ``poll_max`` the longest wait after it; with fewer than
``MIN_HISTORY`` generations of a shape (provider, model, type, duration, resolution), the
fallback schedule (``PollSchedule.delays``) is used as is.

Learned during a run. A fresh ledger's first generations poll on the fallback, and the run
learns from each that finishes. Once ``MIN_HISTORY`` of a shape have, the generations of that
shape still polling on the fallback change to the learned schedule from where they are: their
waits are cut short (``Waiting``), and each polls next where the learned schedule would after
its time so far. Without that, a generation the fallback just missed waited out a whole
fallback step (``poll_max`` at most) although the others had shown where it ends.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import random
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from runner.engine.clock import SYSTEM_CLOCK, Clock
from runner.engine.polling import JITTER, MIN_STEP, PollSchedule
from runner.ledger import Ledger

SHAPE_FIELDS = ("model", "type", "duration", "resolution")
MIN_HISTORY = 5  # generations of a shape before its schedule is learned
HISTORY = 200  # most recent generations of a shape that are learned from
FIRST_QUANTILE = 0.4  # the first poll: where this share of generations is done
HAZARD = 0.6  # each next poll: where this share of those unfinished is done, then more
LAG_FRACTION = 0.1  # the first step after the first poll: at most this share of the time
MIN_STEP_FRACTION = 0.03  # ... and at least this share
LAG_GROWTH = 2.0  # each further step: both shares twice the last's
HALF_LIFE = 25  # generations: one this many generations older than the newest weighs half
REFIT_SHARE = 16  # refitted when the history has grown by this share (12 of 200)
SPREAD = 0.1  # a cell's mass lies in its last tenth
PROBES = 0.25  # the share of generations polled once before the first poll, at DESCENT of it,
PROBE_MARGIN = 0.15  # while this much more than FIRST_QUANTILE were done at the first poll
DESCENT = 0.7
TAIL = 0.02  # past all but this share of the estimate, the waits back off as the fallback's
GRAIN = 0.005  # end points are rounded to 1/2 % of their time: ~60 cells from 51 to 69 s
EM_ROUNDS = 40
EM_TOLERANCE = 1e-5

_BOUNDS = re.compile(r"(?:unfinished at (?P<lower>[\d.]+) s, )?done by (?P<upper>[\d.]+) s")


def completion_detail(lower: float, upper: float) -> str:
    """The completed event's detail, carrying both bounds of the generation's time."""
    unfinished = f"unfinished at {lower:.2f} s, " if lower > 0 else ""
    return f"generation completed: {unfinished}done by {upper:.2f} s after its submit"


def bounds(seconds: float, detail: str | None) -> tuple[float, float]:
    """A generation's time as an interval, from its completed event (see the module doc)."""
    found = _BOUNDS.search(detail or "")
    if found is None:
        return (0.0, max(0.0, seconds))
    return (float(found["lower"] or 0.0), float(found["upper"]))


def shape_of(request: Mapping[str, Any]) -> tuple[Any, ...]:
    """The request fields that a generation's time depends on."""
    return tuple(request.get(name) for name in SHAPE_FIELDS)


@dataclass(frozen=True)
class Estimate:
    """A distribution of generation times: the cumulative mass at each end point."""

    points: tuple[float, ...]  # cell end points, ascending; points[0] is 0
    cumulative: tuple[float, ...]  # F at each point

    @classmethod
    def fit(
        cls, intervals: Sequence[tuple[float, float]], weights: Sequence[float] | None = None
    ) -> Estimate:
        """The Turnbull estimate from ``(lower, upper]`` intervals, each counting its weight
        (1 without ``weights``): the weighted self-consistency iteration."""
        weights = [1.0] * len(intervals) if weights is None else weights
        rounded = [(_rounded(lo), _rounded(max(lo, up))) for lo, up in intervals]
        points = sorted({0.0, *(x for pair in rounded for x in pair)})
        if len(points) == 1:
            points.append(MIN_STEP)
        cells = len(points) - 1
        pooled: dict[tuple[int, int], float] = {}  # cells first .. last-1: their weight
        for (lo, up), weight in zip(rounded, weights, strict=True):
            first = bisect.bisect_left(points, lo)
            span = (first, max(first + 1, bisect.bisect_left(points, up)))
            pooled[span] = pooled.get(span, 0.0) + weight
        spans, weights = list(pooled), list(pooled.values())
        whole = sum(weights) or 1.0
        density = [0.0] * (cells + 1)  # the start: each interval's weight even along it
        for (first, last), weight in zip(spans, weights, strict=True):
            density[first] += weight / (points[last] - points[first])
            density[last] -= weight / (points[last] - points[first])
        widths = [up - lo for lo, up in itertools.pairwise(points)]
        mass = [d * w / whole for d, w in zip(itertools.accumulate(density), widths, strict=False)]
        for _ in range(EM_ROUNDS):
            prefix = [0.0, *itertools.accumulate(mass)]
            pull = [0.0] * (cells + 1)
            for (first, last), weight in zip(spans, weights, strict=True):
                share = prefix[last] - prefix[first]
                if share > 0:
                    pull[first] += weight / share
                    pull[last] -= weight / share
            new = [m * p / whole for m, p in zip(mass, itertools.accumulate(pull), strict=False)]
            change = max(map(abs, map(operator.sub, mass, new)))
            mass = new
            if change < EM_TOLERANCE:
                break
        running = list(itertools.accumulate(mass))
        total = running[-1] or 1.0  # so that the last is 1.0 exactly
        ends, cumulative = [0.0], [0.0]
        for lo, up, below in zip(points, points[1:], running, strict=False):
            if lo < (1 - SPREAD) * up:  # a wide cell's mass lies in its top SPREAD (module doc)
                ends.append((1 - SPREAD) * up)
                cumulative.append(cumulative[-1])
            ends.append(up)
            cumulative.append(min(1.0, below / total))
        return cls(tuple(ends), tuple(cumulative))

    @property
    def last(self) -> float:
        """The longest time any generation may have taken."""
        return self.points[-1]

    def cdf(self, t: float) -> float:
        """The share of generations done ``t`` seconds after their submit."""
        if t >= self.last:
            return 1.0
        i = bisect.bisect_right(self.points, t)
        lo, hi = self.points[i - 1], self.points[i]
        f0, f1 = self.cumulative[i - 1], self.cumulative[i]
        return f0 + (f1 - f0) * (t - lo) / (hi - lo)

    def quantile(self, p: float) -> float:
        """The time by which a share ``p`` of generations is done."""
        i = bisect.bisect_left(self.cumulative, p)
        if i >= len(self.points):
            return self.last
        if i == 0:
            return self.points[0]
        f0, f1 = self.cumulative[i - 1], self.cumulative[i]
        lo, hi = self.points[i - 1], self.points[i]
        return lo + (hi - lo) * ((p - f0) / (f1 - f0) if f1 > f0 else 1.0)


def _rounded(seconds: float) -> float:
    """``seconds`` to the nearest of times ``GRAIN`` apart in ratio (0 stays 0)."""
    if seconds <= 0:
        return 0.0
    return math.exp(round(math.log(seconds) / GRAIN) * GRAIN)


def learned_times(
    estimate: Estimate, limits: PollSchedule, elapsed: float = 0.0, probe: bool = False
) -> Iterator[float]:
    """The poll times (seconds after the submit, before jitter) for ``estimate``; the first
    after ``elapsed`` (a generation found in flight is part way through). A ``probe`` is
    polled once more, before the first poll, at ``DESCENT`` of it."""
    t = max(limits.initial, estimate.quantile(FIRST_QUANTILE))
    if probe and elapsed < DESCENT * t and limits.initial <= DESCENT * t:
        yield DESCENT * t
    step, hazard, lag = 0.0, HAZARD, LAG_FRACTION
    while True:
        if t > elapsed:
            yield t
        done = estimate.cdf(t)
        if done < 1.0 - TAIL:
            target = estimate.quantile(done + hazard * (1.0 - done))
            least = lag * MIN_STEP_FRACTION / LAG_FRACTION * t
            least = min(least, max(estimate.last - t, LAG_FRACTION * t))
            step = max(min(target - t, lag * t, limits.maximum), least, MIN_STEP)
        else:  # past (almost) everything seen: back off as the fallback does
            step = min(limits.maximum, max(step * limits.growth, LAG_FRACTION * t, MIN_STEP))
        hazard, lag = 1.0 - (1.0 - hazard) * (1.0 - HAZARD), lag * LAG_GROWTH
        t += step


def jittered(times: Iterator[float], rng: random.Random, elapsed: float = 0.0) -> Iterator[float]:
    """Waits between ``times``, each jittered by ±``JITTER`` (the first, often a minute, by
    ±``JITTER``·``LAG_FRACTION``) so that jobs submitted together do not poll in step."""
    previous, spread = elapsed, JITTER * LAG_FRACTION
    for t in times:
        yield (t - previous) * rng.uniform(1 - spread, 1 + spread)
        previous, spread = t, JITTER


@dataclass(frozen=True)
class _Fit:
    added: int  # observations of the shape, ever, when fitted
    estimate: Estimate
    probes: float  # the share of generations to probe


class Waiting:
    """The fallback's waits of one shape's generations, cut short once it is learned."""

    def __init__(self) -> None:
        self.learned = False
        self._waits: dict[anyio.CancelScope, None] = {}  # in the order they began

    async def sleep(self, clock: Clock, seconds: float) -> bool:
        """Sleep ``seconds`` on ``clock``; True if cut short by ``learn``."""
        if self.learned:
            await clock.sleep(seconds)
            return False
        with anyio.CancelScope() as wait:
            self._waits[wait] = None
            try:
                await clock.sleep(seconds)
            finally:
                self._waits.pop(wait, None)
        return wait.cancelled_caught

    def learn(self) -> None:
        """The shape's schedule is learned: every wait on the fallback ends now."""
        if self.learned:
            return
        self.learned = True
        for wait in list(self._waits):
            wait.cancel()


@dataclass
class GenerationTimes:
    """What one executor knows of how long generations take: the ledger's history, read once
    per shape, and every generation this run sees finish."""

    ledger: Ledger
    clock: Clock = SYSTEM_CLOCK  # the run's, on which ``polls`` sleeps
    intervals: dict[tuple[Any, ...], list[tuple[float, float]]] = field(default_factory=dict)
    _fits: dict[tuple[Any, ...], _Fit] = field(default_factory=dict)
    _added: dict[tuple[Any, ...], int] = field(default_factory=dict)  # observations, ever
    _waiting: dict[tuple[Any, ...], Waiting] = field(default_factory=dict)

    def _history(self, request: Mapping[str, Any]) -> list[tuple[float, float]]:
        shape = shape_of(request)
        if shape not in self.intervals:
            wanted = dict(zip(SHAPE_FIELDS, shape, strict=True))
            past = self.ledger.generation_times(wanted, limit=HISTORY)
            self.intervals[shape] = [bounds(g.seconds, g.detail) for g in reversed(past)]
            self._added[shape] = len(past)
        return self.intervals[shape]

    def observe(self, request: Mapping[str, Any], lower: float, upper: float) -> None:
        """A generation of this request's shape was done by ``upper``, not by ``lower``."""
        seen = self._history(request)
        seen.append((lower, upper))
        self._added[shape_of(request)] += 1
        del seen[:-HISTORY]
        if len(seen) >= MIN_HISTORY:
            self.waiting(request).learn()

    def waiting(self, request: Mapping[str, Any]) -> Waiting:
        """The waits of this request's shape (see ``Waiting``)."""
        shape = shape_of(request)
        if shape not in self._waiting:
            self._waiting[shape] = Waiting()
        return self._waiting[shape]

    def estimate(self, request: Mapping[str, Any]) -> Estimate | None:
        """The learned distribution for this request's shape; ``None`` without enough history.
        Refitted when the history has grown by a sixteenth since the last fit (12 of 200; a
        fit of 200 takes ~2 ms of the event loop)."""
        seen = self._history(request)
        if len(seen) < MIN_HISTORY:
            return None
        shape = shape_of(request)
        fitted = self._fits.get(shape)
        added = self._added[shape]
        grown = added - fitted.added if fitted is not None else 0
        if fitted is None or grown >= max(1, min(fitted.added, HISTORY) // REFIT_SHARE):
            weights = [0.5 ** (age / HALF_LIFE) for age in range(len(seen) - 1, -1, -1)]
            first = sum(w for (lower, _), w in zip(seen, weights, strict=True) if lower == 0)
            probes = PROBES if first > (FIRST_QUANTILE + PROBE_MARGIN) * sum(weights) else 0.0
            fitted = _Fit(added, Estimate.fit(seen, weights), probes)
            self._fits[shape] = fitted
        return fitted.estimate

    def delays(
        self,
        request: Mapping[str, Any],
        schedule: PollSchedule,
        rng: random.Random,
        elapsed: float = 0.0,
    ) -> Iterator[float]:
        """The waits before each poll of a generation ``elapsed`` seconds after its submit."""
        estimate = self.estimate(request)
        if estimate is None:
            return schedule.delays(rng)
        probe = rng.random() < self._fits[shape_of(request)].probes
        return jittered(learned_times(estimate, schedule, elapsed, probe), rng, elapsed)

    def polls(
        self,
        request: Mapping[str, Any],
        schedule: PollSchedule,
        rng: random.Random,
        submitted: float,
    ) -> tuple[Iterator[float], Callable[[float], Awaitable[bool]] | None]:
        """For ``PollSchedule.until``: the waits of a generation submitted at ``submitted`` (on
        ``clock``), and, while they are the fallback's, a sleep cut short when the shape is
        learned (module doc); ``None``, a plain sleep, for a learned schedule."""

        def age() -> float:
            return self.clock.now() - submitted

        if self.estimate(request) is not None:
            return self.delays(request, schedule, rng, age()), None
        delays = self._until_learned(request, schedule, rng, age)
        return delays, functools.partial(self.waiting(request).sleep, self.clock)

    def _until_learned(
        self,
        request: Mapping[str, Any],
        schedule: PollSchedule,
        rng: random.Random,
        age: Callable[[], float],
    ) -> Iterator[float]:
        """The fallback's waits until the shape is learned, then the learned schedule's from
        the generation's ``age`` then."""
        for delay in schedule.delays(rng):
            if self.estimate(request) is not None:
                break
            yield delay
        yield from self.delays(request, schedule, rng, age())

"""When each generation of an account starts running: the platform's account queue.

A generation is ready to run ``latency * QUEUE_FRACTION`` after its submit (its own time in
the provider's queue) and then runs for the rest of its latency. Without a slot limit it starts
the moment it is ready. With one (``queue_limit`` set), at most ``slots`` generations of the
account run at once and the others wait ``queued``, first come first started: a generation
starts when it is ready, a slot is free and every one submitted before it has started.

Start times are decided lazily, up to the clock's ``now`` (no background task): everything
that decides them (ready times, run times, cancellations of waiting generations) is known by
then, so deciding late gives the same instants as deciding on time.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol


class Schedulable(Protocol):
    """What the queue needs of a generation."""

    @property
    def ready_at(self) -> float: ...

    @property
    def finished_at(self) -> float | None: ...

    def start(self, at: float) -> None: ...


@dataclass
class AccountQueue:
    """One account's running slots and waiting line (``slots=None``: no limit)."""

    slots: int | None
    waiting: deque[Schedulable] = field(default_factory=deque)
    max_running: int = 0
    _ends: list[float] = field(default_factory=list)  # min-heap: finish times of those started
    _last_start: float = float("-inf")

    def add(self, generation: Schedulable) -> None:
        """A new generation: started at once without a limit, else queued behind the others."""
        if self.slots is None:
            generation.start(generation.ready_at)
        else:
            self.waiting.append(generation)

    def advance(self, now: float) -> None:
        """Start every waiting generation whose start instant is at or before ``now``."""
        if self.slots is None:
            return
        ends = self._ends
        while self.waiting:
            head = self.waiting[0]
            # First come, first started: never before the one ahead of it.
            at = max(head.ready_at, self._last_start)
            if at > now:
                return
            _drop_until(ends, at)
            if len(ends) >= self.slots:
                at = ends[0]  # the earliest running generation to finish frees the slot
                if at > now:
                    return
                _drop_until(ends, at)
            self.waiting.popleft()
            head.start(at)
            finished = head.finished_at
            assert finished is not None
            heapq.heappush(ends, finished)
            self._last_start = at
            self.max_running = max(self.max_running, len(ends))

    def cancel(self, generation: Schedulable) -> None:
        """Take a waiting generation out of the line (it never runs)."""
        self.waiting.remove(generation)

    def running(self, now: float) -> int:
        """How many started generations are still running at ``now`` (after ``advance``)."""
        return sum(1 for end in self._ends if end > now)


def _drop_until(ends: list[float], instant: float) -> None:
    """Pop finish times at or before ``instant``: those slots are free by then."""
    while ends and ends[0] <= instant:
        heapq.heappop(ends)

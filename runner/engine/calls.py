"""The one policy every provider call follows (generations, souls, uploads alike).

- each call takes a turn from the run's ``Throttle`` (rate, and Retry-After pauses);
- throttling answers (``ThrottledError``) are backpressure: they use no attempt; a Retry-After
  pauses every caller, without one only this caller backs off;
- transient errors are retried with full-jitter backoff, counting attempts from what the
  caller says were already used (a job's attempts persist across runs), until ``max_attempts``:
  then ``ExhaustedError`` carries the last error;
- a Retry-After on a transient answer (a 503) pauses every caller too;
- a Retry-After longer than ``MAX_PAUSE`` is cut to it (with a warning), and a call throttled
  for longer than ``throttle_ceiling`` in all gives up with ``DeadlineError``: a run always ends;
- the call runs inside a shield, so a first Ctrl-C lets it finish and record its answer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from runner.engine.clock import Clock
from runner.engine.throttle import MAX_PAUSE, Backoff, Throttle, retry_wait
from runner.errors import DeadlineError, ExhaustedError, ThrottledError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long one call may be held back by throttling answers before it gives up (seconds).
THROTTLE_CEILING = 3600.0


class Shields:
    """The cancel scopes that protect calls under way: a first Ctrl-C leaves them alone, a
    second one (:meth:`drop`) cancels them too."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A provider call and the ledger write that records it: not cut by a first Ctrl-C."""
        with anyio.CancelScope(shield=True) as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)

    def drop(self) -> None:
        """Cancel every call under way."""
        for scope in list(self._scopes):
            scope.shield = False
            scope.cancel()


@dataclass
class Calls:
    """Runs provider calls under the policy above. One per run, shared by every caller."""

    throttle: Throttle
    clock: Clock
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random)
    shields: Shields = field(default_factory=Shields)
    # told of every throttling answer (progress counters, adaptive concurrency)
    on_throttled: Callable[[ThrottledError], None] | None = None
    # told of every transient failure that will be retried (progress counters)
    on_retry: Callable[[TransientError], None] | None = None
    throttle_ceiling: float = THROTTLE_CEILING

    async def __call__(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        used: int = 0,
        count: Callable[[TransientError, int], None] | None = None,
        throttled: Callable[[ThrottledError], None] | None = None,
        rate: bool = True,
    ) -> T:
        """Run ``fn`` until it returns, a non-transient error escapes, or attempts run out.

        ``used`` attempts were spent before (in earlier runs); ``count(err, attempts)`` is told
        of each transient failure with the new total, before the policy decides whether to try
        again (the executor records it in the ledger); ``throttled(err)`` of each throttling
        answer. ``rate=False`` skips the throttle (for downloads, which are not API calls).
        """
        attempts = used
        throttles = 0
        started = self.clock.now()
        while True:
            if rate:
                await self.throttle.wait_turn()
            try:
                with self.shields.critical():
                    return await fn()
            except ThrottledError as err:
                throttles += 1
                if throttled is not None:
                    throttled(err)
                held = self.clock.now() - started
                if held >= self.throttle_ceiling:
                    if err.retry_after is not None:  # this caller gives up; the others wait
                        self._pause(err.retry_after)
                    raise DeadlineError(
                        f"throttled for {held:.0f}s ({throttles} times; last: {err.message})"
                    ) from err
                await self._throttled(err, throttles)
            except TransientError as err:
                if err.retry_after is not None:
                    self._pause(err.retry_after)
                attempts += 1
                if count is not None:
                    count(err, attempts)
                if attempts >= self.max_attempts:
                    raise ExhaustedError(err, attempts) from err
                if self.on_retry is not None:
                    self.on_retry(err)
                await self.clock.sleep(self.backoff.delay(attempts, self.rng))

    async def _throttled(self, err: ThrottledError, throttles: int) -> None:
        if self.on_throttled is not None:
            self.on_throttled(err)
        if err.retry_after is not None:
            self._pause(err.retry_after)
            return
        wait = retry_wait(None, throttles, self.backoff)
        log.info("throttled (%s); waiting %.1fs", err.message, wait)
        await self.clock.sleep(wait)

    def _pause(self, retry_after: float) -> None:
        """A Retry-After holds every caller; one past ``MAX_PAUSE`` is cut to it, saying so."""
        wait = retry_wait(retry_after, 1, self.backoff)
        if wait < retry_after:
            log.warning(
                "the provider asked to pause for %.0fs; pausing %.0fs (the most the runner waits)",
                retry_after,
                MAX_PAUSE,
            )
        else:
            log.info("pausing every call for %.1fs (Retry-After)", wait)
        self.throttle.pause(wait)

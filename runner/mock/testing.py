"""Facts about the mock that tests and benchmarks share: its test keys, the in-process origin,
a preset that finishes at once, and a hand-moved clock.

Nothing here builds a product object (no provider, no executor): the mock imports nothing from
the product. Wiring product code to the mock is the tests' job (``tests/support.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runner.mock.options import DEFAULT_PLATFORM_KEYS, DEFAULT_SEED_KEYS, MockOptions

# Loopback, so download policies that allow the provider's own loopback base URL accept it;
# through ASGITransport no socket is ever opened.
IN_PROCESS_ORIGIN = "http://127.0.0.1"
MOCK_ENV: Mapping[str, str] = {
    "HIGGSFIELD_API_KEY": DEFAULT_SEED_KEYS[0],
    "HF_KEY": DEFAULT_PLATFORM_KEYS[0],
}
"""Credential variables (SPEC §2) holding keys the mock accepts, one per dialect."""
INSTANT = MockOptions(latency_min=0.0, latency_max=0.0, soul_training_seconds=0.0, seed=1)
"""Generations and souls finish at once: for tests that must not wait on a real clock."""


@dataclass
class FakeClock:
    """A clock tests move by hand: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds

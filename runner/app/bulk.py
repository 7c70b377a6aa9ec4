"""Pausing cyclic garbage collection while a step builds many objects (a module of its own:
``validate`` needs it without what the rest of ``runner.app.common`` imports)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk() -> Iterator[None]:
    """Cyclic garbage collection paused while a step builds the many objects that live on
    through it (100,000 jobs, rows, cards): each full collection would walk them all, a fifth
    of such a step. They hold no cycles; collection resumes after, if it was on. Only around
    work on one thread (a run's start and end, not the engine)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

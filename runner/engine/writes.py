"""Status changes made together on the event loop, committed together (group commit).

At a thousand generations in flight, many jobs change status in the same turn of the event
loop (a burst of answers arrives together). Committing each in a transaction of its own
costs a transaction each; here the first change of a turn waits for that turn to end, then
commits every change made meanwhile in one transaction (``Ledger.transition_many``).

Crash safety is unchanged: ``transition`` returns only once its change is committed, so
whatever its caller does next (the POST after ``submitting``, taking a generation as
accepted after ``queued``, counting a video after ``downloaded``) happens after the change
is durable, exactly as with ``Ledger.transition``. The wait is shielded, like the synchronous
call it replaces: a change handed over is committed and returned, whatever is cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from runner.ledger import JobRow, JobStatus, Ledger
from runner.ledger.models import Transition


@dataclass
class _Change:
    transition: Transition
    row: JobRow | None = None
    error: Exception | None = None


@dataclass
class GroupCommit:
    """``Ledger.transition`` for tasks on one event loop, batched per loop turn."""

    ledger: Ledger
    commits: int = 0  # transactions written (for tests and benchmarks)
    changes: int = 0  # status changes written
    _pending: list[_Change] = field(default_factory=list)
    _done: anyio.Event | None = None  # set once the batch being gathered is committed

    async def transition(
        self, key: str, to: JobStatus, *, detail: str | None = None, **columns: Any
    ) -> JobRow:
        """Move a job as ``Ledger.transition`` does; returns once the change is committed."""
        change = _Change(Transition(key, to, detail, columns))
        self._pending.append(change)
        with anyio.CancelScope(shield=True):
            if self._done is None:  # the first change of this turn commits the batch
                self._done = done = anyio.Event()
                try:
                    await anyio.sleep(0)  # the rest of this turn's changes join the batch
                finally:
                    try:
                        self._commit()
                    finally:
                        done.set()  # never leaves a waiter behind
            else:
                await self._done.wait()
        if change.error is not None:
            raise change.error
        assert change.row is not None
        return change.row

    def _commit(self) -> None:
        batch, self._pending, self._done = self._pending, [], None
        try:
            rows = self.ledger.transition_many([c.transition for c in batch])
            self.commits += 1
        except Exception:
            # One refused change must not take the others with it: each on its own, and
            # each caller gets its own answer (a database error reaches every caller).
            for change in batch:
                t = change.transition
                try:
                    change.row = self.ledger.transition(
                        t.key, t.to, detail=t.detail, **dict(t.columns)
                    )
                    self.commits += 1
                except Exception as err:  # its caller raises it, as Ledger.transition would
                    change.error = err
            self.changes += sum(c.row is not None for c in batch)
            return
        for change, row in zip(batch, rows, strict=True):
            change.row = row
        self.changes += len(batch)

"""One executing process per SQLite ledger: an ``flock`` on ``runner.lock`` beside the file.

``flock`` rather than a pid file: the kernel releases it when the holder dies, however it dies,
so a crashed or SIGKILLed run never leaves a stale lock behind. The pid and start time written
into the file only serve the message a second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from runner.errors import LedgerLockedError
from runner.ledger.base import utcnow

LOCK_FILE = "runner.lock"


class ExecutorLock:
    """Context manager held by the process that executes jobs against a state directory.

    A second holder, in this process or another, gets ``LedgerLockedError`` naming the pid
    and start time of the first. Read-only commands never take it.
    """

    def __init__(self, state_dir: str | Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._clock = clock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``LedgerLockedError`` at once (never waits)."""
        if self._fd is not None:
            raise LedgerLockedError(f"{self.path} is already held by this lock object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_all(fd))
            os.close(fd)
            raise LedgerLockedError(
                f"another run is executing jobs against {self.path.parent}: "
                f"{self.path} is held by {holder}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        since = self._clock().astimezone(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "since": since}) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # so nobody reads a finished run's pid as the holder
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> ExecutorLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_all(fd: int) -> str:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 4096, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _describe(content: str) -> str:
    try:
        info = json.loads(content)
        return f"pid {int(info['pid'])} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        # The holder may be between taking the lock and writing its pid.
        return "another process"

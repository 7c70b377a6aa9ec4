"""What every ledger implementation does the same way around its store: opening state,
closing, use as a context manager, its repr. The implementations add the tables."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar


class StoreLike(Protocol):
    """The part of an implementation's store this shell needs."""

    @property
    def readonly(self) -> bool: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=StoreLike)


class LedgerShell(ABC, Generic[S]):
    """A ledger around one store (a SQLite file, a PostgreSQL connection)."""

    def __init__(self, store: S) -> None:
        self._store = store
        self._id: str | None = None  # the ledger's own id, read once

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the ledger lives, for messages (never holds a password)."""

    @property
    def readonly(self) -> bool:
        """Whether the ledger was opened read-only."""
        return self._store.readonly

    def close(self) -> None:
        """Close the connection. The ledger cannot be used afterwards."""
        self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "read-write"
        return f"<{type(self).__name__} {self.url} {mode}>"

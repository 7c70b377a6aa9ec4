"""Packages whose exported names are imported from their modules when first asked for.

``runner.app`` and ``runner.engine`` export many names; importing every module behind them
costs a command that needs one name (the report's ``charged``) the executor, asyncio, httpx
and every use case. :func:`exports` gives such a package a PEP 562 ``__getattr__`` instead:
``from runner.engine import charged`` imports ``runner.engine.budget`` alone. A name that is
also a submodule's (``runner.app.run``, the function, and ``runner/app/run.py``) stays the
exported name, as when the package imported everything: importing the submodule does not
replace it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


class _Package(types.ModuleType):
    """A package module whose exported names win over its submodules of the same name."""

    _exported: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system sets each submodule it loads on its package; keep the exported
        # name instead (the submodule stays in sys.modules).
        if name in self._exported and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def exports(
    package: str, homes: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose ``homes`` map each module
    (by its full name) to the names it exports through the package."""
    module = sys.modules[package]
    where = {name: home for home, names in homes.items() for name in names}
    module.__class__ = _Package
    module._exported = frozenset(where)  # type: ignore[attr-defined]

    def __getattr__(name: str) -> Any:
        home = where.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # __import__ rather than importlib.import_module: the same import, but seen by
        # `python -X importtime` (which reports only imports made through the interpreter's own
        # path), so a command's import cost can be measured whole.
        __import__(home)
        value = getattr(sys.modules[home], name)
        vars(module)[name] = value  # asked once: later look-ups find it without this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *where})

    return __getattr__, __dir__

"""The engine: drives a manifest's jobs from the ledger to the provider and the output store.

``executor`` schedules; ``calls`` is the one policy for provider calls; ``polling`` the one
poll schedule; ``budget`` the money rules; ``souls`` trains identity models; ``throttle`` the
rate gate and adaptive concurrency; ``clock`` the injectable time they all read.

Each name is imported from its module when first asked for (PEP 562), so a command that needs
only ``charged`` does not import the executor, asyncio and httpx with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.lazy import exports

if TYPE_CHECKING:
    from runner.engine.budget import Budget, charged, charged_credits, submission_order
    from runner.engine.calls import Calls, Shields
    from runner.engine.clock import SYSTEM_CLOCK, Clock, SystemClock, VirtualClock
    from runner.engine.executor import Executor
    from runner.engine.polling import PollSchedule
    from runner.engine.progress import Outcome, Progress
    from runner.engine.settings import EngineSettings
    from runner.engine.throttle import AdaptiveSlots, Backoff, Throttle, retry_wait

# Each module → the names it exports through this package.
_HOMES = {
    "runner.engine.budget": ("Budget", "charged", "charged_credits", "submission_order"),
    "runner.engine.calls": ("Calls", "Shields"),
    "runner.engine.clock": ("SYSTEM_CLOCK", "Clock", "SystemClock", "VirtualClock"),
    "runner.engine.executor": ("Executor",),
    "runner.engine.polling": ("PollSchedule",),
    "runner.engine.progress": ("Outcome", "Progress"),
    "runner.engine.settings": ("EngineSettings",),
    "runner.engine.throttle": ("AdaptiveSlots", "Backoff", "Throttle", "retry_wait"),
}

__all__ = [
    "SYSTEM_CLOCK",
    "AdaptiveSlots",
    "Backoff",
    "Budget",
    "Calls",
    "Clock",
    "EngineSettings",
    "Executor",
    "Outcome",
    "PollSchedule",
    "Progress",
    "Shields",
    "SystemClock",
    "Throttle",
    "VirtualClock",
    "charged",
    "charged_credits",
    "retry_wait",
    "submission_order",
]


__getattr__, __dir__ = exports(__name__, _HOMES)

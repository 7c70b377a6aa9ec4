"""The engine: drives a manifest's jobs from the ledger to the provider and the output store.

``executor`` schedules; ``calls`` is the one policy for provider calls; ``polling`` the one
poll schedule; ``budget`` the money rules; ``souls`` trains identity models; ``throttle`` the
rate gate and adaptive concurrency; ``clock`` the injectable time they all read.
"""

from __future__ import annotations

from runner.engine.budget import Budget, charged, charged_credits, submission_order
from runner.engine.calls import Calls, Shields
from runner.engine.clock import SYSTEM_CLOCK, Clock, SystemClock, VirtualClock
from runner.engine.executor import Executor
from runner.engine.polling import PollSchedule
from runner.engine.progress import Outcome, Progress
from runner.engine.settings import EngineSettings
from runner.engine.throttle import AdaptiveSlots, Backoff, Throttle, retry_wait

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

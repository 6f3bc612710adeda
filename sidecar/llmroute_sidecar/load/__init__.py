"""Load control in the sidecar: per-backend concurrency limits with prioritised bounded queues
(``limiter``, ``registry``), request coalescing by ``Idempotency-Key`` (``coalesce``), and their
metrics (``metrics``). The attempt loop (``attempts.py``) enters a :class:`Gate` before each upstream
attempt; ``service.py`` owns the :class:`LoadLimits` and the :class:`Coalescer`.
"""

from __future__ import annotations

from .coalesce import Coalescer, fingerprint
from .limiter import BATCH_TIER, PREMIUM_TIERS, BackendLimiter, Priority, Saturated, Slot, priority_for
from .metrics import LoadMetrics
from .overload import overloaded_error
from .registry import Gate, LoadLimits, LoadSettings

__all__ = [
    "BATCH_TIER",
    "PREMIUM_TIERS",
    "BackendLimiter",
    "Coalescer",
    "Gate",
    "LoadLimits",
    "LoadMetrics",
    "LoadSettings",
    "Priority",
    "Saturated",
    "Slot",
    "fingerprint",
    "overloaded_error",
    "priority_for",
]

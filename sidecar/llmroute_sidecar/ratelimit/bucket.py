"""Token-bucket arithmetic shared by the in-process and the Redis buckets: pure functions, no clock.

A bucket's capacity is its per-minute amount and it refills continuously at ``capacity / 60`` per
second, so an idle bucket allows a burst of one minute's worth and a busy one a steady rate. The
level may go below zero (debt) when :func:`settle` charges more tokens than were estimated at
admission; later requests then wait until the debt is paid back. Refunds never lift a bucket above
its capacity.

An admission asks every bucket of a route at once (:func:`admit_all`): all have room, and all are
charged, or none is touched. A single request larger than a bucket's capacity could never fit, so
it only needs a *full* bucket and then takes it into debt for the excess, rather than being refused
forever. ``redis_buckets.py`` runs the same rules in Lua; ``local.py`` calls these directly; the
limiter (``limiter.py``) reads levels back through :func:`wait` and :func:`until_full`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Charge",
    "Outcome",
    "admit_all",
    "need",
    "per_second",
    "refill",
    "remaining",
    "settle",
    "until_full",
    "wait",
]


@dataclass(frozen=True)
class Charge:
    """One bucket's part in an admission or a settlement: ``amount`` to take (or, when settling,
    the correction to add; negative is a refund)."""

    key: str
    capacity: int
    amount: int


@dataclass(frozen=True)
class Outcome:
    """What a store decided: whether it admitted, and each bucket's level afterwards, in order."""

    allowed: bool
    levels: tuple[float, ...]


def per_second(capacity: int) -> float:
    return capacity / 60.0


def refill(level: float, elapsed: float, capacity: int) -> float:
    """The level ``elapsed`` seconds later; a clock that went backwards refills nothing."""
    return min(float(capacity), level + max(0.0, elapsed) * per_second(capacity))


def need(amount: int, capacity: int) -> float:
    """The level a bucket must have to admit ``amount`` (at most its capacity, see above)."""
    return float(min(amount, capacity))


def wait(level: float, amount: int, capacity: int) -> float:
    """Seconds until a bucket at ``level`` could admit ``amount``; 0 if it can now."""
    missing = need(amount, capacity) - level
    return missing / per_second(capacity) if missing > 0 else 0.0


def until_full(level: float, capacity: int) -> float:
    """Seconds until a bucket at ``level`` is full again (OpenAI's ``x-ratelimit-reset-*``)."""
    missing = capacity - level
    return missing / per_second(capacity) if missing > 0 else 0.0


def remaining(level: float) -> int:
    """Whole units left in a bucket (never negative: debt shows as 0)."""
    return max(0, math.floor(level + 1e-9))


def admit_all(levels: Sequence[float], charges: Sequence[Charge]) -> Outcome:
    """All-or-nothing admission over buckets already refilled to now."""
    if all(level >= need(c.amount, c.capacity) for level, c in zip(levels, charges, strict=True)):
        return Outcome(True, tuple(level - c.amount for level, c in zip(levels, charges, strict=True)))
    return Outcome(False, tuple(levels))


def settle(level: float, correction: int, capacity: int) -> float:
    """A bucket after charging ``correction`` more (or refunding, if negative), capped at capacity."""
    return min(float(capacity), level - correction)

"""In-process buckets: the store when no Redis is configured, and the fallback while Redis is down.

Limits kept here hold per sidecar, not across the replicas of a workload. The number of buckets is
bounded (``max_keys``, least recently used forgotten first): a forgotten bucket comes back full,
which is what it would have refilled to if it had been idle long enough, so eviction can only be
generous, never refuse a request a kept bucket would have admitted. Buckets that refill to full are
dropped early too, for the same reason. Neighbours: ``bucket.py`` (the arithmetic), ``limiter.py``
(the caller), ``redis_buckets.py`` (the shared counterpart with the same two operations).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from . import bucket
from .bucket import Charge, Outcome

__all__ = ["LocalBuckets"]


class LocalBuckets:
    """Bucket levels by key, with the time each level was read at (the injected ``clock``)."""

    def __init__(self, *, clock: Callable[[], float], max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be 1 or more, not {max_keys}")
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (level, stamp)

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, charges: Sequence[Charge]) -> Outcome:
        now = self._clock()
        outcome = bucket.admit_all([self._level(c, now) for c in charges], charges)
        if outcome.allowed:
            for charge, level in zip(charges, outcome.levels, strict=True):
                self._store(charge, level, now)
        return outcome

    def settle(self, charges: Sequence[Charge]) -> None:
        now = self._clock()
        for charge in charges:
            self._store(charge, bucket.settle(self._level(charge, now), charge.amount, charge.capacity), now)

    def _level(self, charge: Charge, now: float) -> float:
        found = self._buckets.get(charge.key)
        if found is None:
            return float(charge.capacity)
        self._buckets.move_to_end(charge.key)  # in use, even when it refuses
        level, stamp = found
        return bucket.refill(level, now - stamp, charge.capacity)

    def _store(self, charge: Charge, level: float, now: float) -> None:
        if level >= charge.capacity:
            self._buckets.pop(charge.key, None)  # full is the same as absent
            return
        self._buckets[charge.key] = (level, now)
        self._buckets.move_to_end(charge.key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

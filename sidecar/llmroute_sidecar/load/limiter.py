"""Per-backend concurrency limit with a bounded, prioritised wait queue (``maxConcurrency``).

One :class:`BackendLimiter` guards one backend on this sidecar. A request takes a :class:`Slot`
before its upstream attempt and gives it back when the attempt ends (a stream keeps it until the
stream ends). When every slot is taken the request waits in a short queue; premium requests are
served before standard ones whenever a slot frees, and batch lines only when no interactive
request waits. Within a class the queue is fair between
tenants: each tenant's requests wait in their own FIFO and the tenants take turns, one request each
(round robin by request), so one tenant's burst cannot starve another tenant's single request. When the queue is full the limiter refuses at
once with :class:`Saturated`, which the attempt loop (``attempts.py``) reads as "try the next
candidate" and the service turns into a quick 429 when every candidate is saturated: a burst gets a
fast, honest answer instead of a long hang.

Pure asyncio, no sockets, no config types: ``registry.py`` maps backends onto limiters and applies
config swaps; ``metrics.py`` supplies the observer. Cancellation-safe: a waiter cancelled at any
point, even just after a slot was handed to it, never leaks that slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

from ..adapters.errors import ErrorKind, ProviderError

__all__ = [
    "BATCH_TIER",
    "PREMIUM_TIERS",
    "BackendLimiter",
    "LimiterObserver",
    "Priority",
    "Saturated",
    "Slot",
    "priority_for",
]

#: ``x-llmroute-tier`` values (case-insensitive) served before everything else when a slot frees.
PREMIUM_TIERS = frozenset({"premium", "priority", "critical"})

# Starting guess of how long a slot is held, before any slot has been released (for Retry-After).
_INITIAL_HOLD_S = 1.0
_HOLD_SMOOTHING = 0.2


class Priority(IntEnum):
    """Queue classes, most urgent first (the value is the queue's index)."""

    PREMIUM = 0
    STANDARD = 1
    BATCH = 2  # lines of a batch job (batch/worker.py): served only when no interactive request waits

    @property
    def label(self) -> str:
        return self.name.lower()


#: The tier the batch worker gives its lines; an app's ``x-llmroute-tier: batch`` asks for the same.
BATCH_TIER = "batch"


def priority_for(tier: str) -> Priority:
    """The queue class of a request from its ``x-llmroute-tier`` header."""
    tier = tier.strip().lower()
    if tier in PREMIUM_TIERS:
        return Priority.PREMIUM
    return Priority.BATCH if tier == BATCH_TIER else Priority.STANDARD


class Saturated(ProviderError):
    """A backend had no slot for this request: its queue was full, the wait ran out, or a premium
    request took the place. Not an upstream failure: nothing was sent, no breaker should count it."""

    def __init__(self, backend: str, reason: str, detail: str, retry_after: float) -> None:
        super().__init__(
            ErrorKind.OVERLOADED,
            f"backend {backend} is saturated on this sidecar ({reason.replace('_', ' ')}: {detail})",
            retry_after=retry_after,
            provider="llmroute",
        )
        self.backend = backend
        self.reason = reason


class LimiterObserver(Protocol):
    """Where a limiter reports events (``metrics.BackendObserver`` in the sidecar); its state (in
    flight, queued) is read from the limiter itself when metrics are scraped."""

    def waited(self, priority: Priority, seconds: float) -> None: ...
    def rejected(self, priority: Priority, reason: str) -> None: ...


class Slot:
    """Permission for one upstream request; :meth:`release` is idempotent and never raises."""

    __slots__ = ("_limiter", "acquired_at", "waited")

    def __init__(self, limiter: BackendLimiter, acquired_at: float, waited: float) -> None:
        self._limiter: BackendLimiter | None = limiter
        self.acquired_at = acquired_at
        self.waited = waited

    @property
    def held(self) -> bool:
        return self._limiter is not None

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self)


_QUEUED, _GRANTED, _GONE = 0, 1, 2


class _Waiter:
    __slots__ = ("enqueued", "future", "priority", "slot", "state", "tenant")

    def __init__(
        self, future: asyncio.Future[Slot], priority: Priority, enqueued: float, tenant: str = ""
    ) -> None:
        self.future = future
        self.priority = priority
        self.enqueued = enqueued
        self.tenant = tenant
        self.state = _QUEUED
        self.slot: Slot | None = None


class _FairQueue:
    """The waiters of one priority class: FIFO per tenant, tenants served in turn.

    ``_ring`` is ordered by whose turn is next; a tenant that is served goes to the back, a tenant
    with nobody left waiting leaves the ring (and joins at the back when it queues again). Waiters
    leave their tenant's deque lazily (cancelled or displaced ones are skipped when popped);
    ``_live`` holds the live number per tenant, so a tenant in the ring always has one.
    """

    __slots__ = ("_live", "_ring")

    def __init__(self) -> None:
        self._ring: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self._live: dict[str, int] = {}

    def push(self, waiter: _Waiter) -> None:
        self._ring.setdefault(waiter.tenant, deque()).append(waiter)
        self._live[waiter.tenant] = self._live.get(waiter.tenant, 0) + 1

    def pop(self) -> _Waiter | None:
        """The oldest live waiter of the tenant whose turn it is."""
        while self._ring:
            tenant, queue = next(iter(self._ring.items()))
            while queue:
                waiter = queue.popleft()
                if waiter.state == _QUEUED:
                    self.forget(waiter)
                    if tenant in self._ring:
                        self._ring.move_to_end(tenant)
                    return waiter
            self._live.pop(tenant, None)  # counts and deques disagree: cannot happen, but never spin
            del self._ring[tenant]
        return None

    def forget(self, waiter: _Waiter) -> None:
        """``waiter`` no longer waits (served, abandoned, displaced)."""
        tenant = waiter.tenant
        left = self._live.get(tenant, 0) - 1
        if left <= 0:
            self._live.pop(tenant, None)
            self._ring.pop(tenant, None)
            return
        self._live[tenant] = left
        queue = self._ring[tenant]
        if len(queue) > 2 * left + 32:
            live = [w for w in queue if w.state == _QUEUED]
            queue.clear()
            queue.extend(live)

    def newest_of_busiest(self) -> _Waiter | None:
        """Whom to turn away for a premium request: the newest waiter of the tenant with the most
        waiting, so displacement, too, falls on the burst rather than on a tenant's only request."""
        if not self._live:
            return None
        tenant = max(self._live, key=self._live.__getitem__)
        for waiter in reversed(self._ring[tenant]):
            if waiter.state == _QUEUED:
                return waiter
        return None


class BackendLimiter:
    """At most ``limit`` slots out at once (0: unlimited), at most ``queue_size`` waiters."""

    def __init__(
        self,
        name: str,
        limit: int = 0,
        queue_size: int = 0,
        *,
        observer: LimiterObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._limit = limit
        self._queue_size = queue_size
        self._observer = observer
        self._clock = clock
        self._in_flight = 0
        # One fair queue per priority class; _counts holds the live numbers per class.
        self._queues = tuple(_FairQueue() for _ in Priority)
        self._counts = [0 for _ in Priority]
        self._hold = _INITIAL_HOLD_S

    # -- state ----------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def queue_size(self) -> int:
        return self._queue_size

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return sum(self._counts)

    def queued_for(self, priority: Priority) -> int:
        return self._counts[priority]

    @property
    def idle(self) -> bool:
        return self._in_flight == 0 and self.queued == 0

    def retry_after(self) -> float:
        """Seconds until a slot is likely free for a newcomer: the queue ahead of it drained at
        the observed hold time per slot."""
        if self._limit == 0:
            return _INITIAL_HOLD_S
        return max(0.05, self._hold * (self.queued + 1) / self._limit)

    # -- config ---------------------------------------------------------------------------------

    def configure(self, limit: int, queue_size: int) -> None:
        """Apply a new limit to new acquisitions; slots already out stay out until released.
        Waiters already queued keep their place even if the new queue is smaller."""
        self._limit = limit
        self._queue_size = queue_size
        self._wake()

    # -- acquire / release ----------------------------------------------------------------------

    def try_acquire(self, priority: Priority = Priority.STANDARD) -> Slot | None:
        """A slot if one is free and nobody queues for it (no overtaking), else None."""
        if (self._limit == 0 or self._in_flight < self._limit) and not any(self._counts):
            return self._grant(0.0)
        return None

    async def acquire(
        self, priority: Priority = Priority.STANDARD, *, wait: float | None = None, tenant: str = ""
    ) -> Slot:
        """A slot, waiting at most ``wait`` seconds; raises :class:`Saturated` when the queue is
        full (at once) or the wait runs out. ``tenant`` is whose turn a queued request waits for
        (requests without one share the tenant ``""``)."""
        slot = self.try_acquire(priority)
        if slot is not None:
            return slot
        if wait is not None and wait <= 0:
            raise self._reject(priority, "queue_timeout")
        if self.queued >= self._queue_size and not self._displace_below(priority):
            raise self._reject(priority, "queue_full")
        waiter = _Waiter(asyncio.get_running_loop().create_future(), priority, self._clock(), tenant)
        self._queues[priority].push(waiter)
        self._counts[priority] += 1
        try:
            async with asyncio.timeout(wait):
                return await waiter.future
        except TimeoutError:
            granted = self._abandon(waiter)
            if granted is not None:  # the slot came just as the wait ran out: keep it
                return granted
            raise self._reject(priority, "queue_timeout") from None
        except BaseException:
            granted = self._abandon(waiter)
            if granted is not None:
                granted.release()
            raise

    def _grant(self, waited: float) -> Slot:
        self._in_flight += 1
        return Slot(self, self._clock(), waited)

    def _release(self, slot: Slot) -> None:
        self._in_flight -= 1
        held = self._clock() - slot.acquired_at
        self._hold += _HOLD_SMOOTHING * (held - self._hold)
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiters, premium first; within a class tenants in turn, each
        tenant's oldest first."""
        while any(self._counts) and (self._limit == 0 or self._in_flight < self._limit):
            waiter = self._next_waiter()
            if waiter is None:  # counts and deques disagree: cannot happen, but never spin
                break
            waiter.state = _GRANTED
            self._counts[waiter.priority] -= 1
            waited = self._clock() - waiter.enqueued
            waiter.slot = self._grant(waited)
            waiter.future.set_result(waiter.slot)
            if self._observer is not None:
                self._observer.waited(waiter.priority, waited)

    def _next_waiter(self) -> _Waiter | None:
        for queue in self._queues:
            waiter = queue.pop()
            if waiter is not None:
                return waiter
        return None

    def _abandon(self, waiter: _Waiter) -> Slot | None:
        """The waiter stops waiting (timeout, cancellation, displacement); returns a slot it was
        granted meanwhile, which the caller must keep or release."""
        if waiter.state == _GRANTED:
            return waiter.slot
        if waiter.state == _QUEUED:
            waiter.state = _GONE
            self._counts[waiter.priority] -= 1
            self._queues[waiter.priority].forget(waiter)
        if waiter.future.done() and not waiter.future.cancelled():
            waiter.future.exception()  # mark a displacement error as seen
        else:
            waiter.future.cancel()
        return None

    def _displace_below(self, priority: Priority) -> bool:
        """Make room for a ``priority`` waiter in a full queue by turning away one of the least
        urgent class below it (batch first, then standard for a premium one)."""
        return any(self._displace(lower) for lower in reversed(Priority) if lower > priority)

    def _displace(self, priority: Priority) -> bool:
        """Turn away a waiter of ``priority`` (the newest of the busiest tenant) to make room;
        False if there is none."""
        queue = self._queues[priority]
        waiter = queue.newest_of_busiest()
        if waiter is None:
            return False
        waiter.state = _GONE
        self._counts[priority] -= 1
        queue.forget(waiter)
        waiter.future.set_exception(self._reject(priority, "displaced"))
        return True

    def _reject(self, priority: Priority, reason: str) -> Saturated:
        if self._observer is not None:
            self._observer.rejected(priority, reason)
        detail = f"{self._in_flight} in flight, {self.queued} queued, maxConcurrency {self._limit}"
        return Saturated(self.name, reason, detail, self.retry_after())

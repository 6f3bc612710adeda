"""The attempt loop's view of the health book, for one request on one route.

``attempts.py`` makes one :class:`RouteHealth` per request and, for each attempt:

1. :meth:`RouteHealth.admit` — a :class:`Ticket`, or a :class:`Refusal` when the backend's breaker
   is open (or its half-open probe is already out) or a provider's Retry-After holds it;
2. :meth:`RouteHealth.settle` with the outcome and elapsed time — feeds the breaker (only failures
   that say the backend is unwell, ``breaker.counts_against_health``), the latency estimate (answers
   and timeouts), and turns a 429's Retry-After into a hold on the backend;
   or :meth:`RouteHealth.release` when the attempt was cancelled without an outcome;
3. :meth:`RouteHealth.try_retry` before retrying the same backend — the route's retry budget —
   then :meth:`RouteHealth.retrying` when that retry is sent, or :meth:`RouteHealth.retry_abandoned`
   when it is not (after the backoff a new Retry-After hold or an opened breaker refused it).

It also reports fallbacks, and failures of streams after their first chunk (which the loop has
already settled as answers). The records live in ``book.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..adapters.errors import ErrorKind, ProviderError
from ..config.snapshot import BackendEntry
from .book import BackendHealth, HealthBook
from .breaker import Permit, counts_against_health

__all__ = ["Refusal", "RouteHealth", "Ticket"]


@dataclass(slots=True)
class Ticket:
    """Leave for one attempt; ``permit`` is None for untracked backends and forced attempts."""

    record: BackendHealth | None
    permit: Permit | None

    @property
    def probe(self) -> bool:
        return self.permit is not None and self.permit.probe


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a backend was skipped; ``wait`` is how long a Retry-After still holds it."""

    reason: Literal["ejected", "held"]
    wait: float = 0.0


class RouteHealth:
    """Health decisions of one request on ``route``; ``stream`` picks the latency measure."""

    __slots__ = ("_book", "route", "stream")

    def __init__(self, book: HealthBook, route: str, *, stream: bool = False) -> None:
        self._book = book
        self.route = route
        self.stream = stream

    def start(self) -> None:
        """The request begins: it counts towards the retry budget's base."""
        budget = self._book.budget(self.route)
        if budget is not None:
            budget.on_request()

    def admit(self, backend: BackendEntry, *, force: bool = False) -> Ticket | Refusal:
        """Leave to try ``backend`` now. ``force`` ignores the breaker (every candidate is ejected)
        but never a Retry-After hold: the caller waits that out first."""
        record = self._book.record(self.route, backend.name)
        if record is None:
            return Ticket(None, None)
        if record.held_until:
            wait = record.held_until - self._book.clock()
            if wait > 0:
                return Refusal("held", wait)
        permit = record.breaker.acquire()
        if permit is None and not force:
            return Refusal("ejected")
        return Ticket(record, permit)

    def settle(self, ticket: Ticket, error: ProviderError | None, seconds: float) -> None:
        """Record an attempt's outcome (None: it answered) and how long it took."""
        record, permit = ticket.record, ticket.permit
        if record is None:
            return
        if error is None:
            record.latency(self.stream).observe(seconds)
            if permit is not None:
                record.breaker.success(permit)
            return
        if error.kind is ErrorKind.TIMEOUT:
            record.latency(self.stream).observe(seconds)  # a lower bound, but slowness must show
        elif error.kind is ErrorKind.RATE_LIMITED and error.retry_after:
            self._book.hold(record, error.retry_after)
        if permit is None:
            return
        if counts_against_health(error.kind):
            record.breaker.failure(permit, error.kind.value)
        else:
            record.breaker.release(permit)  # says nothing about health; a probe slot frees up

    def release(self, ticket: Ticket) -> None:
        """The attempt ended without an outcome (cancelled)."""
        if ticket.record is not None and ticket.permit is not None:
            ticket.record.breaker.release(ticket.permit)

    def try_retry(self, backend: BackendEntry) -> bool:
        """Spend one retry of the route's budget on ``backend``; False: fall back instead.

        The retry is reported only once it is sent (:meth:`retrying`): between this call and then
        lies the backoff, after which the backend may refuse it."""
        budget = self._book.budget(self.route)
        if budget is not None and not budget.try_retry():
            self._book.listener.retry_budget_exhausted(self.route, backend.name)
            return False
        return True

    def retrying(self, backend: BackendEntry) -> None:
        """The retry granted by :meth:`try_retry` is being sent to ``backend``."""
        self._book.listener.retried(self.route, backend.name)

    def retry_abandoned(self, backend: BackendEntry) -> None:
        """The retry granted by :meth:`try_retry` was not sent: its budget comes back."""
        budget = self._book.budget(self.route)
        if budget is not None:
            budget.refund()

    def fell_back(self, backend: BackendEntry, reason: str) -> None:
        """The request moves on from ``backend`` (``reason``: an error kind, "ejected" or "held")."""
        self._book.listener.fell_back(self.route, backend.name, reason)

    def latency_quantile(self, backend: BackendEntry, q: float) -> float | None:
        """The backend's recent latency at quantile ``q`` (time to first token for streams), once it
        has enough samples; the hedging delay."""
        return self._book.latency_quantile(self.route, backend.name, q, stream=self.stream)

    def stream_broken(self, backend: BackendEntry, error: ProviderError) -> None:
        """A stream failed after its first chunk (its attempt was settled as an answer)."""
        record = self._book.record(self.route, backend.name)
        if record is not None and counts_against_health(error.kind):
            record.breaker.note_failure(error.kind.value)

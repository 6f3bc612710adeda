"""How health events leave the health package: :class:`HealthListener` and its Prometheus form.

``book.py`` and ``admission.py`` report breaker transitions, suppressed ejections, Retry-After holds,
retries, retry-budget exhaustion and fallbacks to one listener; the base class ignores them
(unit tests), :class:`MetricsListener` counts them on the sidecar's registry (``metrics.py``'s
``Metrics.registry``). Labels are bounded: route, backend, breaker state, reason (an error kind or a
fixed word) — never users or tenants.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry

from ..prom import Counter, Gauge
from .breaker import State

__all__ = ["HealthListener", "MetricsListener"]


class HealthListener:
    """Receives health events; every method does nothing here."""

    def tracked(self, route: str, backend: str) -> None:
        """A backend's health is tracked from now on (its breaker starts CLOSED)."""

    def forgotten(self, route: str, backend: str, state: State) -> None:
        """A backend left the config (or changed endpoint): its health state is dropped."""

    def transition(self, route: str, backend: str, old: State, new: State, reason: str) -> None:
        """A breaker changed state."""

    def ejection_suppressed(self, route: str, backend: str, reason: str) -> None:
        """A breaker would have opened but the ejection cap kept the backend in."""

    def throttled(self, route: str, backend: str, seconds: float) -> None:
        """A provider's Retry-After holds the backend back for ``seconds``."""

    def retried(self, route: str, backend: str) -> None:
        """An attempt is retried on the same backend."""

    def retry_budget_exhausted(self, route: str, backend: str) -> None:
        """A retry was refused by the route's retry budget."""

    def fell_back(self, route: str, backend: str, reason: str) -> None:
        """A request left ``backend`` for the next candidate (``reason``: error kind or skip cause)."""


class MetricsListener(HealthListener):
    """Health events as Prometheus metrics on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.breaker_state = Gauge(
            "llmroute_circuit_breaker_state",
            "Circuit breaker state per backend: 1 for the current state (closed, open, half_open), else 0.",
            ["route", "backend", "state"],
            registry=r,
        )
        self.transitions = Counter(
            "llmroute_circuit_breaker_transitions",
            "Circuit breaker transitions, by the state entered.",
            ["route", "backend", "state"],
            registry=r,
        )
        self.ejections = Counter(
            "llmroute_ejections",
            "Backends ejected by their circuit breaker (closed -> open).",
            ["route", "backend"],
            registry=r,
        )
        self.ejections_suppressed = Counter(
            "llmroute_ejections_suppressed",
            "Ejections refused because maxEjectedPercent of the model's backends were already out.",
            ["route", "backend"],
            registry=r,
        )
        self.throttles = Counter(
            "llmroute_backend_throttled",
            "Times a provider's Retry-After held a backend back.",
            ["route", "backend"],
            registry=r,
        )
        self.retries = Counter(
            "llmroute_retries",
            "Attempts retried on the same backend.",
            ["route", "backend"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "llmroute_retry_budget_exhausted",
            "Retries refused by the route's retry budget (the request fell back or stopped instead).",
            ["route"],
            registry=r,
        )
        self.fallbacks = Counter(
            "llmroute_fallbacks",
            "Requests that moved from a backend to the next candidate, by reason.",
            ["route", "backend", "reason"],
            registry=r,
        )

    def tracked(self, route: str, backend: str) -> None:
        for state in State:
            self.breaker_state.labels(route, backend, state.value).set(1 if state is State.CLOSED else 0)

    def forgotten(self, route: str, backend: str, state: State) -> None:
        for each in State:
            with contextlib.suppress(KeyError):
                self.breaker_state.remove(route, backend, each.value)

    def transition(self, route: str, backend: str, old: State, new: State, reason: str) -> None:
        self.breaker_state.labels(route, backend, old.value).set(0)
        self.breaker_state.labels(route, backend, new.value).set(1)
        self.transitions.labels(route, backend, new.value).inc()
        if old is State.CLOSED and new is State.OPEN:
            self.ejections.labels(route, backend).inc()

    def ejection_suppressed(self, route: str, backend: str, reason: str) -> None:
        self.ejections_suppressed.labels(route, backend).inc()

    def throttled(self, route: str, backend: str, seconds: float) -> None:
        self.throttles.labels(route, backend).inc()

    def retried(self, route: str, backend: str) -> None:
        self.retries.labels(route, backend).inc()

    def retry_budget_exhausted(self, route: str, backend: str) -> None:
        self.budget_exhausted.labels(route).inc()

    def fell_back(self, route: str, backend: str, reason: str) -> None:
        self.fallbacks.labels(route, backend, reason).inc()

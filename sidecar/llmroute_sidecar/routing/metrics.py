"""Prometheus series of routing decisions: strategy and rule, region choice, exclusions, context.

``metrics.py`` owns the sidecar's registry and builds one :class:`RoutingMetrics` on it; the router
service reports each :class:`~.decision.Decision` through :meth:`RoutingMetrics.decided` and each
refusal through :meth:`RoutingMetrics.refused`. Labels stay bounded by the config: logical model,
strategy, rule name (or ``rules[i]``, or ``none``), and small fixed sets for choices and reasons.
Never users, tenants or prompts. ``llmroute_backend_info`` carries each candidate backend's provider
and region (value 1), so dashboards can group the per-backend series by region with a join.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ..prom import Counter, Gauge
from .decision import Decision

__all__ = ["RoutingMetrics"]


class RoutingMetrics:
    """The routing layer's metric families, registered on the sidecar's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.decisions = Counter(
            "llmroute_routing_decisions",
            "Routing decisions by logical model, strategy and the rule that matched (none: no rule).",
            ["model", "strategy", "rule"],
            registry=r,
        )
        self.region_choices = Counter(
            "llmroute_routing_region_choices",
            "Where the first candidate is: local (the sidecar's region), remote, unknown (the sidecar "
            "has no region), or residency_filtered (regions.allowed left no backend: refused).",
            ["model", "choice"],
            registry=r,
        )
        self.excluded = Counter(
            "llmroute_routing_excluded_backends",
            "Backends left out of a request's candidates, by reason: residency, capability, context, "
            "min_context; unhealthy counts backends moved to the end of the order.",
            ["model", "reason"],
            registry=r,
        )
        self.truncations = Counter(
            "llmroute_context_truncations",
            "Requests whose oldest messages were dropped to fit a context window (truncate-oldest).",
            ["model"],
            registry=r,
        )
        self.truncated_messages = Counter(
            "llmroute_context_truncated_messages",
            "Messages dropped by truncate-oldest.",
            ["model"],
            registry=r,
        )
        self.refusals = Counter(
            "llmroute_routing_refusals",
            "Requests refused before any upstream call, by reason: capability, residency, context "
            "(context_length_exceeded), min_context.",
            ["model", "reason"],
            registry=r,
        )
        self.backend_info = Gauge(
            "llmroute_backend_info",
            "Backends requests are routed to, with their provider and region (value 1; join on backend).",
            ["route", "backend", "provider", "region"],
            registry=r,
        )
        self._backends: dict[tuple[str, str], tuple[str, str]] = {}  # (route, backend) -> (provider, region)

    def decided(self, decision: Decision) -> None:
        model = decision.model
        self.decisions.labels(model, decision.strategy, decision.rule_label).inc()
        self.region_choices.labels(model, decision.region_choice).inc()
        for backend in decision.candidates:  # one dict lookup each; labels only when a backend is new
            key, where = (backend.route, backend.name), (backend.provider, backend.region)
            if self._backends.get(key) != where:
                self._described(key, where)
        for excluded in decision.excluded:
            self.excluded.labels(model, excluded.reason).inc()
        if decision.demoted:
            self.excluded.labels(model, "unhealthy").inc(len(decision.demoted))
        if decision.truncated:
            self.truncations.labels(model).inc()
            self.truncated_messages.labels(model).inc(decision.truncated)

    def _described(self, key: tuple[str, str], where: tuple[str, str]) -> None:
        old = self._backends.get(key)
        if old is not None:  # the backend moved (a config swap): drop the stale series
            self.backend_info.remove(*key, *old)
        self._backends[key] = where
        self.backend_info.labels(*key, *where).set(1)

    def refused(self, model: str, reason: str) -> None:
        self.refusals.labels(model, reason).inc()
        if reason == "residency":
            self.region_choices.labels(model, "residency_filtered").inc()

"""Prometheus series of routing decisions: strategy and rule, region choice, exclusions, context.

``metrics.py`` owns the sidecar's registry and builds one :class:`RoutingMetrics` on it; the router
service reports each :class:`~.decision.Decision` through :meth:`RoutingMetrics.decided` and each
refusal through :meth:`RoutingMetrics.refused`. Labels stay bounded by the config: logical model,
strategy, rule name (or ``rules[i]``, or ``none``), and small fixed sets for choices and reasons.
Never users, tenants or prompts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

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

    def decided(self, decision: Decision) -> None:
        model = decision.model
        self.decisions.labels(model, decision.strategy, decision.rule_label).inc()
        self.region_choices.labels(model, decision.region_choice).inc()
        for excluded in decision.excluded:
            self.excluded.labels(model, excluded.reason).inc()
        if decision.demoted:
            self.excluded.labels(model, "unhealthy").inc(len(decision.demoted))
        if decision.truncated:
            self.truncations.labels(model).inc()
            self.truncated_messages.labels(model).inc(decision.truncated)

    def refused(self, model: str, reason: str) -> None:
        self.refusals.labels(model, reason).inc()
        if reason == "residency":
            self.region_choices.labels(model, "residency_filtered").inc()

"""Prometheus metrics of the request-path policies: spend attribution, cache, PII, rate limits, budgets.

Attribution counts tokens and cost by route, logical model, backend and tenant. Tenants are the one
unbounded label, so :class:`TenantLabels` bounds it: tenants on the allow-list (``--metrics-tenants``)
always get their own label; otherwise the first ``max_tenants`` distinct tenants seen do, and every
later one is ``other``. The usage stream to the operator stays the exact, per-tenant source of truth.
No label ever carries a user id or any request text. Registered by ``metrics.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from .prom import Counter, Gauge

__all__ = ["PolicyMetrics", "TenantLabels"]


class TenantLabels:
    OTHER = "other"

    def __init__(self, *, allow: Iterable[str] = (), max_tenants: int = 20) -> None:
        self.allow = frozenset(allow)
        self.max_tenants = 0 if self.allow else max_tenants
        self._seen: set[str] = set()

    def label(self, tenant: str) -> str:
        if not tenant:
            return ""
        if tenant in self.allow or tenant in self._seen:
            return tenant
        if len(self._seen) < self.max_tenants:
            self._seen.add(tenant)
            return tenant
        return self.OTHER


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry, *, tenants: TenantLabels | None = None) -> None:
        r = registry
        self.tenants = tenants or TenantLabels()
        self.usage_tokens = Counter(
            "llmroute_usage_tokens",
            "Tokens billed by route, logical model, backend and tenant (bounded: see --metrics-tenants); "
            "kind is input, output or cached_input (a part of input).",
            ["route", "model", "backend", "tenant", "kind"],
            registry=r,
        )
        self.usage_cost = Counter(
            "llmroute_usage_cost_usd",
            "Spend in US dollars by route, logical model, backend and tenant, from the backends' pricing.",
            ["route", "model", "backend", "tenant"],
            registry=r,
        )
        self.usage_estimated = Counter(
            "llmroute_usage_estimated_records",
            "Usage records whose tokens the sidecar counted itself because the provider reported none.",
            ["route", "backend"],
            registry=r,
        )
        self.cache = Counter(
            "llmroute_cache_lookups",
            "Response-cache lookups by route and result (hit, semantic, miss, bypass).",
            ["route", "result"],
            registry=r,
        )
        self.cache_events = Counter(
            "llmroute_cache_events",
            "Cache store events (store, evict, redis_error, ...).",
            ["event"],
            registry=r,
        )
        self.pii = Counter(
            "llmroute_pii_detections",
            "Personal data found in prompts, by route, type and action (redact or block). Counts only.",
            ["route", "type", "action"],
            registry=r,
        )
        self.rate_limited = Counter(
            "llmroute_rate_limited_requests",
            "Requests refused with 429 by a route's rate limits.",
            ["route", "key"],
            registry=r,
        )
        self.budget_events = Counter(
            "llmroute_budget_events",
            "Budget allowance events: topup, urgent (a request waited for a top-up), refused, fail_open, unreachable.",
            ["budget", "event"],
            registry=r,
        )
        self.budget_downgrades = Counter(
            "llmroute_budget_downgraded_requests",
            "Requests sent to a cheaper tier or backend because a budget is past its soft limit.",
            ["budget", "target"],
            registry=r,
        )
        self.budget_available = Gauge(
            "llmroute_budget_allowance_available_usd",
            "Allowance this sidecar holds and has not reserved, per budget.",
            ["budget"],
            registry=r,
        )

    def budget_event(self, event: str, budget: str, available_usd: float | None = None) -> None:
        """A budget guard event; ``settle`` (every charge) only moves the allowance gauge."""
        if available_usd is not None:
            self.budget_available.labels(budget).set(max(0.0, available_usd))
        if event != "settle":
            self.budget_events.labels(budget, event).inc()

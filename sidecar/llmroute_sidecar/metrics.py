"""Prometheus metrics of the sidecar, on its own registry (no module-level globals).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms, base units).
Labels are bounded: logical model, backend, provider, outcome/kind; never users, and tenants only
through the bounded attribution counters of ``policy_metrics.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from .health.report import MetricsListener
from .load.metrics import LoadMetrics
from .policy_metrics import PolicyMetrics, TenantLabels
from .prom import Counter, Gauge, Histogram, Summary
from .routing.metrics import RoutingMetrics

__all__ = ["AnsweredMeters", "AttemptMeters", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class AnsweredMeters:
    """The series one answered request moves, resolved once per label set (``Metrics.answered``)."""

    requests: Any
    tokens_in: Any
    tokens_out: Any
    cost: Any
    usage_in: Any
    usage_out: Any
    usage_cached: Any
    usage_cost: Any


@dataclass(frozen=True, slots=True)
class AttemptMeters:
    """The series one upstream attempt moves (``Metrics.attempted``)."""

    attempts: Any
    seconds: Any


class Metrics:
    def __init__(self, *, tenants: TenantLabels | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llmroute_requests",
            "Requests answered to apps, by logical model, final backend and outcome.",
            ["model", "backend", "provider", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "llmroute_request_duration_seconds",
            "Time from request to the last byte answered.",
            ["model", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "llmroute_time_to_first_token_seconds",
            "Time from request to the first streamed chunk.",
            ["model", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "llmroute_upstream_attempts",
            "Upstream attempts by backend and result (ok or an error kind).",
            ["backend", "provider", "result"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "llmroute_upstream_attempt_duration_seconds",
            "Duration of one upstream attempt.",
            ["backend", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llmroute_tokens",
            "Tokens by backend and direction (input, output).",
            ["model", "backend", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "llmroute_cost_usd",
            "Spend in US dollars by logical model and backend, from list prices.",
            ["model", "backend"],
            registry=r,
        )
        self.errors = Counter(
            "llmroute_errors",
            "Errors answered to apps, by status code.",
            ["model", "status"],
            registry=r,
        )
        self.batch_lines = Counter(
            "llmroute_batch_lines",
            "Batch lines by event: completed, failed (dead-lettered), skipped (cancelled batch), "
            "retried (one more attempt), reclaimed (taken over from a sidecar that stopped).",
            ["event"],
            registry=r,
        )
        self.memory_events = Counter(
            "llmroute_memory_events",
            "Conversation memory: stored messages left out by the sliding window (left_out), replaced by "
            "a summary (summarized), conversations erased by the per-tenant bound (evicted), turns that "
            "could not be stored (store_failed).",
            ["route", "event"],
            registry=r,
        )
        self.abuse_blocks = Counter(
            "llmroute_abuse_blocks",
            "Users or tenants blocked by abuse protection, by route and reason (request_rate, token_rate, "
            "cost_rate, policy_blocks); counted by the sidecar that set the block.",
            ["route", "reason"],
            registry=r,
        )
        self.abuse_refused = Counter(
            "llmroute_abuse_refused",
            "Requests refused with 403 abuse_blocked while their user or tenant was blocked.",
            ["route"],
            registry=r,
        )
        self.hedges = Counter(
            "llmroute_hedges",
            "Hedged chat requests (spec.resilience.hedging) by logical model and outcome: primary_won, "
            "hedge_won, failed, cancelled. Each one billed both calls.",
            ["model", "outcome"],
            registry=r,
        )
        self.feedback = Summary(
            "llmroute_feedback_score",
            "Scores apps gave experiment responses through POST /v1/feedback, by route and arm (the "
            "split's backend): _count is how many, _sum / _count the mean quality.",
            ["route", "arm"],
            registry=r,
        )
        self.stream_errors = Counter(
            "llmroute_stream_errors",
            "Streams ended with an error event after bytes were sent.",
            ["backend", "kind"],
            registry=r,
        )
        self.config_info = Gauge(
            "llmroute_config_info",
            "The active config version (value 1).",
            ["version"],
            registry=r,
        )
        self.config_rejected = Counter(
            "llmroute_config_rejected",
            "Configs refused as invalid while the last good one kept serving.",
            registry=r,
        )
        self.in_flight = Gauge("llmroute_requests_in_flight", "Requests being served.", registry=r)
        self.load = LoadMetrics(r)  # concurrency limits, queues, coalescing (load/metrics.py)
        self.routing = RoutingMetrics(r)  # decisions, regions, context (routing/metrics.py)
        self.health = MetricsListener(r)  # breakers, ejections, retries, fallbacks (health/report.py)
        self.policy = PolicyMetrics(r, tenants=tenants)  # spend, cache, PII, rate limits, budgets
        # Children of the per-request series by label set: every label is bounded (config names,
        # outcomes, tenants through TenantLabels), and these series are never removed, so the caches
        # stay small and never go stale. A request then pays one dict lookup instead of eight labels().
        self._answered: dict[tuple[str, ...], AnsweredMeters] = {}
        self._attempted: dict[tuple[str, str, str], AttemptMeters] = {}

    def answered(
        self, route: str, model: str, backend: str, provider: str, outcome: str, tenant: str
    ) -> AnsweredMeters:
        """The meters of a request ``backend`` answered; ``tenant`` is the raw tenant (it is bounded
        here, by ``--metrics-tenants`` or the first tenants seen)."""
        label = self.policy.tenants.label(tenant)
        key = (route, model, backend, provider, outcome, label)
        meters = self._answered.get(key)
        if meters is None:
            tokens, usage = self.tokens, self.policy.usage_tokens
            meters = self._answered[key] = AnsweredMeters(
                requests=self.requests.labels(model, backend, provider, outcome),
                tokens_in=tokens.labels(model, backend, "input"),
                tokens_out=tokens.labels(model, backend, "output"),
                cost=self.cost.labels(model, backend),
                usage_in=usage.labels(route, model, backend, label, "input"),
                usage_out=usage.labels(route, model, backend, label, "output"),
                usage_cached=usage.labels(route, model, backend, label, "cached_input"),
                usage_cost=self.policy.usage_cost.labels(route, model, backend, label),
            )
        return meters

    def attempted(self, backend: str, provider: str, result: str) -> AttemptMeters:
        """The meters of one upstream attempt on ``backend`` that ended in ``result``."""
        key = (backend, provider, result)
        meters = self._attempted.get(key)
        if meters is None:
            meters = self._attempted[key] = AttemptMeters(
                self.attempts.labels(backend, provider, result),
                self.attempt_seconds.labels(backend, provider),
            )
        return meters

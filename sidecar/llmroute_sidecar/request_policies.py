"""The request-path policies around the attempt loop: PII, rate limits, the response cache, budgets,
and what every request leaves behind (one usage record, one audit line, attribution metrics).

``service.py`` runs a request as: :meth:`RequestPolicies.admit` (PII scan, redaction or refusal; rate
limits by the planner's token estimate; the request's budgets and their downgrade), then
:meth:`lookup` (exact, then semantic cache), then the attempt loop with :meth:`spend_hook` (each attempt
reserves its estimated cost in every budget in scope), then :meth:`finish` (actual cost from the
provider's usage, the reservation settled with it, the rate-limit token estimate corrected, the answer
cached, the usage record, the audit line). A refusal at any step goes through :meth:`refuse`, which
accounts it the same way, with cost 0. Collaborators are passed in, so tests can give real ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb

from .abuse import ABUSE_CODE, AbuseCounters, AbuseGuard
from .accounting import Usage, cost_micro, estimate_micro, usage_of
from .attempts import Abandoned, SpendRefused
from .audit import AuditLog
from .budget import BudgetGuard, BudgetRefusal, Charge, Reservation
from .cache import CacheKey, ResponseCache, cacheable, exact_key, semantic_partition, semantic_text
from .config.snapshot import BackendEntry, ModelEntry
from .experiment import ResponseArms, Served
from .metrics import Metrics
from .openai_api.errors import ApiError
from .pii import Redaction, redact_chat, redact_texts, scan_chat
from .ratelimit import RateLimiter
from .route_policy import RoutePolicies
from .routing import Decision
from .routing.capabilities import supports
from .usage import UsageBuffer, UsageRecord

__all__ = ["Embedder", "Request", "RequestPolicies"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
Embedder = Callable[[ModelEntry, str, "Request"], Awaitable[list[float] | None]]


# Outcomes of a policy refusing a request: abuse protection counts them per key.
_POLICY_REFUSALS = frozenset({"blocked", "rate_limited", "budget_exceeded"})
_HITS = frozenset({"hit", "semantic"})  # answered by the cache: no arm did the work


@dataclass
class Request:
    """One request's state across the policies."""

    entry: ModelEntry
    policies: RoutePolicies
    hints: Any  # service.Hints (not imported: service imports this module)
    body: Json  # what is sent upstream: redacted when the route redacts
    kind: str  # chat | embeddings
    stream: bool = False
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    config_version: str = ""
    redaction: Redaction | None = None
    decision: Decision | None = None
    estimated_tokens: int = 0
    rate_headers: Mapping[str, str] = field(default_factory=dict)
    rate_charged: bool = False
    charge: Charge | None = None
    downgraded: str = ""  # "target (budget name)" when a soft limit moved the request
    cache: str = ""  # hit | semantic | miss | bypass | "" (off)
    cache_key: CacheKey | None = None
    semantic_vector: list[float] | None = None
    semantic_score: float = 0.0
    finished: bool = False
    memory: Any = None  # memory.MemoryTurn when the request continues a stored conversation
    response_id: str = ""  # the provider's completion id, once the answer (or its first chunk) is in
    hedge_cost: int = 0  # micro-USD of calls a hedge race cut off (attempts.Abandoned), billed too
    hedged: str = ""  # "backend (won|lost)" when a hedge was sent, for x-llmroute-hedged
    ttft: float | None = None  # streams: seconds from receipt to the first chunk
    batch_api: str = ""  # a batch line a provider's batch API ran (batch/): that provider
    batch_discount_percent: float = 0.0  # its discount, already in the backend's prices

    @property
    def route(self) -> str:
        return self.entry.facts.name

    def extra_headers(self) -> dict[str, str]:
        out = dict(self.rate_headers)
        if self.downgraded:
            out["x-llmroute-downgraded"] = self.downgraded
        if self.charge is not None:
            out["x-llmroute-budgets"] = ",".join(self.charge.names)
        if self.memory is not None:
            out["x-llmroute-memory"] = self.memory.header()
        if self.hedged:
            out["x-llmroute-hedged"] = self.hedged
        return out


class RequestPolicies:
    def __init__(
        self,
        *,
        metrics: Metrics,
        usage: UsageBuffer,
        budgets: BudgetGuard,
        rates: RateLimiter,
        cache: ResponseCache,
        audit: AuditLog,
        abuse: AbuseGuard | None = None,
        responses: ResponseArms | None = None,
    ) -> None:
        self.metrics = metrics
        self.usage = usage
        self.budgets = budgets
        self.rates = rates
        self.cache = cache
        self.audit = audit
        self.abuse = abuse or AbuseGuard(AbuseCounters(None))
        if self.abuse.on_block is None:
            self.abuse.on_block = self._abuse_blocked
        self.responses = responses or ResponseArms(None)
        self._policies: dict[int, tuple[pb.Route, RoutePolicies]] = {}

    def clear(self) -> None:
        self._policies.clear()

    def for_route(self, route: pb.Route) -> RoutePolicies:
        cached = self._policies.get(id(route))
        if cached is not None and cached[0] is route:  # the identity check guards id() reuse
            return cached[1]
        policies = RoutePolicies.from_route(route)
        self._policies[id(route)] = (route, policies)
        return policies

    # -- before the plan ----------------------------------------------------------------------------

    async def screen(self, request: Request) -> None:
        """Abuse protection: refuse a request of a blocked user or tenant (it counts the request)."""
        try:
            await self.abuse.admit(request)
        except ApiError as exc:
            raise self.refuse(request, exc, "blocked") from None

    def protect(self, request: Request) -> None:
        """PII: refuse (block) or redact the body before anything else sees it."""
        types = request.policies.pii_types
        if not types:
            return
        body = request.body
        if request.kind == "embeddings":
            inputs = body.get("input")
            texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
            if not all(isinstance(t, str) for t in texts):
                return  # token arrays carry no text to scan
            redacted, redaction = redact_texts(list(texts), types)
            found = redaction.counts
        else:
            found = scan_chat(body, types)
            redaction = None
        if not found:
            return
        action = "block" if request.policies.pii_block else "redact"
        for kind, count in found.items():
            self.metrics.policy.pii.labels(request.route, kind, action).inc(count)
        if request.policies.pii_block:
            kinds = ", ".join(sorted(found))
            raise self.refuse(
                request,
                ApiError(
                    400,
                    f"the request contains personal data ({kinds}) and route {request.route!r} blocks it "
                    "(privacy.pii.action: block); remove it or ask for redaction",
                    param="messages" if request.kind == "chat" else "input",
                    code="pii_detected",
                ),
                "blocked",
            )
        if request.kind == "embeddings":
            body = dict(body)
            body["input"] = redacted[0] if isinstance(body.get("input"), str) else redacted
            request.body, request.redaction = body, redaction
        else:
            request.body, request.redaction = redact_chat(body, types)

    async def limit(self, request: Request) -> None:
        """Rate limits, charged with the planner's estimate (corrected in :meth:`finish`)."""
        limits = request.policies.rate_limits
        if not limits:
            return
        hints = request.hints
        decision = await self.rates.admit(
            scope=request.policies.scope,
            limits=limits,
            user=hints.user,
            tenant=hints.tenant,
            tokens=request.estimated_tokens,
        )
        request.rate_headers = decision.headers
        if not decision.allowed:
            key = decision.refused_by.split(" ", 1)[0] or "route"
            self.metrics.policy.rate_limited.labels(request.route, key).inc()
            raise self.refuse(
                request,
                ApiError(
                    429,
                    f"rate limit of route {request.route!r} reached ({decision.refused_by}); "
                    f"retry after {decision.retry_after:.1f}s",
                    code="rate_limit_exceeded",
                    headers=dict(decision.headers),
                ),
                "rate_limited",
            )
        request.rate_charged = True

    def open_charge(self, request: Request) -> None:
        hints = request.hints
        request.charge = self.budgets.charge(route=request.route, tenant=hints.tenant, user=hints.user)

    def downgrade(self, request: Request, decision: Decision) -> Decision:
        """Past a soft limit: the candidates become the budget's downgrade tier or backend."""
        charge = request.charge
        if charge is None or charge.downgrade is None:
            return decision
        target = charge.downgrade
        wanted = ("embeddings",) if request.kind == "embeddings" else ("chat",)
        pool = list(decision.candidates) + [
            b for b in request.entry.backends_by_name.values() if b not in decision.candidates
        ]
        if target.backend:
            chosen = [b for b in pool if b.name == target.backend]
        else:
            chosen = [b for b in pool if b.tier == target.tier and supports(b, wanted)]
        if not chosen:
            log.warning(
                "budget %s is past its soft limit but route %s has no %s backend to downgrade to",
                target.budget,
                request.route,
                target.target,
            )
            return decision
        if [b.name for b in chosen] != [b.name for b in decision.candidates]:
            request.downgraded = f"{target.target}; budget={target.budget}"
            self.metrics.policy.budget_downgrades.labels(target.budget, target.target).inc()
        return replace(decision, candidates=tuple(chosen))

    def spend_hook(self, request: Request) -> Callable[[BackendEntry], Awaitable[Reservation]] | None:
        charge = request.charge
        decision = request.decision
        if charge is None or decision is None:
            return None
        estimate = decision.estimate

        async def spend(backend: BackendEntry) -> Reservation:
            amount = estimate_micro(backend, estimate.input_tokens, estimate.output_tokens)
            result = await charge.reserve(amount)
            if isinstance(result, BudgetRefusal):
                until = f" until {result.reset_at}" if result.reset_at else ""
                raise SpendRefused(
                    f"budget {result.budget!r}: {result.reason}{until} (backend {backend.name} would cost "
                    f"up to ${amount / 1e6:.6f})",
                    result,
                )
            return result

        return spend

    # -- cache --------------------------------------------------------------------------------------

    async def lookup(self, request: Request, embed: Embedder) -> Json | None:
        """A cached answer (a fresh copy), or None; sets ``request.cache``."""
        policies = request.policies
        if not policies.caching or request.kind != "chat":
            return None
        if request.hints.no_cache:
            request.cache = "bypass"
            self.metrics.policy.cache.labels(request.route, "bypass").inc()
            return None
        route = request.entry.route
        if policies.exact_ttl > 0:
            request.cache_key = exact_key(
                request.body, namespace=route.namespace, tenant=request.hints.tenant, route=route.name
            )
            found = await self.cache.get(request.cache_key)
            if found is not None:
                request.cache = "hit"
                self.metrics.policy.cache.labels(request.route, "hit").inc()
                return found
        if policies.semantic_ttl > 0:
            text = semantic_text(request.body, deterministic_only=not policies.semantic_any_temperature)
            if text is not None:
                request.semantic_vector = await embed(request.entry, text, request)
            if request.semantic_vector is not None:
                similar = await self.cache.get_similar(
                    self._semantic_partition(request), request.semantic_vector, policies.semantic_threshold
                )
                if similar is not None:
                    request.cache, request.semantic_score = "semantic", similar[1]
                    self.metrics.policy.cache.labels(request.route, "semantic").inc()
                    return similar[0]
        request.cache = "miss"
        self.metrics.policy.cache.labels(request.route, "miss").inc()
        return None

    def _semantic_partition(self, request: Request) -> str:
        route = request.entry.route
        return semantic_partition(
            request.body,
            namespace=route.namespace,
            tenant=request.hints.tenant,
            route=route.name,
            embedding_backend=request.policies.semantic_backend,
        )

    async def remember(self, request: Request, response: Json) -> None:
        """Cache a successful answer as the provider gave it (placeholders, not restored PII)."""
        if request.cache != "miss" or not cacheable(response):
            return
        policies = request.policies
        if request.cache_key is not None:
            await self.cache.put(request.cache_key, response, policies.exact_ttl)
        if request.semantic_vector is not None:
            await self.cache.put_similar(
                self._semantic_partition(request), request.semantic_vector, response, policies.semantic_ttl
            )

    # -- after --------------------------------------------------------------------------------------

    def refuse(self, request: Request, error: ApiError, outcome: str) -> ApiError:
        """Account a request refused before (or instead of) any upstream call; returns ``error``."""
        self.metrics.errors.labels(request.entry.name, str(error.status)).inc()
        if outcome in _POLICY_REFUSALS and error.code != ABUSE_CODE:
            self.abuse.observe(request, blocks=1)
        self._record(
            request, None, Usage(), 0, outcome, error.status, attempts=0, decision_note=error.code or ""
        )
        return error

    async def finish(
        self,
        request: Request,
        backend: BackendEntry | None,
        usage: Usage,
        *,
        outcome: str,
        status: int,
        attempts: int,
        reservation: Reservation | None = None,
        completion: str | None = None,
    ) -> int:
        """Settle everything one answered request owes; returns its cost in micro-USD."""
        if request.finished:
            return 0
        cost = cost_micro(backend, usage) if backend is not None else 0
        if reservation is not None:
            reservation.settle(cost)
        if request.rate_charged:
            await self.rates.settle(
                scope=request.policies.scope,
                limits=request.policies.rate_limits,
                user=request.hints.user,
                tenant=request.hints.tenant,
                estimated_tokens=request.estimated_tokens,
                actual_tokens=usage.total if backend is not None else 0,  # a cache hit used none
            )
        record = self._record(
            request, backend, usage, cost, outcome, status, attempts=attempts, completion=completion
        )
        if record.experiment_arm and record.response_id and outcome == "ok":
            await self.responses.remember(
                record.response_id,
                Served(
                    route=record.route, model=record.model, arm=record.experiment_arm, tenant=record.tenant
                ),
            )
        self.abuse.observe(
            request, tokens=usage.total if backend is not None else 0, cost=cost,
            blocks=1 if outcome in _POLICY_REFUSALS else 0,
        )  # fmt: skip
        return cost

    def _abuse_blocked(self, request: Request, key: str, reason: str, seconds: float, window: str) -> None:
        """A block this sidecar set: a usage record, so the operator can put an Event on the route."""
        spec, hints, entry = request.policies.abuse, request.hints, request.entry
        by_tenant = spec is not None and spec.by_tenant
        self.usage.add(
            UsageRecord(
                request_id=f"{hints.request_id}:abuse",
                route=entry.facts.route_name,
                model=entry.name,
                backend="",
                provider="",
                tenant=key if by_tenant else hints.tenant,
                user=hints.user if by_tenant else ("" if key == "-" else key),
                input_tokens=0,
                output_tokens=0,
                cost_micro_usd=0,
                outcome="abuse_blocked",
                latency_seconds=0.0,
                http_status=403,
                config_version=request.config_version,
                abuse=(by_tenant, reason, seconds, window),
            )
        )

    def settle_abandoned(self, request: Request, abandoned: Sequence[Abandoned]) -> None:
        """Bill the calls a hedge race sent and cut off: each is settled in the request's budgets and
        gets a usage record of its own (``<request id>:hedge``). A call that answered is billed by its
        usage; a cancelled one by the prompt's estimated input tokens (what a provider bills at least
        for a prompt it started on; output it generated before the cancel is unknown)."""
        estimate = request.decision.estimate.input_tokens if request.decision is not None else 0
        hints, entry = request.hints, request.entry
        for lost in abandoned:
            reported = usage_of(lost.response.get("usage")) if lost.response is not None else None
            usage = reported or Usage(estimate, 0, 0, estimated=True)
            cost = cost_micro(lost.backend, usage)
            if lost.reservation is not None:
                lost.reservation.settle(cost)
            request.hedge_cost += cost
            self.usage.add(
                UsageRecord(
                    request_id=f"{hints.request_id}:hedge",
                    route=entry.facts.route_name,
                    model=entry.name,
                    backend=lost.backend.name,
                    provider=lost.backend.provider,
                    tenant=hints.tenant,
                    user=hints.user,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cost_micro_usd=cost,
                    outcome="hedge_lost",
                    latency_seconds=time.monotonic() - request.started,
                    started_at=request.started_wall,
                    region=lost.backend.region,
                    estimated=usage.estimated,
                    attempts=1,
                    http_status=499,
                    config_version=request.config_version,
                    budgets=request.charge.names if request.charge is not None else (),
                    provider_model=lost.backend.target.model,
                )
            )
            if cost:
                self.metrics.cost.labels(entry.name, lost.backend.name).inc(cost / 1e6)

    def _record(
        self,
        request: Request,
        backend: BackendEntry | None,
        usage: Usage,
        cost: int,
        outcome: str,
        status: int,
        *,
        attempts: int,
        decision_note: str = "",
        completion: str | None = None,
    ) -> UsageRecord:
        request.finished = True
        hints, entry = request.hints, request.entry
        latency = time.monotonic() - request.started
        budgets = request.charge.names if request.charge is not None else ()
        backend_name = backend.name if backend is not None else ""
        experiment, decision = request.policies.experiment, request.decision
        arm = ""
        if (
            experiment is not None
            and decision is not None
            and decision.candidates
            and request.cache not in _HITS
        ):
            arm = experiment.arm_of(entry.name, decision.strategy, decision.candidates[0].name)
        record = UsageRecord(
            request_id=hints.request_id,
            route=entry.facts.route_name,
            model=entry.name,
            backend=backend_name,
            provider=backend.provider if backend is not None else "",
            tenant=hints.tenant,
            user=hints.user,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_micro_usd=cost,
            outcome=outcome,
            latency_seconds=latency,
            started_at=request.started_wall,
            region=backend.region if backend is not None else "",
            cached_tokens=usage.cached_tokens,
            estimated=usage.estimated,
            cache=request.cache,
            attempts=attempts,
            http_status=status,
            config_version=request.config_version,
            budgets=budgets,
            provider_model=backend.target.model if backend is not None else "",
            experiment_arm=arm,
            ttft_seconds=request.ttft,
            response_id=request.response_id,
            batch_api=request.batch_api,
            batch_discount_percent=request.batch_discount_percent,
        )
        self.usage.add(record)
        metrics = self.metrics
        if backend is not None:
            meters = metrics.answered(
                request.route, entry.name, backend.name, backend.provider, outcome, hints.tenant
            )
            meters.requests.inc()
            meters.tokens_in.inc(usage.input_tokens)
            meters.tokens_out.inc(usage.output_tokens)
            meters.usage_in.inc(usage.input_tokens)
            meters.usage_out.inc(usage.output_tokens)
            if usage.cached_tokens:
                meters.usage_cached.inc(usage.cached_tokens)
            if cost:
                meters.cost.inc(cost / 1e6)
                meters.usage_cost.inc(cost / 1e6)
            if usage.estimated:
                metrics.policy.usage_estimated.labels(request.route, backend.name).inc()
        if self.audit.enabled:
            self.audit.write(self._audit_entry(request, record, decision_note, completion))
        return record

    def _audit_entry(self, request: Request, record: UsageRecord, note: str, completion: str | None) -> Json:
        decision = request.decision
        audit = self.audit
        entry: Json = {  # AuditLog.head()'s fields first, in one literal (no merge per request)
            "ts": round(time.time(), 3),
            "namespace": audit.namespace,
            "workload": audit.workload,
            "request_id": record.request_id,
            "tenant": record.tenant,
            "user": record.user,
            "route": request.route,
            "model": record.model,
            "backend": record.backend,
            "provider": record.provider,
            "region": record.region,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cached_tokens": record.cached_tokens,
            "estimated": record.estimated,
            "cost_usd": record.cost_micro_usd / 1e6,
            "cache": record.cache,
            "budgets": list(record.budgets),
            "downgraded": request.downgraded,
            "attempts": record.attempts,
            "outcome": record.outcome,
            "status": record.http_status,
            "latency_ms": round(record.latency_seconds * 1000, 3),
            "stream": request.stream,
            "config_version": record.config_version,
            "decision": {
                "strategy": decision.strategy if decision is not None else "",
                "rule": decision.rule_label if decision is not None else "",
                "candidates": [b.name for b in decision.candidates] if decision is not None else [],
                "region": decision.region_choice if decision is not None else "",
            },
        }
        if record.experiment_arm:
            entry["experiment_arm"] = record.experiment_arm
        if record.batch_api:
            entry["batch_api"] = record.batch_api
        if request.redaction is not None:
            entry["pii_redacted"] = dict(request.redaction.counts)
        if note:
            entry["refused"] = note
        if request.policies.audit_text:
            entry["prompt"] = request.body.get("messages") or request.body.get("input")
            entry["completion"] = completion
        return entry

"""The router core both fronts call: look up the model, pick candidates, run the attempt loop,
account for usage, and map every failure onto an :class:`ApiError`.

``http_front.py`` (OpenAI-compatible HTTP) and ``grpc_front.py`` (``llmroute.v1.Router``) only
translate between their wire formats and the dicts this module takes and returns. Requests read the
config snapshot once, so a config swap mid-request changes nothing for that request.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import logging
import random
import struct
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .accounting import Usage, cost_micro, usage_of
from .adapters.errors import ErrorKind, ProviderError
from .attempts import (
    AllFailed,
    ChatOutcome,
    Policy,
    SpendRefused,
    Trace,
    open_stream,
    run_chat,
    run_embeddings,
)
from .audit import AuditLog
from .budget import BudgetGuard, LocalSource
from .cache import (
    ResponseCache,
    replay_chunks,
)
from .config.snapshot import BackendEntry, ModelEntry, Snapshot
from .config.store import ConfigStore
from .health import HealthBook, RouteHealth
from .ids import new_id
from .load import Coalescer, LoadLimits, LoadSettings, fingerprint, overloaded_error
from .memory import ConversationMemory
from .memory.conversation import assistant_message
from .metrics import Metrics
from .openai_api.errors import ApiError
from .openai_api.validate import error_for_unknown_model, parse_chat
from .ratelimit import RateLimiter
from .request_policies import Request, RequestPolicies
from .routing import Availability, Decision, LatencyEstimate, LatencyProbes, RoutingRefused, plan
from .routing.capabilities import Kind
from .stream_call import StreamCall
from .tracing import Tracing
from .upstream import UpstreamClient
from .usage import UsageBuffer, UsageRecord

__all__ = ["Hints", "RouteMeta", "RouterService"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
_T = TypeVar("_T")


@dataclass(slots=True)
class Hints:
    """Routing hints from x-llmroute-* request headers (or the gRPC RoutingHints). Treated as
    immutable; not ``frozen`` only because that doubles the cost of building one, once per request."""

    task: str = ""
    tier: str = ""
    tenant: str = ""
    user: str = ""
    no_cache: bool = False
    request_id: str = field(default_factory=new_id)
    idempotency_key: str = ""  # Idempotency-Key: identical in-flight requests share one call
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)  # for rules
    debug: bool = False  # x-llmroute-debug: 1 asks for the x-llmroute-decision header
    conversation: str = ""  # x-llmroute-conversation: continue this stored conversation (spec.memory)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], body: Json, *, request_id: str = "") -> Hints:
        user = (
            headers.get("x-llmroute-user")
            or (body.get("user") if isinstance(body.get("user"), str) else "")
            or ""
        )
        return cls(
            task=headers.get("x-llmroute-task", ""),
            tier=headers.get("x-llmroute-tier", ""),
            tenant=headers.get("x-llmroute-tenant", ""),
            user=user,
            no_cache=headers.get("x-llmroute-no-cache", "").lower() in ("1", "true", "yes"),
            request_id=request_id or headers.get("x-request-id") or new_id(),
            idempotency_key=headers.get("idempotency-key", ""),
            conversation=headers.get("x-llmroute-conversation", ""),
            headers=headers,
            debug=headers.get("x-llmroute-debug", "").lower() in ("1", "true", "yes"),
        )


@dataclass
class RouteMeta:
    """What the x-llmroute-* response headers report."""

    backend: str
    region: str
    attempts: int
    cost_usd: float | None
    cache: str = "off"
    coalesced: bool = False  # this answer came from an identical request's upstream call
    decision: Decision | None = None  # adds x-llmroute-truncated (and x-llmroute-decision if debug)
    debug: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)  # rate-limit, budget and downgrade headers

    def headers(self) -> dict[str, str]:
        out = {
            "x-llmroute-backend": self.backend,
            "x-llmroute-region": self.region,
            "x-llmroute-attempts": str(self.attempts),
            "x-llmroute-cache": self.cache,
        }
        if self.cost_usd is not None:
            out["x-llmroute-cost-usd"] = f"{self.cost_usd:.6f}"
        if self.coalesced:
            out["x-llmroute-coalesced"] = "true"
        if self.decision is not None:
            out.update(self.decision.response_headers(debug=self.debug))
        out.update(self.extra)
        return out


class RouterService:
    """Serves chat and embeddings requests from the current config."""

    def __init__(
        self,
        *,
        store: ConfigStore,
        upstream: UpstreamClient,
        metrics: Metrics,
        usage: UsageBuffer,
        load: LoadSettings | None = None,
        region: str = "",
        policies: RequestPolicies | None = None,
        memory: ConversationMemory | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        self.tracing = tracing or Tracing()  # OpenTelemetry spans; off without an OTLP endpoint
        self.upstream = upstream
        self.metrics = metrics
        self.usage = usage
        self.region = region  # the --region flag; RouterConfig.region, when set, takes precedence
        # The health tracker plugs in here: availability (breakers, ejection) and latency estimates.
        self.availability: Availability | None = None
        self.latency: LatencyEstimate | None = None
        # One health book per sidecar (health/): breakers, Retry-After holds, latency, retry budgets.
        self.health = HealthBook(listener=metrics.health)
        if store.current is not None:
            self.health.sync(store.current)
        store.on_swap(self.health.sync)
        self.availability = self.health.backend_available
        self.latency = self.health.backend_latency
        self.rng = random.Random()
        self.probes = LatencyProbes()  # the latency strategy's probe slots, one set per sidecar
        # Per-backend concurrency limits follow config swaps; coalescing shares in-flight calls.
        self.limits = LoadLimits(settings=load, metrics=metrics.load)
        if store.current is not None:
            self.limits.apply(store.current)
        store.on_swap(self.limits.apply)
        # Resilience settings per route, built once per config rather than once per request.
        self._policies: dict[int, tuple[object, Policy]] = {}
        store.on_swap(lambda _snapshot: self._policies.clear())
        self.coalescer: Coalescer[tuple[Json, RouteMeta]] = Coalescer(on_join=metrics.load.coalesced.inc)
        # Budgets, rate limits, cache, PII and the audit log (request_policies.py); without one given,
        # in-process parts: a standalone sidecar's own budget count, local buckets, a memory cache.
        self.policies = policies or default_policies(metrics, usage)
        # Conversation memory (memory/): without a shared Redis, requests naming a conversation get a 400.
        self.memory = memory or ConversationMemory(None)
        if store.current is not None:
            self.policies.budgets.sync(store.current.config)
        store.on_swap(self._policies_swap)

    def _policies_swap(self, snapshot: Snapshot) -> None:
        self.policies.clear()
        self.policies.budgets.sync(snapshot.config)

    # -- lookup ---------------------------------------------------------------------------------

    def namespace(self) -> str:
        """The namespace this sidecar's routes live in (they all share the pod's)."""
        routes = self._snapshot().config.routes
        return routes[0].namespace if routes else ""

    def _snapshot(self) -> Snapshot:
        snapshot = self.store.current
        if snapshot is None:
            raise ApiError(
                503,
                "the sidecar has no routing config yet; it is starting or its config was rejected",
                code="not_ready",
            )
        return snapshot

    def _entry(self, snapshot: Snapshot, model: str) -> ModelEntry:
        entry = snapshot.models.get(model)
        if entry is None:
            raise error_for_unknown_model(model, snapshot.model_names())
        return entry

    def _policy(self, entry: ModelEntry) -> Policy:
        cached = self._policies.get(id(entry.route))
        if cached is not None and cached[0] is entry.route:  # the identity check guards id() reuse
            return cached[1]
        policy = Policy.from_route(entry.route)
        self._policies[id(entry.route)] = (entry.route, policy)
        return policy

    def list_models(self) -> list[Json]:
        snapshot = self.store.current
        if snapshot is None:
            return []
        return [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": f"llmroute:{entry.route.namespace}/{entry.route.name}",
            }
            for name, entry in sorted(snapshot.models.items())
        ]

    # -- accounting -----------------------------------------------------------------------------

    def _trace(self, operation: str = "chat") -> Trace:
        tracing = self.tracing

        def on_attempt(backend: BackendEntry, error: ProviderError | None, seconds: float) -> None:
            meters = self.metrics.attempted(
                backend.name, backend.provider, "ok" if error is None else error.kind.value
            )
            meters.attempts.inc()
            meters.seconds.observe(seconds)
            if tracing.enabled:
                tracing.attempt(backend, error, seconds, operation)

        return Trace(on_attempt=on_attempt)

    def _request(self, body: Json, hints: Hints, kind: str, *, stream: bool = False) -> Request:
        snapshot = self._snapshot()
        entry = self._entry(snapshot, body["model"])
        return Request(
            entry=entry,
            policies=self.policies.for_route(entry.route),
            hints=hints,
            body=body,
            kind=kind,
            stream=stream,
            config_version=snapshot.version,
        )

    async def _admit(self, request: Request, *, stream: bool = False) -> Decision:
        """PII, plan, rate limits, budgets: everything before the cache and the attempt loop.
        A policy the route does not use is not even awaited (each await costs about a microsecond)."""
        policies = self.policies
        route_policies = request.policies
        if route_policies.abuse is not None:
            await policies.screen(request)
        policies.protect(request)
        try:
            decision = self._plan(request.entry, request.body, request.hints, request.kind, stream=stream)  # type: ignore[arg-type]
        except RoutingRefused as exc:
            raise policies.refuse(request, exc, "invalid") from None
        request.decision = decision
        request.estimated_tokens = decision.estimate.total
        if route_policies.rate_limits:
            await policies.limit(request)
        policies.open_charge(request)
        decision = policies.downgrade(request, decision)
        request.decision = decision
        return decision

    async def admit(self, body: Json, hints: Hints, kind: str = "chat") -> tuple[Request, Decision]:
        """Everything a request goes through before the cache and the attempt loop, for callers that
        send it some other way: a batch line bound for a provider's batch API (``batch/``)."""
        request = self._request(body, hints, kind)
        return request, await self._admit(request)

    async def _guarded(self, request: Request, decision: Decision, trace: Trace, call: Awaitable[_T]) -> _T:
        """Await an attempt loop: no candidate served -> the accounted ApiError; cancelled -> the
        winning attempt's reservation (if any) goes back. Calls a hedge race sent and cut off are
        billed in every case."""
        outcome = "failed"
        try:
            result = await call
            outcome = "hedge_won" if trace.hedge_won else "primary_won"
            return result
        except AllFailed as exc:
            raise await self._fail(request, exc, decision, trace) from None
        except BaseException:
            if trace.reservation is not None:
                trace.reservation.release()
            outcome = "cancelled"
            raise
        finally:
            if trace.hedged:
                request.hedged = trace.hedged
                self.metrics.hedges.labels(request.entry.name, outcome).inc()
            if trace.abandoned:  # calls a hedge race cut off were sent: billed, whatever happens next
                self.policies.settle_abandoned(request, trace.abandoned)
                trace.abandoned.clear()

    async def _fail(self, request: Request, exc: AllFailed, decision: Decision, trace: Trace) -> ApiError:
        error = self._failure(request.entry, exc, decision)
        outcome = {429: "rate_limited", 504: "timeout"}.get(error.status, "error")
        if error.code == "budget_exceeded":
            outcome = "budget_exceeded"
        await self.policies.finish(
            request, None, Usage(), outcome=outcome, status=error.status, attempts=trace.attempts
        )
        error.headers.update(request.extra_headers())
        return error

    def _meta(
        self, request: Request, backend: BackendEntry | None, attempts: int, cost: float | None
    ) -> RouteMeta:
        return RouteMeta(
            backend.name if backend is not None else "",
            backend.region if backend is not None else "",
            attempts,
            cost,
            cache=request.cache or "off",
            decision=request.decision,
            debug=request.hints.debug,
            extra=request.extra_headers(),
        )

    async def embed_for_cache(self, entry: ModelEntry, text: str, request: Request) -> list[float] | None:
        """The semantic cache's embedding of ``text`` by the route's embedding backend (its cost is a
        usage record of its own); None when that backend fails, which only means no semantic lookup."""
        backend = entry.backends_by_name.get(request.policies.semantic_backend)
        if backend is None:
            return None
        trace = self._trace("embeddings")
        try:
            outcome = await run_embeddings(
                self.upstream,
                [backend],
                {"model": backend.target.model, "input": text},
                self._policy(entry),
                trace,
                gate=self.limits.gate(request.hints.tier, request.hints.tenant),
                health=RouteHealth(self.health, entry.facts.name),
            )
        except AllFailed as exc:
            log.info("semantic cache: embedding by %s failed, no lookup: %s", backend.name, exc)
            return None
        data = outcome.response.get("data") or []
        vector = data[0].get("embedding") if data and isinstance(data[0], dict) else None
        usage = usage_of(outcome.response.get("usage")) or Usage()
        cost = cost_micro(backend, usage)
        if cost:
            self.metrics.cost.labels(entry.name, backend.name).inc(cost / 1e6)
        self.usage.add(
            UsageRecord(
                request_id=f"{request.hints.request_id}:embedding",
                route=entry.facts.route_name,
                model=entry.name,
                backend=backend.name,
                provider=backend.provider,
                tenant=request.hints.tenant,
                user=request.hints.user,
                input_tokens=usage.input_tokens,
                output_tokens=0,
                cost_micro_usd=cost,
                outcome="ok",
                latency_seconds=0.0,
                region=backend.region,
                attempts=trace.attempts,
                config_version=request.config_version,
                budgets=request.charge.names if request.charge is not None else (),
                provider_model=backend.target.model,
            )
        )
        return vector if isinstance(vector, list) else None

    # -- calls ----------------------------------------------------------------------------------

    async def chat(self, body: Json, hints: Hints) -> tuple[Json, RouteMeta]:
        if not hints.idempotency_key:
            return await self._chat_once(body, hints)
        # Accounting happens once, inside the shared call; followers get a copy of its answer.
        key = (hints.tenant, hints.user, hints.idempotency_key)
        (response, meta), joined = await self.coalescer.run(
            key, fingerprint(body), lambda: self._chat_once(body, hints)
        )
        if not joined:
            return response, meta
        return copy.deepcopy(response), dataclasses.replace(meta, coalesced=True)

    async def _chat_once(self, body: Json, hints: Hints) -> tuple[Json, RouteMeta]:
        request = self._request(body, hints, "chat")
        if hints.conversation:
            await self._remembered(request)
        return await self.answer(request, await self._admit(request))

    async def answer(self, request: Request, decision: Decision) -> tuple[Json, RouteMeta]:
        """The cache, then the attempt loop, of a chat request :meth:`admit` let through."""
        entry, hints = request.entry, request.hints
        cached = (
            await self.policies.lookup(request, self.embed_for_cache) if request.policies.caching else None
        )
        if cached is not None:
            await self.policies.finish(
                request, None, usage_of(cached.get("usage")) or Usage(), outcome="ok", status=200, attempts=0
            )
            await self.memory.record(request, cached)
            return self._restored(request, cached), self._meta(request, None, 0, 0.0)
        trace = self._trace()
        outcome: ChatOutcome = await self._guarded(
            request,
            decision,
            trace,
            run_chat(
                self.upstream,
                decision.candidates,
                decision.body,
                self._policy(entry),
                trace,
                gate=self.limits.gate(hints.tier, hints.tenant),
                health=RouteHealth(self.health, entry.facts.name),
                spend=self.policies.spend_hook(request),
                trace_headers=self.tracing.outgoing(),
            ),
        )
        response = outcome.response
        response["model"] = response.get("model") or outcome.backend.target.model
        if isinstance(answer_id := response.get("id"), str):
            request.response_id = answer_id  # feedback names the answer by it (experiment/)
        usage = usage_of(response.get("usage")) or Usage()
        if request.cache == "miss":
            await self.policies.remember(request, response)
        # For an audit line with text: the answer as the provider gave it (placeholders, not the PII).
        completion = _completion_text(response) if request.policies.audit_text else None
        provided, response = response, self._restored(request, response)
        cost = await self.policies.finish(
            request,
            outcome.backend,
            usage,
            outcome="ok",
            status=200,
            attempts=outcome.trace.attempts,
            reservation=trace.reservation,
            completion=completion,
        )
        if request.memory is not None:
            await self.memory.record(request, provided)  # as the provider gave it (memory/policy.py)
        self.metrics.request_seconds.labels(entry.name, "false").observe(time.monotonic() - request.started)
        cost += request.hedge_cost  # the app is told what the request cost, the lost hedge included
        return response, self._meta(request, outcome.backend, outcome.trace.attempts, cost / 1e6)

    async def _remembered(self, request: Request) -> None:
        """Add the stored conversation to the request (memory/); a refusal is accounted like any."""
        try:
            await self.memory.prepare(request, self._summarize)
        except ApiError as exc:
            raise self.policies.refuse(request, exc, "invalid" if exc.status < 500 else "error") from None

    async def _summarize(self, request: Request, body: Json) -> str:
        """A summary for conversation memory, from the route's summarizer model: a request of the same
        tenant and user (its usage is counted like any other), without memory of its own."""
        hints = Hints(
            tenant=request.hints.tenant,
            user=request.hints.user,
            request_id=f"{request.hints.request_id}-summary",
        )
        response, _meta = await self.chat(parse_chat(body), hints)
        answer = assistant_message(response)
        content = answer.get("content") if answer is not None else None
        if not isinstance(content, str) or not content.strip():
            raise ApiError(502, "the summarizer model gave no summary", code="memory_summary_failed")
        return content

    def _restored(self, request: Request, response: Json) -> Json:
        if request.redaction is not None and request.policies.pii_restore:
            return request.redaction.restore_response(response)
        return response

    async def chat_stream(self, body: Json, hints: Hints, *, include_usage: bool) -> StreamCall:
        request = self._request(body, hints, "chat", stream=True)
        entry = request.entry
        if hints.conversation:
            await self._remembered(request)
        decision = await self._admit(request, stream=True)
        cached = (
            await self.policies.lookup(request, self.embed_for_cache) if request.policies.caching else None
        )
        if cached is not None:
            return StreamCall(
                self, request, replay=replay_chunks(cached, include_usage=include_usage), cached=cached
            )
        trace = self._trace()
        outcome = await self._guarded(
            request,
            decision,
            trace,
            open_stream(
                self.upstream,
                decision.candidates,
                decision.body,
                self._policy(entry),
                trace,
                include_usage=include_usage,
                gate=self.limits.gate(hints.tier, hints.tenant),
                health=RouteHealth(self.health, entry.facts.name, stream=True),
                spend=self.policies.spend_hook(request),
                trace_headers=self.tracing.outgoing(),
            ),
        )
        request.ttft = time.monotonic() - request.started
        self.metrics.ttft_seconds.labels(entry.name, outcome.backend.name).observe(request.ttft)
        return StreamCall(self, request, outcome=outcome)

    async def embeddings(self, body: Json, hints: Hints) -> tuple[Json, RouteMeta]:
        request = self._request(body, hints, "embeddings")
        entry = request.entry
        decision = await self._admit(request)
        trace = self._trace("embeddings")
        outcome = await self._guarded(
            request,
            decision,
            trace,
            run_embeddings(
                self.upstream,
                decision.candidates,
                request.body,
                self._policy(entry),
                trace,
                gate=self.limits.gate(hints.tier, hints.tenant),
                health=RouteHealth(self.health, entry.facts.name),
                spend=self.policies.spend_hook(request),
            ),
        )
        usage = usage_of(outcome.response.get("usage")) or Usage()
        cost = await self.policies.finish(
            request,
            outcome.backend,
            usage,
            outcome="ok",
            status=200,
            attempts=outcome.trace.attempts,
            reservation=trace.reservation,
        )
        if body.get("encoding_format") == "base64":
            _encode_base64(outcome.response)
        return outcome.response, self._meta(request, outcome.backend, outcome.trace.attempts, cost / 1e6)

    def _plan(
        self, entry: ModelEntry, body: Json, hints: Hints, kind: Kind, *, stream: bool = False
    ) -> Decision:
        """Candidates, their order and the body to send (``routing/planner.py``), with metrics."""
        snapshot = self.store.current
        region = (snapshot.region if snapshot is not None else "") or self.region
        try:
            decision = plan(
                entry,
                body,
                hints,
                kind=kind,
                region=region,
                stream=stream,
                health=self.availability,
                latency=self.latency,
                rng=self.rng,
                probes=self.probes,
            )
        except RoutingRefused as exc:
            self.metrics.routing.refused(entry.name, exc.reason)
            self.metrics.errors.labels(entry.name, str(exc.status)).inc()
            log.info("model %s: refused before any upstream call (%s): %s", entry.name, exc.reason, exc)
            raise
        self.metrics.routing.decided(decision)
        if decision.truncated:
            log.warning(
                "model %s: dropped the %d oldest messages to fit a context window "
                "(contextOverflow: truncate-oldest); request %s",
                entry.name,
                decision.truncated,
                hints.request_id,
            )
        if hints.debug:
            log.info("model %s: request %s: %s", entry.name, hints.request_id, decision.explain())
        return decision

    def _failure(self, entry: ModelEntry, exc: AllFailed, decision: Decision) -> ApiError:
        """The answer when no candidate served: 400 for the request's own fault, else 429/503."""
        final = exc.final
        kinds = {err.kind for _, err in exc.errors}
        summary = "; ".join(
            f"{name}: {err.kind.value}" + (f" ({err.status})" if err.status else "") + f" {err.message}"
            for name, err in exc.errors
        )
        summary += decision.residency_note()
        log.warning("model %s: %s", entry.name, exc)
        overloaded = overloaded_error(entry.name, exc.errors)
        refused = [err for _, err in exc.errors if isinstance(err, SpendRefused)]
        if refused:
            # Whatever else failed, what stands between the app and an answer is the budget.
            refusal = refused[0].refusal
            until = f" until {refusal.reset_at}" if refusal.reset_at else ""
            error = ApiError(
                429,
                f"budget {refusal.budget!r} does not allow this request{until}: {summary}",
                code="budget_exceeded",
                extra={"budget": refusal.budget, "reset_at": refusal.reset_at or None},
                headers={"x-llmroute-budget": refusal.budget}
                | ({"x-llmroute-budget-reset": refusal.reset_at} if refusal.reset_at else {}),
            )
        elif overloaded is not None:
            error = overloaded
        elif final is not None and final.kind == ErrorKind.BAD_REQUEST:
            error = ApiError(
                400, f"the provider refused the request: {final.message}", code="upstream_bad_request"
            )
        elif kinds == {ErrorKind.CONTEXT_TOO_LONG}:
            error = ApiError(
                400,
                f"the prompt does not fit any backend of model {entry.name!r}: {summary}",
                param="messages",
                code="context_length_exceeded",
            )
        elif kinds == {ErrorKind.RATE_LIMITED}:
            waits = [err.retry_after for _, err in exc.errors if err.retry_after is not None]
            headers = {"retry-after": str(max(1, round(min(waits))))} if waits else {}
            error = ApiError(
                429,
                f"every backend of model {entry.name!r} is rate limited: {summary}",
                code="rate_limited",
                headers=headers,
            )
        elif kinds == {ErrorKind.TIMEOUT}:
            error = ApiError(
                504,
                f"no backend of model {entry.name!r} answered in time: {summary}",
                code="upstream_timeout",
            )
        else:
            error = ApiError(
                503,
                f"no backend of model {entry.name!r} could serve the request: {summary}",
                code="no_backend_available",
            )
        self.metrics.errors.labels(entry.name, str(error.status)).inc()
        return error


def _encode_base64(response: Json) -> None:
    """Providers without base64 output answer float lists; the app asked for base64 (float32 LE)."""
    for item in response.get("data") or []:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def default_policies(
    metrics: Metrics, usage: UsageBuffer, *, audit: AuditLog | None = None
) -> RequestPolicies:
    """In-process policy parts: what a standalone sidecar without Redis runs."""

    return RequestPolicies(
        metrics=metrics,
        usage=usage,
        budgets=BudgetGuard(source=LocalSource(), listener=metrics.policy.budget_event),
        rates=RateLimiter(),
        cache=ResponseCache(on_event=lambda event: metrics.policy.cache_events.labels(event).inc()),
        audit=audit or AuditLog(None),
    )


def _completion_text(response: Json) -> str | None:
    """The first choice's text, for an audit line of a route that logs text."""
    choices = response.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None

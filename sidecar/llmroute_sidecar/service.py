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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .adapters.errors import ErrorKind, ProviderError
from .attempts import (
    AllFailed,
    ChatOutcome,
    Policy,
    StreamOutcome,
    Trace,
    open_stream,
    run_chat,
    run_embeddings,
)
from .config.snapshot import BackendEntry, ModelEntry, Snapshot
from .config.store import ConfigStore
from .health import HealthBook, RouteHealth
from .load import Coalescer, LoadLimits, LoadSettings, fingerprint, overloaded_error
from .metrics import Metrics
from .openai_api.errors import ApiError
from .openai_api.validate import error_for_unknown_model
from .routing import Availability, Decision, LatencyEstimate, RoutingRefused, plan
from .routing.capabilities import Kind
from .upstream import UpstreamClient
from .usage import UsageBuffer, UsageRecord

__all__ = ["Hints", "RouteMeta", "RouterService"]

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass(frozen=True)
class Hints:
    """Routing hints from x-llmroute-* request headers (or the gRPC RoutingHints)."""

    task: str = ""
    tier: str = ""
    tenant: str = ""
    user: str = ""
    no_cache: bool = False
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    idempotency_key: str = ""  # Idempotency-Key: identical in-flight requests share one call
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)  # for rules
    debug: bool = False  # x-llmroute-debug: 1 asks for the x-llmroute-decision header

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], body: Json) -> Hints:
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
            request_id=headers.get("x-request-id") or uuid.uuid4().hex,
            idempotency_key=headers.get("idempotency-key", ""),
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
    ) -> None:
        self.store = store
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
        # Per-backend concurrency limits follow config swaps; coalescing shares in-flight calls.
        self.limits = LoadLimits(settings=load, metrics=metrics.load)
        if store.current is not None:
            self.limits.apply(store.current)
        store.on_swap(self.limits.apply)
        # Resilience settings per route, built once per config rather than once per request.
        self._policies: dict[int, tuple[object, Policy]] = {}
        store.on_swap(lambda _snapshot: self._policies.clear())
        self.coalescer: Coalescer[tuple[Json, RouteMeta]] = Coalescer(on_join=metrics.load.coalesced.inc)

    # -- lookup ---------------------------------------------------------------------------------

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

    def _trace(self) -> Trace:
        def on_attempt(backend: BackendEntry, error: ProviderError | None, seconds: float) -> None:
            result = "ok" if error is None else error.kind.value
            self.metrics.attempts.labels(backend.name, backend.provider, result).inc()
            self.metrics.attempt_seconds.labels(backend.name, backend.provider).observe(seconds)

        return Trace(on_attempt=on_attempt)

    def account(
        self,
        entry: ModelEntry,
        backend: BackendEntry,
        hints: Hints,
        usage: Json | None,
        started: float,
        outcome: str,
    ) -> float | None:
        """Record usage and metrics; returns the cost in USD when usage is known."""
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        cost = backend.cost_usd(prompt, completion) if usage is not None else None
        self.metrics.requests.labels(entry.name, backend.name, backend.provider, outcome).inc()
        self.metrics.tokens.labels(entry.name, backend.name, "input").inc(prompt)
        self.metrics.tokens.labels(entry.name, backend.name, "output").inc(completion)
        if cost:
            self.metrics.cost.labels(entry.name, backend.name).inc(cost)
        self.usage.add(
            UsageRecord(
                request_id=hints.request_id,
                route=f"{entry.route.namespace}/{entry.route.name}",
                model=entry.name,
                backend=backend.name,
                provider=backend.provider,
                tenant=hints.tenant,
                user=hints.user,
                input_tokens=prompt,
                output_tokens=completion,
                cost_micro_usd=round((cost or 0.0) * 1_000_000),
                outcome=outcome,
                latency_seconds=time.monotonic() - started,
            )
        )
        return cost

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
        started = time.monotonic()
        entry = self._entry(self._snapshot(), body["model"])
        decision = self._plan(entry, body, hints, "chat")
        try:
            outcome: ChatOutcome = await run_chat(
                self.upstream,
                decision.candidates,
                decision.body,
                self._policy(entry),
                self._trace(),
                gate=self.limits.gate(hints.tier),
                health=RouteHealth(self.health, entry.route.name),
            )
        except AllFailed as exc:
            raise self._failure(entry, exc, decision) from None
        response = outcome.response
        response["model"] = response.get("model") or outcome.backend.target.model
        cost = self.account(entry, outcome.backend, hints, response.get("usage"), started, "ok")
        self.metrics.request_seconds.labels(entry.name, "false").observe(time.monotonic() - started)
        return response, RouteMeta(
            outcome.backend.name,
            outcome.backend.region,
            outcome.trace.attempts,
            cost,
            decision=decision,
            debug=hints.debug,
        )

    async def chat_stream(
        self, body: Json, hints: Hints, *, include_usage: bool
    ) -> tuple[StreamOutcome, ModelEntry, Decision]:
        started = time.monotonic()
        entry = self._entry(self._snapshot(), body["model"])
        decision = self._plan(entry, body, hints, "chat", stream=True)
        try:
            outcome = await open_stream(
                self.upstream,
                decision.candidates,
                decision.body,
                self._policy(entry),
                self._trace(),
                include_usage=include_usage,
                gate=self.limits.gate(hints.tier),
                health=RouteHealth(self.health, entry.route.name, stream=True),
            )
        except AllFailed as exc:
            raise self._failure(entry, exc, decision) from None
        self.metrics.ttft_seconds.labels(entry.name, outcome.backend.name).observe(time.monotonic() - started)
        return outcome, entry, decision

    async def embeddings(self, body: Json, hints: Hints) -> tuple[Json, RouteMeta]:
        started = time.monotonic()
        entry = self._entry(self._snapshot(), body["model"])
        decision = self._plan(entry, body, hints, "embeddings")
        try:
            outcome = await run_embeddings(
                self.upstream,
                decision.candidates,
                body,
                self._policy(entry),
                self._trace(),
                gate=self.limits.gate(hints.tier),
                health=RouteHealth(self.health, entry.route.name),
            )
        except AllFailed as exc:
            raise self._failure(entry, exc, decision) from None
        cost = self.account(entry, outcome.backend, hints, outcome.response.get("usage"), started, "ok")
        if body.get("encoding_format") == "base64":
            _encode_base64(outcome.response)
        return outcome.response, RouteMeta(
            outcome.backend.name,
            outcome.backend.region,
            outcome.trace.attempts,
            cost,
            decision=decision,
            debug=hints.debug,
        )

    def _plan(
        self, entry: ModelEntry, body: Json, hints: Hints, kind: Kind, *, stream: bool = False
    ) -> Decision:
        """Candidates, their order and the body to send (``routing/planner.py``), with metrics."""
        snapshot = self.store.current
        region = (snapshot.config.region if snapshot is not None else "") or self.region
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
        if overloaded is not None:
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

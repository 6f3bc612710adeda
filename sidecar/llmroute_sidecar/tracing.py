"""OpenTelemetry traces of app requests, with the GenAI semantic conventions; off by default.

With ``--otlp-endpoint`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) every chat or embeddings request gets
a SERVER span ``"{operation} {model}"`` and one CLIENT span per upstream attempt, batched and
exported over OTLP/gRPC. The request span continues the app's W3C ``traceparent``. It carries
``gen_ai.operation.name``, ``gen_ai.request.model`` (the logical model), ``gen_ai.response.model``,
``gen_ai.provider.name`` and ``gen_ai.usage.*_tokens``, llmroute's route, backend, region, cache and
attempt count, and a ``llmroute.route_decision`` event (strategy, rule, region choice, candidates,
exclusions). Each attempt span carries the backend's provider, provider model, region, server
address, and ``error.type`` when it failed. Upstream chat calls carry the request span's
``traceparent`` (:meth:`Tracing.outgoing`), so a provider that traces (a self-hosted vLLM with
OpenTelemetry, say) joins the app's trace. Without an endpoint nothing of OpenTelemetry is imported
and every call here is a no-op. Neighbours: ``http_front.py`` opens request spans, ``service.py``
reports attempts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .openai_api.errors import ApiError

if TYPE_CHECKING:
    from .config.snapshot import BackendEntry
    from .routing import Decision

__all__ = ["NO_SPAN", "PROVIDER_NAMES", "RequestSpan", "Tracing"]

#: gen_ai.provider.name of each provider (the semantic conventions' well-known values).
PROVIDER_NAMES = {
    "openai": "openai",
    "openai-compatible": "openai",
    "azure-openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "bedrock": "aws.bedrock",
    "cohere": "cohere",
}


class RequestSpan:
    """One request's span, as the context manager around the request: an :class:`ApiError` leaving it
    marks the span failed. Without tracing it is :data:`NO_SPAN`, whose every method does nothing, so
    a request pays no allocation for tracing that is off."""

    __slots__ = ("_scope", "span")

    def __init__(self, span: Any = None, scope: Any = None) -> None:
        self.span = span
        self._scope = scope  # the span's start_as_current_span context manager

    def __enter__(self) -> RequestSpan:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if self._scope is None:
            return
        if isinstance(error, ApiError):
            self.failed(error.status, error.code)
        self._scope.__exit__(kind, error, tb)

    def set(self, attributes: Mapping[str, Any]) -> None:
        if self.span is not None:
            self.span.set_attributes({k: v for k, v in attributes.items() if v is not None and v != ""})

    def decided(self, decision: Decision | None) -> None:
        if self.span is None or decision is None:
            return
        self.span.add_event(
            "llmroute.route_decision",
            {
                "llmroute.strategy": str(decision.strategy),
                "llmroute.rule": decision.rule_label,
                "llmroute.region_choice": decision.region_choice,
                "llmroute.candidates": [b.name for b in decision.candidates],
                "llmroute.excluded": [f"{e.backend}:{e.reason}" for e in decision.excluded],
            },
        )

    def failed(self, status: int, code: str | None) -> None:
        if self.span is not None:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attributes({"error.type": code or str(status), "http.response.status_code": status})
            self.span.set_status(Status(StatusCode.ERROR, code or str(status)))


NO_SPAN = RequestSpan()


class Tracing:
    def __init__(
        self, endpoint: str = "", *, service_name: str = "llmroute-sidecar", insecure: bool = True
    ) -> None:
        self.endpoint = endpoint
        self._tracer: Any = None
        self._provider: Any = None
        if endpoint:
            self._setup(endpoint, service_name, insecure)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def _setup(self, endpoint: str, service_name: str, insecure: bool) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, insecure=insecure), schedule_delay_millis=1000
            )
        )
        self._provider = provider
        self._tracer = provider.get_tracer("llmroute.sidecar")

    def request(self, headers: Mapping[str, str], operation: str, model: str) -> RequestSpan:
        """The span of one app request, to enter around it (attempts become its children)."""
        if self._tracer is None:
            return NO_SPAN
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        scope = self._tracer.start_as_current_span(
            f"{operation} {model}",
            context=TraceContextTextMapPropagator().extract(dict(headers)),
            kind=trace.SpanKind.SERVER,
            attributes={"gen_ai.operation.name": operation, "gen_ai.request.model": model},
            record_exception=False,
            set_status_on_exception=False,
        )
        return RequestSpan(scope.__enter__(), scope)

    def outgoing(self) -> dict[str, str] | None:
        """W3C trace context headers of the current request span, for upstream calls; None when off."""
        if self._tracer is None:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return carrier or None

    def attempt(self, backend: BackendEntry, error: Any, seconds: float, operation: str = "chat") -> None:
        """One upstream attempt that just ended, as a child span of the current request span."""
        if self._tracer is None:
            return
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        target = backend.target
        url = urlsplit(getattr(target, "endpoint", "") or "")
        span = self._tracer.start_span(
            f"{operation} {target.model}",
            kind=trace.SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes={
                k: v
                for k, v in {
                    "gen_ai.operation.name": operation,
                    "gen_ai.provider.name": PROVIDER_NAMES.get(backend.provider, backend.provider),
                    "gen_ai.request.model": target.model,
                    "llmroute.backend": backend.name,
                    "cloud.region": backend.region,
                    "server.address": url.hostname,
                    "server.port": url.port,
                }.items()
                if v not in (None, "")
            },
        )
        if error is not None:
            span.set_attribute("error.type", error.kind.value)
            span.set_status(Status(StatusCode.ERROR, str(error.message)[:200]))
        span.end(end_time=end)

    def flush(self, timeout_s: float = 5.0) -> None:
        if self._provider is not None:
            self._provider.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None

"""OpenTelemetry traces of the sidecar at a real OTLP/gRPC receiver (``tests/otlp_support.py``),
through the official OpenAI SDK: the request span continues the app's W3C ``traceparent`` and carries
the GenAI attributes and the route decision; each upstream attempt is a child span with its
provider, model and region, the failed one marked with its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.otlp_support import OtlpReceiver, attributes

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.asyncio

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    server = OtlpReceiver()
    await server.start()
    yield server
    await server.stop()


async def test_a_failover_is_one_trace_with_a_span_per_attempt(
    fake: FakeFactory, sidecar: SidecarFactory, receiver: OtlpReceiver
) -> None:
    primary = await fake("openai-compatible", faults="status=503")
    fallback = await fake("anthropic")
    resources = route_yaml(
        [
            {"name": "primary", "provider": "openai-compatible", "model": "gpt-x", "endpoint": primary.base_url, "region": "us-east-1"},
            {"name": "fallback", "provider": "anthropic", "model": "claude-x", "endpoint": fallback.base_url, "region": "eu-west-1"},
        ],
        extra_spec="  resilience:\n    retries: {attempts: 0, backoff: {base: 5ms, max: 10ms}}",
    )  # fmt: skip
    instance = await sidecar(resources, otlp_endpoint=receiver.endpoint)
    async with client_for(instance) as client:
        answer = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "trace me"}],
            max_tokens=20,
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        streamed = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "and stream"}], stream=True
        )
        chunks = [c async for c in streamed]
    assert answer.choices[0].message.content and chunks
    await asyncio.to_thread(instance.service.tracing.flush)  # it blocks: the receiver shares this loop
    spans = await receiver.wait_for(6)  # two requests, each: a failed and a good attempt
    ours = [s for s in spans if s.trace_id.hex() == TRACE_ID]
    (request,) = [s for s in ours if s.kind == SERVER]
    assert request.parent_span_id.hex() == PARENT_ID  # the app's traceparent is continued
    assert request.name == "chat chat"
    seen = attributes(request)
    assert seen["gen_ai.operation.name"] == "chat" and seen["gen_ai.request.model"] == "chat"
    assert seen["gen_ai.response.model"] == "claude-x"
    assert seen["gen_ai.usage.input_tokens"] > 0 and seen["gen_ai.usage.output_tokens"] > 0
    assert seen["llmroute.backend"] == "fallback" and seen["llmroute.attempts"] == 2
    assert seen["cloud.region"] == "eu-west-1" and seen["llmroute.route"] == "test-route"
    (decision,) = [e for e in request.events if e.name == "llmroute.route_decision"]
    assert attributes(decision)["llmroute.candidates"] == ["primary", "fallback"]
    attempts = sorted((s for s in ours if s.kind == CLIENT), key=lambda s: s.start_time_unix_nano)
    assert [s.parent_span_id for s in attempts] == [request.span_id] * 2
    first, second = (attributes(s) for s in attempts)
    assert first["gen_ai.provider.name"] == "openai" and first["gen_ai.request.model"] == "gpt-x"
    assert first["cloud.region"] == "us-east-1" and first["server.address"] == "127.0.0.1"
    assert "error.type" in first and attempts[0].status.code == 2  # STATUS_CODE_ERROR
    assert second["gen_ai.provider.name"] == "anthropic" and second["gen_ai.request.model"] == "claude-x"
    assert "error.type" not in second
    assert request.start_time_unix_nano <= attempts[0].start_time_unix_nano
    assert attempts[1].end_time_unix_nano <= request.end_time_unix_nano
    # The stream is its own trace (no traceparent), with its usage on the request span.
    (stream_span,) = [s for s in spans if s.kind == SERVER and s.trace_id.hex() != TRACE_ID]
    assert attributes(stream_span)["gen_ai.usage.output_tokens"] > 0
    assert receiver.resources[0]["service.name"].startswith("llmroute-sidecar")
    # Each upstream call carried the request span's trace context, so a provider that traces joins in.
    sent = [r.headers.get("traceparent", "") for r in [*primary.requests, *fallback.requests]]
    assert f"00-{TRACE_ID}-{request.span_id.hex()}-01" in sent
    assert all(header.startswith("00-") for header in sent), sent


async def test_a_refused_request_is_a_failed_span(
    fake: FakeFactory, sidecar: SidecarFactory, receiver: OtlpReceiver
) -> None:
    llm = await fake("openai-compatible")
    resources = route_yaml(
        [{"name": "llm", "provider": "openai-compatible", "model": "m", "endpoint": llm.base_url}]
    )
    instance = await sidecar(resources, otlp_endpoint=receiver.endpoint)
    async with client_for(instance) as client:
        with pytest.raises(Exception, match="does not exist"):
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    await asyncio.to_thread(instance.service.tracing.flush)  # it blocks: the receiver shares this loop
    (span,) = await receiver.wait_for(1)
    assert span.status.code == 2 and attributes(span)["error.type"] == "model_not_found"
    assert attributes(span)["http.response.status_code"] == 404

"""The sidecar's gRPC front (``llmroute.v1.Router``) end to end: a real ``grpc.aio`` client with the
generated stub against an in-process sidecar and fake OpenAI-protocol providers. Chat, streams with
usage and route info, tools, embeddings, models, health, reflection, status codes, a stream cut
mid-way and a client that cancels."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmroute_fakes.server import FakeProvider
from llmroute_proto.v1 import config_pb2, router_pb2_grpc
from llmroute_proto.v1 import router_pb2 as pb
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, route_yaml

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def channel_for() -> AsyncIterator[object]:
    channels: list[grpc.aio.Channel] = []

    def open_channel(instance: Sidecar) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{instance.grpc_port}")
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()


async def _two_backends(
    fake: FakeFactory, sidecar: SidecarFactory
) -> tuple[FakeProvider, FakeProvider, Sidecar]:
    primary = await fake("openai", api_key="sk-primary")
    secondary = await fake("openai-compatible")
    resources = route_yaml(
        [
            {
                "name": "primary",
                "provider": "openai",
                "model": "gpt-4o",
                "endpoint": primary.base_url,
                "key": "sk-primary",
            },
            {
                "name": "secondary",
                "provider": "openai-compatible",
                "model": "llama-3",
                "endpoint": secondary.base_url,
                "region": "eu-west-1",
            },
        ],
        extra_spec="  resilience:\n    timeout: {perAttempt: 2s, total: 10s}\n    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}}",
    )
    return primary, secondary, await sidecar(resources)


async def _drain(
    call: AsyncIterator[pb.ChatChunk], into: list[pb.ChatChunk] | None = None
) -> list[pb.ChatChunk]:
    """Read a stream to its end; ``into`` keeps what arrived before an error."""
    received = [] if into is None else into
    async for chunk in call:
        received.append(chunk)
    return received


def _user(text: str) -> pb.ChatMessage:
    return pb.ChatMessage(role=pb.ROLE_USER, content=text)


async def test_chat_with_route_info_usage_and_hints(
    fake: FakeFactory, sidecar: SidecarFactory, channel_for
) -> None:  # type: ignore[no-untyped-def]
    primary, _, instance = await _two_backends(fake, sidecar)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    request = pb.ChatRequest(
        model="chat",
        messages=[pb.ChatMessage(role=pb.ROLE_SYSTEM, content="be brief"), _user("hello there")],
        temperature=0.2,
        max_tokens=50,
        seed=7,
        stop=["\n\n"],
        user="u-1",
        routing=pb.RoutingHints(tenant="acme"),
    )
    response = await stub.Chat(
        request, metadata=[("x-llmroute-tenant", "ignored"), ("x-llmroute-task", "qa")]
    )
    assert "hello there" in response.choices[0].message.content
    assert response.choices[0].message.role == pb.ROLE_ASSISTANT
    assert response.choices[0].finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens > 0
    route = response.route
    assert (route.backend, route.region, route.attempts) == ("primary", "us-east-1", 1)
    expected = (response.usage.prompt_tokens * 2.0 + response.usage.completion_tokens * 8.0) / 1e6
    assert route.cost_usd == pytest.approx(expected, abs=1e-9)
    assert route.cache == config_pb2.CACHE_STATUS_BYPASS
    assert response.model and response.id
    sent = json.loads(primary.requests[-1].body)
    assert sent["model"] == "gpt-4o" and sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert (
        sent["temperature"] == 0.2
        and sent["max_tokens"] == 50
        and sent["seed"] == 7
        and sent["stop"] == ["\n\n"]
    )
    assert sent["user"] == "u-1"
    assert "top_p" not in sent and "n" not in sent, "unset optional fields are not sent"
    record = instance.usage.drain()[-1]
    assert (record.tenant, record.user, record.outcome) == ("acme", "u-1", "ok"), (
        "the request's hints win over metadata"
    )


async def test_chat_stream_chunks_usage_and_route(
    fake: FakeFactory, sidecar: SidecarFactory, channel_for
) -> None:  # type: ignore[no-untyped-def]
    primary, _, instance = await _two_backends(fake, sidecar)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    metadata = (("x-llmroute-tenant", "meta-tenant"), ("x-llmroute-user", "meta-user"))
    request = pb.ChatRequest(model="chat", messages=[_user("stream me please")], user="body-user")
    chunks = await _drain(stub.ChatStream(request, metadata=metadata))
    assert len(chunks) > 2
    text = "".join(choice.delta.content for c in chunks for choice in c.choices)
    assert "stream me please" in text
    assert chunks[0].route.backend == "primary" and chunks[0].route.attempts == 1
    assert chunks[0].choices[0].delta.role == pb.ROLE_ASSISTANT
    assert pb.FINISH_REASON_STOP in [choice.finish_reason for c in chunks for choice in c.choices]
    last = chunks[-1]
    assert last.usage.completion_tokens > 0 and last.usage.total_tokens > 0
    assert last.route.backend == "primary" and last.route.cost_usd > 0
    assert all(not c.HasField("usage") for c in chunks[:-1]), "usage on the last chunk only"
    assert all(not c.HasField("route") for c in chunks[1:-1]), "route info on the first and last chunks"
    assert len({c.id for c in chunks}) == 1
    assert json.loads(primary.requests[-1].body)["stream"] is True
    record = instance.usage.drain()[-1]
    assert record.outcome == "ok" and record.output_tokens == last.usage.completion_tokens
    assert (record.tenant, record.user) == ("meta-tenant", "meta-user"), "hints travel as metadata too"


async def test_tools_round_trip(fake: FakeFactory, sidecar: SidecarFactory, channel_for) -> None:  # type: ignore[no-untyped-def]
    primary, _, instance = await _two_backends(fake, sidecar)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    tool = pb.Tool(
        function=pb.FunctionDefinition(
            name="get_weather",
            description="Weather",
            parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}',
        )
    )
    history = [
        _user("weather in Paris?"),
        pb.ChatMessage(
            role=pb.ROLE_ASSISTANT,
            tool_calls=[
                pb.ToolCall(
                    id="call_1", function=pb.FunctionCall(name="get_weather", arguments='{"city": "Paris"}')
                )
            ],
        ),
        pb.ChatMessage(role=pb.ROLE_TOOL, tool_call_id="call_1", content="sunny"),
        _user("and in Rome?"),
    ]
    primary.queue_faults("tool_call=get_weather")
    response = await stub.Chat(
        pb.ChatRequest(
            model="chat",
            messages=history,
            tools=[tool],
            tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO),
        )
    )
    choice = response.choices[0]
    assert choice.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert choice.message.tool_calls[0].function.name == "get_weather" and choice.message.tool_calls[0].id
    assert not choice.message.HasField("content") or choice.message.content == ""
    sent = json.loads(primary.requests[-1].body)
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
    assert sent["tool_choice"] == "auto"
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}

    primary.queue_faults("tool_call=get_weather")
    chunks = [c async for c in stub.ChatStream(pb.ChatRequest(model="chat", messages=history, tools=[tool]))]
    names = [
        tc.function.name for c in chunks for ch in c.choices for tc in ch.delta.tool_calls if tc.function.name
    ]
    assert names == ["get_weather"]
    assert pb.FINISH_REASON_TOOL_CALLS in [ch.finish_reason for c in chunks for ch in c.choices]


async def test_embed_and_list_models(fake: FakeFactory, sidecar: SidecarFactory, channel_for) -> None:  # type: ignore[no-untyped-def]
    provider = await fake("openai")
    resources = route_yaml(
        [
            {
                "name": "emb",
                "provider": "openai",
                "model": "text-embedding-3-small",
                "endpoint": provider.base_url,
            }
        ],
        model="embed",
    )
    resources = resources.replace(
        "    pricing:", "    capabilities: {chat: false, embeddings: true}\n    pricing:", 1
    )
    instance = await sidecar(resources)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    result = await stub.Embed(pb.EmbedRequest(model="embed", input=["a", "b"], dimensions=8))
    assert [e.index for e in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 0 and result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0 and result.route.backend == "emb"
    assert json.loads(provider.requests[-1].body)["dimensions"] == 8
    listed = await stub.ListModels(pb.ListModelsRequest())
    assert [(m.id, m.owned_by, m.route) for m in listed.models] == [("embed", "demo", "test-route")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest(model="embed", messages=[_user("x")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "supports chat" in (
        caught.value.details() or ""
    )


async def test_health_and_reflection(fake: FakeFactory, sidecar: SidecarFactory, channel_for) -> None:  # type: ignore[no-untyped-def]
    _, _, instance = await _two_backends(fake, sidecar)
    channel = channel_for(instance)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "llmroute.v1.Router"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="llmroute.v1.Router"),
    ]
    answers = [a async for a in reflect.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"llmroute.v1.Router", "grpc.health.v1.Health"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto, (
        "clients such as grpcurl can read the schema"
    )


async def test_not_ready_until_a_config_loads(sidecar: SidecarFactory, channel_for) -> None:  # type: ignore[no-untyped-def]
    instance = await sidecar(
        "apiVersion: llmroute.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: x}\nspec: {models: []}\n"
    )
    channel = channel_for(instance)
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="llmroute.v1.Router"))
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    stub = router_pb2_grpc.RouterStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest(model="chat", messages=[_user("x")]))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await stub.ListModels(pb.ListModelsRequest())).models == []
    # A config arrives: the health status flips without a restart.
    assert instance.source is not None
    instance.source.path.write_text(
        route_yaml(
            [
                {
                    "name": "b",
                    "provider": "openai-compatible",
                    "model": "m",
                    "endpoint": "http://127.0.0.1:9/v1",
                }
            ]
        )
    )
    instance.source.load()
    for _ in range(50):
        answer = await health.Check(health_pb2.HealthCheckRequest(service="llmroute.v1.Router"))
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.02)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_unknown_model_is_not_found(fake: FakeFactory, sidecar: SidecarFactory, channel_for) -> None:  # type: ignore[no-untyped-def]
    _, _, instance = await _two_backends(fake, sidecar)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    request = pb.ChatRequest(model="gpt-5", messages=[_user("x")])
    for call in (stub.Chat(request), _drain(stub.ChatStream(request))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Known models: chat" in (caught.value.details() or "")
        trailing = dict(caught.value.trailing_metadata() or ())
        assert (
            trailing["x-llmroute-error-code"] == "model_not_found"
            and trailing["x-llmroute-error-param"] == "model"
        )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ChatRequest(model="chat"), "messages"),
        (pb.ChatRequest(messages=[_user("x")]), "model"),
        (pb.ChatRequest(model="chat", messages=[pb.ChatMessage(content="x")]), "messages[0].role"),
        (pb.ChatRequest(model="chat", messages=[pb.ChatMessage(role=pb.ROLE_USER)]), "messages[0].content"),
        (pb.ChatRequest(model="chat", messages=[_user("x")], temperature=3.0), "temperature"),
        (
            pb.ChatRequest(
                model="chat",
                messages=[_user("x")],
                tools=[pb.Tool(function=pb.FunctionDefinition(name="f", parameters_json="{oops"))],
            ),
            "tools[0].function.parameters_json",
        ),
    ],
)
async def test_invalid_request_is_invalid_argument_naming_the_field(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    channel_for,
    request_: pb.ChatRequest,
    field: str,  # type: ignore[no-untyped-def]
) -> None:
    primary, _, instance = await _two_backends(fake, sidecar)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    assert dict(caught.value.trailing_metadata() or ())["x-llmroute-error-param"] == field
    assert not primary.requests, "refused before any upstream call"


async def test_all_backends_down_is_unavailable_and_rate_limits_are_resource_exhausted(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    channel_for,  # type: ignore[no-untyped-def]
) -> None:
    primary, secondary, instance = await _two_backends(fake, sidecar)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    primary.set_faults("status=503")
    secondary.set_faults("reset")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest(model="chat", messages=[_user("hi")]))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    details = caught.value.details() or ""
    assert "primary: overloaded" in details and "secondary: connection" in details
    assert "Traceback" not in details
    primary.set_faults("status=429,retry_after=0")
    secondary.set_faults("status=429,retry_after=0")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _drain(stub.ChatStream(pb.ChatRequest(model="chat", messages=[_user("hi")])))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(caught.value.trailing_metadata() or ())["retry-after"] == "1"


@pytest.mark.parametrize("fault", ["cut_after=2", "error_event=2"])
async def test_mid_stream_fault_ends_with_an_error_status(
    fake: FakeFactory, sidecar: SidecarFactory, channel_for, fault: str
) -> None:  # type: ignore[no-untyped-def]
    primary, secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults(fault)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    received: list[pb.ChatChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _drain(
            stub.ChatStream(pb.ChatRequest(model="chat", messages=[_user("a long answer please")])), received
        )
    assert received, "some chunks arrived before the fault"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "broke" in (caught.value.details() or "")
    assert not secondary.requests, "no failover after chunks reached the app"
    assert instance.usage.drain()[-1].outcome == "stream_error"


async def test_client_cancel_closes_the_upstream_stream(
    fake: FakeFactory, sidecar: SidecarFactory, channel_for
) -> None:  # type: ignore[no-untyped-def]
    primary, _, instance = await _two_backends(fake, sidecar)
    primary.set_faults("slow_stream_ms=200")
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    call = stub.ChatStream(
        pb.ChatRequest(model="chat", messages=[_user("one two three four five six seven eight nine ten")])
    )
    first = await call.read()
    assert first.route.backend == "primary"
    call.cancel()
    counter = instance.metrics.requests.labels("chat", "primary", "openai", "client_disconnected")
    for _ in range(50):
        if counter._value.get() == 1:
            break
        await asyncio.sleep(0.02)
    assert counter._value.get() == 1
    assert instance.usage.drain()[-1].outcome == "client_disconnected"


async def test_budget_refusal_is_resource_exhausted_and_streams_carry_the_cost(
    fake: FakeFactory, sidecar: SidecarFactory, channel_for
) -> None:  # type: ignore[no-untyped-def]
    provider = await fake("openai-compatible")
    resources = route_yaml(
        [{"name": "local", "provider": "openai-compatible", "model": "m", "endpoint": provider.base_url}]
    ) + (
        "---\napiVersion: llmroute.io/v1alpha1\nkind: LLMBudget\nmetadata: {name: tiny, namespace: demo}\n"
        'spec: {scope: {routes: [test-route]}, period: {type: daily}, limits: {hard: "0.0001"}}\n'
    )
    instance = await sidecar(resources)
    stub = router_pb2_grpc.RouterStub(channel_for(instance))
    request = pb.ChatRequest(model="chat", messages=[_user("hello")], max_tokens=5)
    chunks = await _drain(stub.ChatStream(request))
    route = chunks[-1].route
    assert route.backend == "local" and route.cost_usd > 0  # the last chunk carries the stream's cost
    calls = len(provider.requests)
    refused: grpc.aio.AioRpcError | None = None
    for _ in range(50):  # 2 + 8 USD per million tokens: a few requests spend 0.0001 USD
        try:
            await stub.Chat(request)
        except grpc.aio.AioRpcError as exc:
            refused = exc
            break
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(refused.trailing_metadata() or ())
    assert trailing.get("x-llmroute-error-code") == "budget_exceeded", trailing
    assert "tiny" in (refused.details() or "")
    assert len(provider.requests) < calls + 50  # the refused one was not forwarded

"""The sidecar end to end with the official OpenAI SDK as the app and fake Anthropic and Cohere
providers behind it: the translating adapters must give the app answers, streams, tool calls and
usage indistinguishable from OpenAI's, fail over on overload, and never end a broken stream cleanly."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.timeout(60)

PROVIDERS = {"anthropic": "claude-sonnet-4-6", "cohere": "command-a-03-2025"}
RESILIENCE = (
    "  resilience:\n"
    "    timeout: {perAttempt: 2s, total: 10s}\n"
    "    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}}"
)
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def _single(fake: FakeFactory, sidecar: SidecarFactory, protocol: str) -> tuple[FakeProvider, Sidecar]:
    provider = await fake(protocol, api_key="k-" + protocol)
    backend = {
        "name": protocol,
        "provider": protocol,
        "model": PROVIDERS[protocol],
        "endpoint": provider.base_url,
        "key": "k-" + protocol,
    }
    return provider, await sidecar(route_yaml([backend], extra_spec=RESILIENCE))


@pytest.mark.parametrize("protocol", list(PROVIDERS))
async def test_chat_non_streaming(fake: FakeFactory, sidecar: SidecarFactory, protocol: str) -> None:
    provider, instance = await _single(fake, sidecar, protocol)
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        max_tokens=50,
        temperature=0.2,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == f"fake-{protocol} reply to: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert raw.headers["x-llmroute-backend"] == protocol
    assert float(raw.headers["x-llmroute-cost-usd"]) > 0
    sent = json.loads(provider.requests[-1].body)
    assert sent["model"] == PROVIDERS[protocol] and sent["max_tokens"] == 50
    if protocol == "anthropic":
        assert sent["system"] == [{"type": "text", "text": "be brief"}]
        assert provider.requests[-1].headers["x-api-key"] == "k-anthropic"
    else:
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        assert provider.requests[-1].headers["authorization"] == "Bearer k-cohere"


@pytest.mark.parametrize("protocol", list(PROVIDERS))
async def test_streaming_with_include_usage(
    fake: FakeFactory, sidecar: SidecarFactory, protocol: str
) -> None:
    _, instance = await _single(fake, sidecar, protocol)
    stream = await client_for(instance).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"fake-{protocol} reply to: stream me please"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].usage.prompt_tokens > 0
    record = instance.usage.drain()[-1]
    assert record.output_tokens == chunks[-1].usage.completion_tokens


@pytest.mark.parametrize("protocol", list(PROVIDERS))
async def test_tools_non_streaming_and_streaming(
    fake: FakeFactory, sidecar: SidecarFactory, protocol: str
) -> None:
    provider, instance = await _single(fake, sidecar, protocol)
    client = client_for(instance)
    asked: Any = [{"role": "user", "content": "weather in Paris?"}]
    provider.queue_faults("tool_call=get_weather")
    completion = await client.chat.completions.create(model="chat", messages=asked, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "fake-city"}  # type: ignore[union-attr]

    # The tool result goes back in the provider's own shape, and the model answers it.
    history: Any = [
        *asked,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = await client.chat.completions.create(model="chat", messages=history, tools=TOOLS)
    assert answer.choices[0].message.content == f"fake-{protocol} got tool result: sunny"
    sent = json.loads(provider.requests[-1].body)
    if protocol == "anthropic":
        assert sent["messages"][-1]["content"] == [
            {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
        ]
    else:
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}

    provider.queue_faults("tool_call=get_weather")
    stream = await client.chat.completions.create(model="chat", messages=asked, tools=TOOLS, stream=True)
    names, arguments, finish = [], "", None
    async for c in stream:
        if not c.choices:
            continue
        finish = c.choices[0].finish_reason or finish
        for tc in c.choices[0].delta.tool_calls or []:
            assert tc.index == 0
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            arguments += (tc.function.arguments if tc.function else None) or ""
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "fake-city"}
    assert finish == "tool_calls"


@pytest.mark.parametrize("protocol", list(PROVIDERS))
async def test_overload_falls_back_to_the_second_backend(
    fake: FakeFactory, sidecar: SidecarFactory, protocol: str
) -> None:
    primary = await fake(protocol)
    secondary = await fake("anthropic" if protocol == "cohere" else "cohere")
    backends = [
        {"name": "primary", "provider": protocol, "model": PROVIDERS[protocol], "endpoint": primary.base_url},
        {
            "name": "secondary",
            "provider": secondary.protocol.name,
            "model": PROVIDERS[secondary.protocol.name],
            "endpoint": secondary.base_url,
        },
    ]
    instance = await sidecar(route_yaml(backends, extra_spec=RESILIENCE))
    primary.set_faults("status=529" if protocol == "anthropic" else "status=503")
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert raw.headers["x-llmroute-attempts"] == "3", "two tries on the primary (1 retry), then the secondary"
    assert instance.metrics.attempts.labels("primary", protocol, "overloaded")._value.get() == 2
    assert raw.parse().choices[0].message.content == f"fake-{secondary.protocol.name} reply to: hi"

    # An in-stream error before any output fails over too: nothing has reached the app yet.
    primary.set_faults("error_event=1")
    before = len(primary.requests)
    stream = await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == f"fake-{secondary.protocol.name} reply to: hi"
    assert len(primary.requests) == before + 2


@pytest.mark.parametrize("protocol", list(PROVIDERS))
@pytest.mark.parametrize(
    "fault", ["cut_after=2", "error_event=2", "cut_after=5", "error_event=5", "truncate_after=5"]
)
async def test_stream_faults_end_in_an_error_never_a_clean_end(
    fake: FakeFactory, sidecar: SidecarFactory, protocol: str, fault: str
) -> None:
    provider, instance = await _single(fake, sidecar, protocol)
    provider.set_faults(fault)
    received: list[Any] = []

    async def consume() -> None:
        stream = await client_for(instance).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "a long answer please"}], stream=True
        )
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as caught:
        await consume()
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    if fault.endswith("=2"):
        # Nothing but the stream's opening events came: the decoder held the first chunk back, so
        # the failure happened before the first byte and is an ordinary 503 (with fallback, if any).
        assert isinstance(caught.value, openai.InternalServerError) and not received
    else:
        assert text and text != f"fake-{protocol} reply to: a long answer please"
        assert "broke" in caught.value.message


async def test_cohere_embeddings(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider = await fake("cohere")
    backend = {"name": "emb", "provider": "cohere", "model": "embed-v4.0", "endpoint": provider.base_url}
    resources = route_yaml([backend], model="embed").replace(
        "    pricing:", "    capabilities: {chat: false, embeddings: true}\n    pricing:", 1
    )
    instance = await sidecar(resources)
    result = await client_for(instance).embeddings.create(model="embed", input=["red apple", "green apple"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 1536 and result.usage.prompt_tokens > 0
    sent = json.loads(provider.requests[-1].body)
    assert sent["texts"] == ["red apple", "green apple"] and sent["input_type"] == "search_document"
    # The SDK asks for base64 unless told otherwise and decodes it itself: Cohere's base64 is the same
    # little-endian float32 encoding.
    assert sent["embedding_types"] == ["base64"]
    floats = await client_for(instance).embeddings.create(
        model="embed", input="red apple", encoding_format="float"
    )
    assert json.loads(provider.requests[-1].body)["embedding_types"] == ["float"]
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)

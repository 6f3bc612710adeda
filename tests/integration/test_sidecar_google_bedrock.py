"""The sidecar end to end with the official OpenAI SDK as the app and the fake Gemini API and fake
Bedrock (SigV4 verified with known credentials) upstream: text and streams, tools, usage, fallback
between the two, and mid-stream faults that must end in an error, never in a clean end."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.timeout(60)

GEMINI_MODEL = "gemini-2.5-flash"
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
AWS_KEY_ID, AWS_SECRET = "AKIDEXAMPLE", "bedrock-secret"
RESILIENCE = (
    "  resilience:\n    timeout: {perAttempt: 2s, total: 10s}\n"
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
                "additionalProperties": False,
            },
        },
    }
]


def _backend(provider: str, fake: FakeProvider, name: str | None = None) -> dict[str, str]:
    if provider == "google":
        return {
            "name": name or "gemini",
            "provider": "google",
            "model": GEMINI_MODEL,
            "endpoint": fake.base_url,
            "key": "g-key",
        }
    return {
        "name": name or "claude",
        "provider": "bedrock",
        "model": BEDROCK_MODEL,
        "endpoint": fake.base_url,
        "region": "eu-west-1",
        "access_key": AWS_KEY_ID,
        "secret_key": AWS_SECRET,
    }


async def _fake(fake: FakeFactory, provider: str) -> FakeProvider:
    if provider == "google":
        return await fake("google", api_key="g-key")
    return await fake("bedrock", aws_credentials={AWS_KEY_ID: AWS_SECRET})


async def _setup(
    fake: FakeFactory, sidecar: SidecarFactory, first: str, second: str
) -> tuple[FakeProvider, FakeProvider, Sidecar]:
    primary, secondary = await _fake(fake, first), await _fake(fake, second)
    backends = [_backend(first, primary, "primary"), _backend(second, secondary, "secondary")]
    return primary, secondary, await sidecar(route_yaml(backends, extra_spec=RESILIENCE))


async def _drain(stream: Any, into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


PROVIDERS = ["google", "bedrock"]
OTHER = {"google": "bedrock", "bedrock": "google"}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_text_plain_and_streamed_with_usage(
    fake: FakeFactory, sidecar: SidecarFactory, provider: str
) -> None:
    primary, _, instance = await _setup(fake, sidecar, provider, OTHER[provider])
    client = client_for(instance)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        temperature=0.2,
        max_tokens=50,
        stop=["\n\n"],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == f"fake-{provider} reply to: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2 + 3  # ceil(chars / 4)
    assert completion.usage.completion_tokens > 0
    assert raw.headers["x-llmroute-backend"] == "primary" and raw.headers["x-llmroute-attempts"] == "1"
    seen = primary.requests[-1]
    sent = json.loads(seen.body)
    if provider == "google":
        assert seen.path == f"/v1beta/models/{GEMINI_MODEL}:generateContent"
        assert seen.headers["x-goog-api-key"] == "g-key"
        assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        assert sent["generationConfig"] == {
            "maxOutputTokens": 50,
            "temperature": 0.2,
            "stopSequences": ["\n\n"],
        }
    else:
        assert seen.path == f"/model/{BEDROCK_MODEL}/converse"
        assert seen.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
        assert "/eu-west-1/bedrock/aws4_request" in seen.headers["Authorization"]
        assert sent["system"] == [{"text": "be brief"}]
        assert sent["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "stopSequences": ["\n\n"]}

    stream = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish, roles = [], None, None, []
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
            roles.append(chunk.choices[0].delta.role)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text) == f"fake-{provider} reply to: stream me"
    assert finish == "stop" and roles[0] == "assistant"
    assert usage is not None and usage.completion_tokens == -(-len("".join(text)) // 4)

    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert all(c.usage is None for c in [c async for c in stream]), "usage only when asked for"
    assert instance.usage.drain()[-1].output_tokens > 0, "but always accounted"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tools_plain_streamed_and_round_trip(
    fake: FakeFactory, sidecar: SidecarFactory, provider: str
) -> None:
    primary, _, instance = await _setup(fake, sidecar, provider, OTHER[provider])
    client = client_for(instance)
    asked: Any = [{"role": "user", "content": "What is the weather in Paris? Use a tool."}]
    completion = await client.chat.completions.create(
        model="chat", messages=asked, tools=TOOLS, tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "fake-city"}
    sent = json.loads(primary.requests[-1].body)
    if provider == "google":
        declaration = sent["tools"][0]["functionDeclarations"][0]
        assert declaration["parametersJsonSchema"]["additionalProperties"] is False
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    else:
        assert sent["toolConfig"]["toolChoice"] == {"auto": {}}
        assert (
            sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
            == TOOLS[0]["function"]["parameters"]
        )

    stream = await client.chat.completions.create(model="chat", messages=asked, tools=TOOLS, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += (delta.function.name or "") if delta.function else ""
            entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "fake-city"})
    ]
    assert calls[0]["id"]

    history: Any = [
        *asked,
        completion.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky":"clear"}'},
    ]
    answer = await client.chat.completions.create(model="chat", messages=history, tools=TOOLS)
    assert answer.choices[0].message.content == f'fake-{provider} got tool result: {{"sky":"clear"}}'
    sent = json.loads(primary.requests[-1].body)
    if provider == "google":
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
        assert sent["contents"][1]["parts"][0]["functionCall"] == {
            "name": "get_weather",
            "args": {"city": "fake-city"},
        }
        assert sent["contents"][2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}
        ]
    else:
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        assert sent["messages"][2]["content"][0]["toolResult"]["toolUseId"] == call.id


@pytest.mark.parametrize(
    ("first", "fault"),
    [
        ("google", "status=429,retry_after=0"),
        ("google", "status=503"),
        ("bedrock", "status=429"),
        ("bedrock", "status=503"),
    ],
)
async def test_throttling_and_overload_fall_back_to_the_other_provider(
    fake: FakeFactory, sidecar: SidecarFactory, first: str, fault: str
) -> None:
    primary, _, instance = await _setup(fake, sidecar, first, OTHER[first])
    primary.set_faults(fault)
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert raw.headers["x-llmroute-attempts"] == "3", "a retry on the primary, then the secondary"
    assert raw.parse().choices[0].message.content == f"fake-{OTHER[first]} reply to: hi"
    stream = await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert (
        "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        == f"fake-{OTHER[first]} reply to: hi"
    )


async def test_an_in_stream_throttle_before_any_content_still_fails_over(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    primary, _, instance = await _setup(fake, sidecar, "bedrock", "google")
    primary.set_faults("error_event=1,error_status=429")  # messageStart, then a throttlingException frame
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in raw.parse()]
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fake-google reply to: hi"
    )
    assert len(primary.requests) == 2, "throttling is retried once, then the next backend"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["cut_after=2", "error_event=2", "truncate_after=3"])
async def test_mid_stream_faults_end_with_an_error(
    fake: FakeFactory, sidecar: SidecarFactory, provider: str, fault: str
) -> None:
    primary, secondary, instance = await _setup(fake, sidecar, provider, OTHER[provider])
    primary.set_faults(fault)
    stream = await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "a long answer please"}], stream=True
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        await _drain(stream, received)
    assert received, "some content arrived before the fault"
    assert "broke" in caught.value.message
    assert len(secondary.requests) == 0, "no failover after bytes reached the app"


async def test_bad_aws_secret_is_an_auth_failure_that_falls_back(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    bedrock, gemini = await _fake(fake, "bedrock"), await _fake(fake, "google")
    wrong = {**_backend("bedrock", bedrock, "primary"), "secret_key": "not-the-secret"}
    instance = await sidecar(
        route_yaml([wrong, _backend("google", gemini, "secondary")], extra_spec=RESILIENCE)
    )
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert len(bedrock.requests) == 1, "a refused signature is not retried"


async def test_embeddings_through_gemini_and_refused_by_converse(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    gemini, bedrock = await _fake(fake, "google"), await _fake(fake, "bedrock")
    backends = [
        {**_backend("google", gemini, "gemini-embed"), "model": "gemini-embedding-001"},
        _backend("bedrock", bedrock, "claude"),
    ]
    resources = route_yaml([backends[0]], model="embed").replace(
        "    pricing:", "    capabilities: {chat: false, embeddings: true}\n    pricing:", 1
    )
    instance = await sidecar(resources)
    result = await client_for(instance).embeddings.create(
        model="embed", input=["a cat", "a dog"], dimensions=16
    )
    assert [len(d.embedding) for d in result.data] == [16, 16] and [d.index for d in result.data] == [0, 1]
    sent = json.loads(gemini.requests[-1].body)
    assert gemini.requests[-1].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "a cat"}]},
        "outputDimensionality": 16,
    }

    resources = route_yaml([backends[1]], model="embed").replace(
        "    pricing:", "    capabilities: {chat: false, embeddings: true}\n    pricing:", 1
    )
    refusing = await sidecar(resources)
    with pytest.raises(openai.BadRequestError, match="Converse has none"):
        await client_for(refusing).embeddings.create(model="embed", input="a cat")
    assert len(bedrock.requests) == 0

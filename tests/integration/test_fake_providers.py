"""The fake providers, judged by the providers' official SDKs.

Every fake must be parsed by its provider's own SDK (``openai``, ``anthropic``, ``google-genai``,
``boto3``, ``cohere``), non-streaming and streaming, tools included, and its fault knobs must reach
the SDK the way real failures do. When an SDK cannot parse a fake, the fake is wrong.

The SDK clients here block, so the fakes run from a background thread (``with FakeProvider(...)``);
one test drives a fake on the test's own event loop with the async OpenAI client. SDK retries are
off (``max_retries=0``) unless a test is about retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anthropic
import boto3
import botocore.exceptions
import cohere
import cohere.errors
import httpx
import httpx2
import openai
import pydantic
import pytest
import urllib3.exceptions
from anthropic.types import Message
from botocore.config import Config
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from openai.types.chat import ChatCompletion

from llmroute_fakes import PROTOCOLS, FakeProvider, FaultPolicy, FaultSpec

KEY = "test-key"
AWS_KEY_ID, AWS_SECRET = "AKIDFAKEPROVIDER", "fake-secret"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER_ARGS = {"city": "fake-city", "unit": "celsius"}
PROMPT = "What is the capital of France, in one word?"


@pytest.fixture(scope="module")
def running() -> Iterator[dict[str, FakeProvider]]:
    with contextlib.ExitStack() as stack:
        fakes = {}
        for name in PROTOCOLS:
            key = None if name == "openai-compatible" else KEY
            creds = {AWS_KEY_ID: AWS_SECRET} if name == "bedrock" else None
            fakes[name] = stack.enter_context(FakeProvider(name, api_key=key, aws_credentials=creds))
        yield fakes


@pytest.fixture
def fakes(running: dict[str, FakeProvider]) -> dict[str, FakeProvider]:
    for fake in running.values():
        fake.clear()
        fake.set_faults(None)
    return running


def fault(spec: str | None) -> dict[str, str]:
    return {"x-fake-fault": spec} if spec else {}


def expected_reply(protocol: str, text: str = PROMPT) -> str:
    return f"fake-{protocol} reply to: {text[:40]}"


def tokens(text: str) -> int:
    return -(-len(text) // 4)


# --- OpenAI, OpenAI-compatible and Azure OpenAI: the openai SDK ---------------------------------------

OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
    }
]


def openai_client(fake: FakeProvider, **options: Any) -> openai.OpenAI:
    if fake.protocol.name == "azure-openai":
        return openai.AzureOpenAI(
            azure_endpoint=fake.base_url, api_version="2024-10-21", api_key=KEY, max_retries=0, **options
        )
    return openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, **options)


@pytest.mark.parametrize("protocol", ["openai", "openai-compatible", "azure-openai"])
def test_openai_chat_non_streaming(fakes: dict[str, FakeProvider], protocol: str) -> None:
    fake = fakes[protocol]
    raw = openai_client(fake).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
    )
    # Strict validation of the raw body, not just the SDK's lenient construction.
    completion = ChatCompletion.model_validate(raw.http_response.json())
    assert completion.model_dump() == raw.parse().model_dump()
    reply = expected_reply(protocol)
    assert completion.choices[0].message.content == reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == tokens("Be brief.") + tokens(PROMPT)
    assert completion.usage.completion_tokens == tokens(reply)

    seen = fake.requests[-1]
    assert seen.json()["messages"][1] == {"role": "user", "content": PROMPT}
    if protocol == "azure-openai":
        assert seen.path == "/openai/deployments/gpt-4o/chat/completions"
        assert seen.query["api-version"] == "2024-10-21"
        assert seen.headers["api-key"] == KEY
        assert raw.http_response.json()["prompt_filter_results"][0]["prompt_index"] == 0
    else:
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("protocol", ["openai", "openai-compatible", "azure-openai"])
def test_openai_chat_streaming_with_usage(fakes: dict[str, FakeProvider], protocol: str) -> None:
    client = openai_client(fakes[protocol])
    messages: Any = [{"role": "user", "content": PROMPT}]
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_reply(protocol)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == tokens(text)
    assert all(c.usage is None for c in chunks[:-1])
    if protocol == "azure-openai":
        assert chunks[0].choices == []  # Azure's prompt-filter chunk comes first.

    plain = list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
    assert all(c.usage is None for c in plain)


@pytest.mark.parametrize("protocol", ["openai", "azure-openai"])
def test_openai_tool_calls(fakes: dict[str, FakeProvider], protocol: str) -> None:
    client = openai_client(fakes[protocol])
    asked: Any = [{"role": "user", "content": "Call get_weather for Paris"}]
    completion = client.chat.completions.create(model="gpt-4o", messages=asked, tools=OPENAI_TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS

    with client.chat.completions.stream(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello"}],
        tools=OPENAI_TOOLS,
        tool_choice="required",
    ) as stream:
        streamed = stream.get_final_completion()
    streamed_calls = streamed.choices[0].message.tool_calls
    assert streamed_calls is not None
    assert json.loads(streamed_calls[0].function.arguments) == WEATHER_ARGS

    # The tool result goes back; the fake answers in text.
    follow_up: Any = [
        *asked,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"},
    ]
    answer = client.chat.completions.create(model="gpt-4o", messages=follow_up, tools=OPENAI_TOOLS)
    assert answer.choices[0].message.content == f"fake-{protocol} got tool result: sunny, 21 degrees"


class City(pydantic.BaseModel):
    name: str
    population: int
    coastal: bool


def test_openai_structured_output_parses(fakes: dict[str, FakeProvider]) -> None:
    client = openai_client(fakes["openai"])
    parsed = client.chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], response_format=City
    )
    assert parsed.choices[0].message.parsed == City(name="fake-name", population=1, coastal=True)
    assert fakes["openai"].requests[-1].json()["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("protocol", ["openai", "azure-openai"])
def test_openai_embeddings_and_models(fakes: dict[str, FakeProvider], protocol: str) -> None:
    client = openai_client(fakes[protocol])
    # The SDK asks for base64 by default and decodes it: this checks the fake's float32 packing.
    result = client.embeddings.create(model="text-embedding-3-small", input=["red apple", "red apple pie"])
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    first, second = (d.embedding for d in result.data)
    assert sum(a * b for a, b in zip(first, second, strict=True)) > 0.5  # similar texts, similar vectors
    small = client.embeddings.create(
        model="text-embedding-3-small", input="x", dimensions=64, encoding_format="float"
    )
    assert len(small.data[0].embedding) == 64
    # A vector beyond any real model's size is refused, as a provider would, never allocated.
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=10**12)
    if protocol == "openai":
        assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


def test_azure_v1_surface_and_vllm_extras(fakes: dict[str, FakeProvider]) -> None:
    azure_v1 = openai.OpenAI(base_url=fakes["azure-openai"].url + "/openai/v1/", api_key=KEY, max_retries=0)
    reply = azure_v1.chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "fake-azure-openai reply to: hi"

    vllm = fakes["openai-compatible"]
    assert httpx.get(vllm.url + "/health").status_code == 200
    # No key configured: any key passes, as with a vLLM started without --api-key.
    completion = openai.OpenAI(
        base_url=vllm.base_url, api_key="EMPTY", max_retries=0
    ).chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.model_extra is not None and "prompt_logprobs" in completion.model_extra


async def test_async_fake_with_async_client() -> None:
    async with FakeProvider("openai", faults="latency_ms=20") as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "async"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
    assert text == "fake-openai reply to: async"
    assert fake.requests[0].faults == FaultSpec(latency_ms=20)


# --- Anthropic: the anthropic SDK ------------------------------------------------------------------------

ANTHROPIC_TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
]
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture
def claude(fakes: dict[str, FakeProvider]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fakes["anthropic"].base_url, api_key=KEY, max_retries=0)


def test_anthropic_messages(fakes: dict[str, FakeProvider], claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": PROMPT}]
    )
    message = Message.model_validate(raw.http_response.json())
    assert message.content[0].type == "text" and message.content[0].text == expected_reply("anthropic")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == tokens("Be brief.") + tokens(PROMPT)
    assert raw.http_response.headers["request-id"].startswith("req_")
    seen = fakes["anthropic"].requests[-1]
    # Older SDKs send the key as x-api-key, newer ones as a bearer token; the API takes both.
    assert seen.headers.get("x-api-key", seen.headers["Authorization"].removeprefix("Bearer ")) == KEY
    assert seen.headers["anthropic-version"]
    assert seen.json()["system"] == "Be brief."


def test_anthropic_streaming_events(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(
            model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    last_delta = events[-2]
    assert last_delta.type == "message_delta"
    assert last_delta.usage.output_tokens == tokens(expected_reply("anthropic"))

    with claude.messages.stream(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": PROMPT}]
    ) as s:
        assert "".join(s.text_stream) == expected_reply("anthropic")
        assert s.get_final_message().stop_reason == "end_turn"


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    asked: Any = [{"role": "user", "content": "Please call get_weather for Paris"}]
    with claude.messages.stream(
        model=CLAUDE, max_tokens=256, messages=asked, tools=ANTHROPIC_TOOLS
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "input_json_delta" in deltas and "text_delta" in deltas
    assert final.stop_reason == "tool_use"
    text, tool_use = final.content
    assert text.type == "text" and text.text == "fake-anthropic calling get_weather"
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather" and tool_use.input == WEATHER_ARGS

    message = claude.messages.create(model=CLAUDE, max_tokens=256, messages=asked, tools=ANTHROPIC_TOOLS)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    result: Any = [
        *asked,
        {"role": "assistant", "content": message.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}],
        },
    ]
    answer = claude.messages.create(model=CLAUDE, max_tokens=256, messages=result, tools=ANTHROPIC_TOOLS)
    assert (
        answer.content[0].type == "text" and answer.content[0].text == "fake-anthropic got tool result: sunny"
    )


def test_anthropic_limits_and_token_count(claude: anthropic.Anthropic) -> None:
    cut = claude.messages.create(model=CLAUDE, max_tokens=3, messages=[{"role": "user", "content": PROMPT}])
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    counted = claude.messages.count_tokens(
        model=CLAUDE, system="Be brief.", messages=[{"role": "user", "content": PROMPT}]
    )
    assert counted.input_tokens == tokens("Be brief.") + tokens(PROMPT)


def test_anthropic_structured_output_and_missing_version(
    fakes: dict[str, FakeProvider], claude: anthropic.Anthropic
) -> None:
    with claude.messages.stream(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": PROMPT}], output_format=City
    ) as stream:
        assert stream.get_final_message().parsed_output == City(name="fake-name", population=1, coastal=True)
    refused = httpx.post(fakes["anthropic"].url + "/v1/messages", headers={"x-api-key": KEY}, json={})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


# --- Google Gemini: the google-genai SDK -----------------------------------------------------------------


def get_weather(city: str, unit: str) -> str:
    """Weather in a city."""
    return f"sunny in {city} ({unit})"


@pytest.fixture
def gemini(fakes: dict[str, FakeProvider]) -> genai.Client:
    return genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(base_url=fakes["google"].base_url))


def gemini_config(spec: str | None = None, **fields: Any) -> genai_types.GenerateContentConfig:
    return genai_types.GenerateContentConfig(
        http_options=genai_types.HttpOptions(headers=fault(spec)), **fields
    )


def test_gemini_generate_content(fakes: dict[str, FakeProvider], gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT, config=gemini_config(system_instruction="Be brief.")
    )
    assert response.text == expected_reply("google")
    assert response.candidates is not None and response.candidates[0].finish_reason == "STOP"
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == tokens("Be brief.") + tokens(PROMPT)
    assert usage.candidates_token_count == tokens(expected_reply("google"))
    seen = fakes["google"].requests[-1]
    assert seen.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert seen.headers["x-goog-api-key"] == KEY

    chunks = list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert "".join(c.text or "" for c in chunks) == expected_reply("google")
    assert chunks[-1].candidates is not None and chunks[-1].candidates[0].finish_reason == "STOP"
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == tokens(expected_reply("google"))
    assert fakes["google"].requests[-1].query["alt"] == "sse"


def test_gemini_function_calls_and_schema(gemini: genai.Client) -> None:
    config = gemini_config(
        tools=[get_weather],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
    )
    for stream in (False, True):
        if stream:
            chunks = list(
                gemini.models.generate_content_stream(model="m", contents="call get_weather", config=config)
            )
            calls = [call for chunk in chunks for call in chunk.function_calls or []]
        else:
            response = gemini.models.generate_content(model="m", contents="call get_weather", config=config)
            calls = response.function_calls or []
        assert [(c.name, c.args) for c in calls] == [
            ("get_weather", {"city": "fake-city", "unit": "fake-unit"})
        ]

    structured = gemini.models.generate_content(
        model="m",
        contents=PROMPT,
        config=gemini_config(response_mime_type="application/json", response_schema=City),
    )
    assert structured.parsed == City(name="fake-name", population=1, coastal=True)
    embedded = gemini.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])
    assert embedded.embeddings is not None
    assert [len(e.values or []) for e in embedded.embeddings] == [3072, 3072]


def test_gemini_raw_surface(fakes: dict[str, FakeProvider]) -> None:
    """What the SDK does not exercise: the ``key=`` query auth, ``:embedContent``, the ``tool_call`` knob,
    and Google's error shape for an unknown method."""
    base = fakes["google"].url + "/v1beta/models/gemini-2.5-flash"
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "lookup", "parametersJsonSchema": {"type": "object"}}]}],
    }
    called = httpx.post(f"{base}:generateContent?key={KEY}", json=body, headers=fault("tool_call"))
    assert called.json()["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "lookup", "args": {}}}
    ]
    embedded = httpx.post(f"{base}:embedContent?key={KEY}", json={"content": {"parts": [{"text": "hi"}]}})
    assert len(embedded.json()["embedding"]["values"]) == 768
    unknown = httpx.post(f"{base}:summon?key={KEY}", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


# --- Bedrock Converse: boto3 -----------------------------------------------------------------------------

BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK_TOOLS: Any = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather",
                "inputSchema": {"json": WEATHER_SCHEMA},
            }
        }
    ]
}


def bedrock_client(fake: FakeProvider, secret: str = AWS_SECRET, **config: Any) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.base_url,
        region_name="us-east-1",
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def bedrock(running: dict[str, FakeProvider]) -> Any:
    return bedrock_client(running["bedrock"])


def with_bedrock_fault(client: Any, spec: str | None) -> contextlib.AbstractContextManager[None]:
    """boto3 has no per-call headers; a before-send hook adds the knob (after signing, so unsigned)."""

    @contextlib.contextmanager
    def hooked() -> Iterator[None]:
        def add(request: Any, **_: Any) -> None:
            request.headers["x-fake-fault"] = spec

        if spec:
            client.meta.events.register_first("before-send.bedrock-runtime.*", add, unique_id="fake-fault")
        try:
            yield
        finally:
            client.meta.events.unregister("before-send.bedrock-runtime.*", unique_id="fake-fault")

    return hooked()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_bedrock_converse_with_verified_sigv4(fakes: dict[str, FakeProvider], bedrock: Any) -> None:
    response = bedrock.converse(modelId=BEDROCK_MODEL, messages=user(PROMPT), system=[{"text": "Be brief."}])
    assert response["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": expected_reply("bedrock")}],
    }
    assert response["stopReason"] == "end_turn"
    assert response["usage"]["inputTokens"] == tokens("Be brief.") + tokens(PROMPT)
    assert (
        response["usage"]["totalTokens"]
        == response["usage"]["inputTokens"] + response["usage"]["outputTokens"]
    )
    seen = fakes["bedrock"].requests[-1]
    assert seen.path == f"/model/{BEDROCK_MODEL}/converse"
    assert seen.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        bedrock_client(fakes["bedrock"], secret="wrong").converse(modelId=BEDROCK_MODEL, messages=user("hi"))
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_bedrock_converse_stream_and_tools(bedrock: Any) -> None:
    events = list(bedrock.converse_stream(modelId=BEDROCK_MODEL, messages=user(PROMPT))["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == expected_reply("bedrock")
    assert events[-1]["metadata"]["usage"]["outputTokens"] == tokens(text)

    asked = user("call get_weather please")
    stream = bedrock.converse_stream(modelId=BEDROCK_MODEL, messages=asked, toolConfig=BEDROCK_TOOLS)[
        "stream"
    ]
    events = list(stream)
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert starts == [
        {
            "contentBlockIndex": 1,
            "start": {
                "toolUse": {"toolUseId": starts[0]["start"]["toolUse"]["toolUseId"], "name": "get_weather"}
            },
        }
    ]
    arguments = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    )
    assert json.loads(arguments) == WEATHER_ARGS
    assert {"messageStop": {"stopReason": "tool_use"}} in events

    response = bedrock.converse(modelId=BEDROCK_MODEL, messages=asked, toolConfig=BEDROCK_TOOLS)
    tool_use = response["output"]["message"]["content"][1]["toolUse"]
    assert (tool_use["name"], tool_use["input"]) == ("get_weather", WEATHER_ARGS)
    result = [
        *asked,
        response["output"]["message"],
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"json": {"sky": "clear"}}]}}
            ],
        },
    ]
    answer = bedrock.converse(modelId=BEDROCK_MODEL, messages=result, toolConfig=BEDROCK_TOOLS)
    assert answer["output"]["message"]["content"] == [
        {"text": 'fake-bedrock got tool result: {"sky":"clear"}'}
    ]


# --- Cohere v2: the cohere SDK ---------------------------------------------------------------------------

COHERE_TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
    }
]


@pytest.fixture
def co(fakes: dict[str, FakeProvider]) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=KEY, base_url=fakes["cohere"].base_url, max_retries=0)


def test_cohere_chat_and_stream(fakes: dict[str, FakeProvider], co: cohere.ClientV2) -> None:
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    response = co.chat(model="command-a-03-2025", messages=messages)
    assert response.message.content is not None
    assert response.message.content[0].text == expected_reply("cohere")
    assert response.finish_reason == "COMPLETE"
    assert response.usage is not None and response.usage.billed_units is not None
    assert response.usage.billed_units.input_tokens == tokens("Be brief.") + tokens(PROMPT)
    assert fakes["cohere"].requests[-1].headers["Authorization"] == f"Bearer {KEY}"

    events = list(co.chat_stream(model="command-a-03-2025", messages=messages))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message-start", "content-start"] and kinds[-2:] == ["content-end", "message-end"]
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    assert text == expected_reply("cohere")
    end = events[-1]
    assert end.type == "message-end" and end.delta is not None and end.delta.finish_reason == "COMPLETE"


def test_cohere_tools_and_embed(co: cohere.ClientV2) -> None:
    asked: Any = [{"role": "user", "content": "use get_weather"}]
    response = co.chat(model="command-a-03-2025", messages=asked, tools=COHERE_TOOLS)
    assert response.finish_reason == "TOOL_CALL"
    assert response.message.tool_plan == "fake-cohere calling get_weather"
    assert response.message.tool_calls is not None
    call = response.message.tool_calls[0]
    assert call.function is not None and call.function.name == "get_weather"
    assert json.loads(call.function.arguments or "") == WEATHER_ARGS

    events = list(co.chat_stream(model="command-a-03-2025", messages=asked, tools=COHERE_TOOLS))
    kinds = [e.type for e in events]
    assert {"tool-plan-delta", "tool-call-start", "tool-call-delta", "tool-call-end"} <= set(kinds)
    arguments = "".join(
        e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta"
    )
    assert json.loads(arguments) == WEATHER_ARGS

    result: Any = [
        *asked,
        {
            "role": "assistant",
            "tool_plan": response.message.tool_plan,
            "tool_calls": response.message.tool_calls,
        },
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": [{"type": "document", "document": {"data": "sunny"}}],
        },
    ]
    answer = co.chat(model="command-a-03-2025", messages=result, tools=COHERE_TOOLS)
    assert answer.message.content is not None
    assert answer.message.content[0].text == "fake-cohere got tool result: sunny"

    embedded = co.embed(
        model="embed-v4.0", texts=["a", "b"], input_type="search_document", embedding_types=["float"]
    )
    assert embedded.embeddings.float_ is not None and [len(v) for v in embedded.embeddings.float_] == [
        1536,
        1536,
    ]


# --- Faults, as each SDK sees them -----------------------------------------------------------------------


@dataclass
class Driver:
    """One protocol's SDK, reduced to what the fault tests need."""

    chat: Callable[[str | None], Any]
    stream: Callable[[str | None], list[Any]]
    #: Did the stream end with the protocol's terminal event?
    finished: Callable[[list[Any]], bool]
    status: Callable[[BaseException], int]
    headers: Callable[[BaseException], Any]
    rate_limited: type[BaseException]
    unavailable: type[BaseException]
    reset: type[BaseException]
    cut: type[BaseException] | tuple[type[BaseException], ...]


def openai_driver(fake: FakeProvider) -> Driver:
    client = openai_client(fake)
    messages: Any = [{"role": "user", "content": PROMPT}]

    def stream(spec: str | None) -> list[Any]:
        return list(
            client.chat.completions.create(
                model="gpt-4o", messages=messages, stream=True, extra_headers=fault(spec)
            )
        )

    return Driver(
        chat=lambda spec: client.chat.completions.create(
            model="gpt-4o", messages=messages, extra_headers=fault(spec)
        ),
        stream=stream,
        finished=lambda chunks: any(c.choices and c.choices[0].finish_reason for c in chunks),
        status=lambda exc: exc.status_code,
        headers=lambda exc: exc.response.headers,
        rate_limited=openai.RateLimitError,
        unavailable=openai.InternalServerError,
        reset=openai.APIConnectionError,  # the SDK wraps httpx's ReadError ...
        cut=openai.APIConnectionError,  # ... and the incomplete chunked read
    )


def anthropic_driver(fake: FakeProvider) -> Driver:
    client = anthropic.Anthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)
    args: Any = {"model": CLAUDE, "max_tokens": 256, "messages": [{"role": "user", "content": PROMPT}]}
    return Driver(
        chat=lambda spec: client.messages.create(**args, extra_headers=fault(spec)),
        stream=lambda spec: list(client.messages.create(**args, stream=True, extra_headers=fault(spec))),
        finished=lambda events: bool(events) and events[-1].type == "message_stop",
        status=lambda exc: exc.status_code,
        headers=lambda exc: exc.response.headers,
        rate_limited=anthropic.RateLimitError,
        unavailable=anthropic.InternalServerError,
        reset=anthropic.APIConnectionError,
        # Older SDKs let httpx's error out of a stream's iteration; 2.17 wraps it as a connection error.
        cut=(httpx2.RemoteProtocolError, anthropic.APIConnectionError),
    )


def gemini_driver(fake: FakeProvider) -> Driver:
    client = genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(base_url=fake.base_url))
    return Driver(
        chat=lambda spec: client.models.generate_content(
            model="m", contents=PROMPT, config=gemini_config(spec)
        ),
        stream=lambda spec: list(
            client.models.generate_content_stream(model="m", contents=PROMPT, config=gemini_config(spec))
        ),
        finished=lambda chunks: bool(
            chunks and chunks[-1].candidates and chunks[-1].candidates[0].finish_reason
        ),
        status=lambda exc: exc.code,
        headers=lambda exc: exc.response.headers,
        rate_limited=genai_errors.ClientError,
        unavailable=genai_errors.ServerError,
        reset=httpx2.ReadError,  # google-genai lets transport errors through
        cut=httpx2.RemoteProtocolError,
    )


def bedrock_driver(fake: FakeProvider) -> Driver:
    client = bedrock_client(fake)

    def chat(spec: str | None) -> Any:
        with with_bedrock_fault(client, spec):
            return client.converse(modelId=BEDROCK_MODEL, messages=user(PROMPT))

    def stream(spec: str | None) -> list[Any]:
        with with_bedrock_fault(client, spec):
            return list(client.converse_stream(modelId=BEDROCK_MODEL, messages=user(PROMPT))["stream"])

    return Driver(
        chat=chat,
        stream=stream,
        finished=lambda events: bool(events) and "metadata" in events[-1],
        status=lambda exc: exc.response["ResponseMetadata"]["HTTPStatusCode"],
        headers=lambda exc: exc.response["ResponseMetadata"]["HTTPHeaders"],
        rate_limited=client.exceptions.ThrottlingException,
        unavailable=client.exceptions.ServiceUnavailableException,
        reset=botocore.exceptions.ConnectionClosedError,
        cut=urllib3.exceptions.ProtocolError,  # "Response ended prematurely", unwrapped by botocore
    )


def cohere_driver(fake: FakeProvider) -> Driver:
    client = cohere.ClientV2(api_key=KEY, base_url=fake.base_url, max_retries=0)
    messages: Any = [{"role": "user", "content": PROMPT}]

    def options(spec: str | None) -> Any:
        return {"additional_headers": fault(spec)}

    return Driver(
        chat=lambda spec: client.chat(
            model="command-a-03-2025", messages=messages, request_options=options(spec)
        ),
        stream=lambda spec: list(
            client.chat_stream(model="command-a-03-2025", messages=messages, request_options=options(spec))
        ),
        finished=lambda events: bool(events) and events[-1].type == "message-end",
        status=lambda exc: exc.status_code,
        headers=lambda exc: exc.headers,
        rate_limited=cohere.errors.TooManyRequestsError,
        unavailable=cohere.errors.ServiceUnavailableError,
        reset=httpx.ReadError,  # cohere lets transport errors through
        cut=httpx.RemoteProtocolError,
    )


DRIVERS: dict[str, Callable[[FakeProvider], Driver]] = {
    "openai": openai_driver,
    "azure-openai": openai_driver,
    "openai-compatible": openai_driver,
    "anthropic": anthropic_driver,
    "google": gemini_driver,
    "bedrock": bedrock_driver,
    "cohere": cohere_driver,
}
# What each SDK does with the protocol's in-stream error event.
STREAM_ERRORS: dict[str, type[BaseException] | None] = {
    "openai": openai.APIError,
    "azure-openai": openai.APIError,
    "openai-compatible": openai.APIError,
    "anthropic": anthropic.APIStatusError,
    "google": genai_errors.ServerError,
    "bedrock": botocore.exceptions.EventStreamError,
    "cohere": None,  # Cohere ends the stream with finish_reason ERROR instead
}


@pytest.fixture(params=sorted(PROTOCOLS))
def case(request: pytest.FixtureRequest, fakes: dict[str, FakeProvider]) -> tuple[str, FakeProvider, Driver]:
    name: str = request.param
    return name, fakes[name], DRIVERS[name](fakes[name])


def test_rate_limit_with_retry_after(case: tuple[str, FakeProvider, Driver]) -> None:
    _, fake, driver = case
    with pytest.raises(driver.rate_limited) as raised:
        driver.chat("status=429,retry_after=2")
    assert driver.status(raised.value) == 429
    assert driver.headers(raised.value)["retry-after"] == "2"
    assert len(fake.requests) == 1  # SDK retries are off: one attempt reached the fake
    with pytest.raises(driver.rate_limited):
        driver.stream("status=429")


def test_server_error(case: tuple[str, FakeProvider, Driver]) -> None:
    _, _, driver = case
    with pytest.raises(driver.unavailable) as raised:
        driver.chat("status=503")
    assert driver.status(raised.value) == 503


def test_connection_reset(case: tuple[str, FakeProvider, Driver]) -> None:
    _, fake, driver = case
    with pytest.raises(driver.reset):
        driver.chat("reset")
    with pytest.raises(driver.reset):
        driver.stream("reset")
    assert [r.faults.reset for r in fake.requests] == [True, True]


def test_mid_stream_cut_and_truncation(case: tuple[str, FakeProvider, Driver]) -> None:
    _, _, driver = case
    with pytest.raises(driver.cut):
        driver.stream("cut_after=2")
    # A clean end without the terminal event: every SDK simply stops iterating, without an error.
    truncated = driver.stream("truncate_after=2")
    assert not driver.finished(truncated)
    assert len(truncated) == 2
    assert driver.finished(driver.stream(None))


def test_in_stream_error_event(case: tuple[str, FakeProvider, Driver]) -> None:
    name, _, driver = case
    error = STREAM_ERRORS[name]
    if error is None:
        events = driver.stream("error_event=2")
        assert events[-1].type == "message-end"
        assert events[-1].delta.finish_reason == "ERROR" and events[-1].delta.error
    else:
        with pytest.raises(error):
            driver.stream("error_event=2")


def test_latency_and_slow_stream(case: tuple[str, FakeProvider, Driver]) -> None:
    _, _, driver = case
    started = time.monotonic()
    driver.chat("latency_ms=150")
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    frames = len(driver.stream("slow_stream_ms=20"))
    assert time.monotonic() - started >= 0.02 * (frames - 1)


def test_hang_times_out(fakes: dict[str, FakeProvider]) -> None:
    client = openai_client(fakes["openai"], timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers=fault("hang")
        )


def test_auth_is_checked(fakes: dict[str, FakeProvider]) -> None:
    wrong: Any = {"api_key": "wrong", "max_retries": 0}
    with pytest.raises(openai.AuthenticationError) as oai:
        openai.OpenAI(base_url=fakes["openai"].base_url, **wrong).models.list()
    assert oai.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=fakes["anthropic"].base_url, **wrong).messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(base_url=fakes["cohere"].base_url, **wrong).chat(
            model="c", messages=[{"role": "user", "content": "hi"}]
        )
    google = genai.Client(
        api_key="wrong", http_options=genai_types.HttpOptions(base_url=fakes["google"].base_url)
    )
    with pytest.raises(genai_errors.ClientError) as gemini_error:
        google.models.generate_content(model="m", contents="hi")
    assert gemini_error.value.status == "INVALID_ARGUMENT"
    assert "API key not valid" in (gemini_error.value.message or "")


# --- The in-process API and the command line --------------------------------------------------------------


def test_fault_header_syntax_and_defaults(fakes: dict[str, FakeProvider]) -> None:
    fake = fakes["openai"]
    client = openai_client(fake)
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="unknown fault knob 'stauts'"):
        client.chat.completions.create(model="gpt-4o", messages=messages, extra_headers=fault("stauts=429"))

    fake.set_faults("status=503")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    # "none" in the header opts one request out of the defaults.
    client.chat.completions.create(model="gpt-4o", messages=messages, extra_headers=fault("none"))


def test_queued_faults_drive_sdk_retries(fakes: dict[str, FakeProvider]) -> None:
    fake = fakes["openai"]
    fake.queue_faults("status=429,retry_after=0.01", "status=503,retry_after=0.01")
    client = openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=2)
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "retry"}]
    )
    assert completion.choices[0].message.content == "fake-openai reply to: retry"
    assert [r.faults.status for r in fake.requests] == [429, 503, None]
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1", "2"]


def test_seeded_random_failures_are_reproducible() -> None:
    def outcomes() -> list[int]:
        policy = FaultPolicy(fail_rate=0.4, failure=FaultSpec(status=503), seed=11)
        with FakeProvider("cohere", faults=policy) as fake, httpx.Client() as http:
            headers = {"Authorization": "Bearer k"}
            body = {"model": "c", "messages": [{"role": "user", "content": "hi"}]}
            return [
                http.post(fake.url + "/v2/chat", headers=headers, json=body).status_code for _ in range(20)
            ]

    first = outcomes()
    assert first == outcomes()
    assert set(first) == {200, 503}


def test_command_line() -> None:
    scripts = entry_points(group="console_scripts")
    assert scripts["llmroute-fake-provider"].value == "llmroute_fakes.__main__:main"
    script = Path(sys.executable).with_name("llmroute-fake-provider")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "llmroute_fakes"]
    command = [*launcher, "--protocol", "cohere", "--port", "0"]
    command += ["--fail-rate", "1", "--fail-status", "429", "--retry-after", "3"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = cohere.ClientV2(api_key=KEY, base_url=url, max_retries=0)
        with pytest.raises(cohere.errors.TooManyRequestsError) as raised:
            client.chat(model="c", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.headers is not None and raised.value.headers["retry-after"] == "3"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0

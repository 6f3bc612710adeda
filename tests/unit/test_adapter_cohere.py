"""The Cohere adapter as pure translation: OpenAI requests to v2 chat and embed bodies, Cohere's answers
and SSE events back to OpenAI objects and chunks, and Cohere's errors onto the shared taxonomy."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from cohere import ChatMessageV2, ResponseFormatV2, ToolV2

from llmroute_sidecar.adapters.base import Target
from llmroute_sidecar.adapters.cohere import CohereAdapter, CohereStreamDecoder
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.adapters.registry import adapter_for

Json = dict[str, Any]
ADAPTER = CohereAdapter()
TARGET = Target(provider="cohere", model="command-a-03-2025", endpoint="", api_key="co-test")
WEATHER: Json = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: Json = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def build(body: Json, *, stream: bool = False) -> Json:
    sent: Json = json.loads(ADAPTER.chat_request(TARGET, {"model": "chat", **body}, stream=stream).body)
    return sent


def user(text: str) -> Json:
    return {"role": "user", "content": text}


# -- requests ---------------------------------------------------------------------------------------


def test_url_headers_and_minimal_body() -> None:
    request = ADAPTER.chat_request(TARGET, {"model": "chat", "messages": [user("hi")]}, stream=False)
    assert request.url == "https://api.cohere.com/v2/chat"
    assert request.headers["authorization"] == "Bearer co-test"
    assert json.loads(request.body) == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "hi"}],
    }
    streaming = ADAPTER.chat_request(TARGET, {"model": "chat", "messages": [user("hi")]}, stream=True)
    assert json.loads(streaming.body)["stream"] is True
    assert streaming.headers["accept"] == "text/event-stream"
    for endpoint in ("http://127.0.0.1:9/", "http://127.0.0.1:9/v2"):
        target = Target(provider="cohere", model="m", endpoint=endpoint, api_key="k")
        assert (
            ADAPTER.chat_request(target, {"messages": [user("x")]}, stream=False).url
            == "http://127.0.0.1:9/v2/chat"
        )


def test_messages_map_onto_v2_roles() -> None:
    sent = build(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather here?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": "I will look it up.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
                {"role": "assistant", "content": "It is sunny."},
                user("Thanks"),
            ]
        }
    )
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use metric units."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
            "tool_plan": "I will look it up.",
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "Thanks"},
    ]


def test_unsupported_parts_are_a_bad_request() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(ProviderError) as caught:
        build({"messages": [{"role": "user", "content": [audio]}]})
    assert caught.value.kind == ErrorKind.BAD_REQUEST and caught.value.provider == "cohere"


def test_parameters() -> None:
    sent = build(
        {
            "messages": [user("x")],
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "temperature": 0.3,
            "top_p": 1.0,
            "frequency_penalty": -1.0,
            "presence_penalty": 0.5,
            "stop": "END",
            "seed": 42,
        }
    )
    assert sent["max_tokens"] == 200
    assert sent["temperature"] == 0.3
    assert sent["p"] == 0.99, "Cohere's p stops at 0.99"
    assert sent["frequency_penalty"] == 0.0 and sent["presence_penalty"] == 0.5
    assert sent["stop_sequences"] == ["END"]
    assert sent["seed"] == 42
    assert "top_p" not in sent and "stop" not in sent


@pytest.mark.parametrize(
    ("choice", "tool_choice", "names"),
    [
        (None, None, ["get_weather", "get_time"]),
        ("auto", None, ["get_weather", "get_time"]),
        ("none", "NONE", ["get_weather", "get_time"]),
        ("required", "REQUIRED", ["get_weather", "get_time"]),
        ({"type": "function", "function": {"name": "get_time"}}, "REQUIRED", ["get_time"]),
    ],
)
def test_tools_and_tool_choice(choice: Any, tool_choice: str | None, names: list[str]) -> None:
    body: Json = {"messages": [user("x")], "tools": [WEATHER, TIME]}
    if choice is not None:
        body["tool_choice"] = choice
    sent = build(body)
    assert sent.get("tool_choice") == tool_choice
    assert [t["function"]["name"] for t in sent["tools"]] == names
    assert sent["tools"][0]["type"] == "function"
    if names[0] == "get_weather":
        assert sent["tools"][0]["function"] == WEATHER["function"]
    assert "strict_tools" not in sent


def test_strict_tools() -> None:
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    sent = build({"messages": [user("x")], "tools": [strict]})
    assert sent["strict_tools"] is True
    assert "strict" not in sent["tools"][0]["function"]


def test_response_format() -> None:
    assert build({"messages": [user("x")], "response_format": {"type": "json_object"}})[
        "response_format"
    ] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    sent = build(
        {
            "messages": [user("x")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": schema, "strict": True},
            },
        }
    )
    assert sent["response_format"] == {"type": "json_object", "json_schema": schema}
    assert "response_format" not in build({"messages": [user("x")], "response_format": {"type": "text"}})


def test_bodies_validate_against_the_official_sdk_types() -> None:
    """What the adapter sends must parse as the cohere SDK's own v2 request types."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    sent = build(
        {
            "messages": [
                {"role": "system", "content": "s"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/a.png", "detail": "high"},
                        },
                    ],
                },
                {"role": "assistant", "content": "checking", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]},
            ],
            "tools": [WEATHER, TIME],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}},
            },
        }
    )
    messages = pydantic.TypeAdapter(list[ChatMessageV2]).validate_python(sent["messages"])
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    pydantic.TypeAdapter(list[ToolV2]).validate_python(sent["tools"])
    pydantic.TypeAdapter(ResponseFormatV2).validate_python(sent["response_format"])


# -- answers ----------------------------------------------------------------------------------------

TEXT_ANSWER = {
    "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "LLMs are language models."}]},
    "usage": {
        "billed_units": {"input_tokens": 17, "output_tokens": 12},
        "tokens": {"input_tokens": 215, "output_tokens": 12},
        "cached_tokens": 8,
    },
}
TOOL_ANSWER = {
    "id": "7d3a0a4c-2d4e-4c1e-9a3e-1f6a2a4d5c6b",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "tool_plan": "I will check the weather.",
        "tool_calls": [
            {
                "id": "get_weather_1byjy32y4hvq",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    "usage": {"tokens": {"input_tokens": 30, "output_tokens": 10}},
}


def test_parse_text_answer() -> None:
    result = ADAPTER.parse_chat(json.dumps(TEXT_ANSWER).encode(), model="command-a-03-2025")
    assert result["id"] == "c14c80c3-18eb-4519-9460-6c92edd8cfb4"
    assert result["model"] == "command-a-03-2025"
    assert result["choices"][0]["message"] == {
        "role": "assistant",
        "content": "LLMs are language models.",
        "refusal": None,
    }
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 12,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 8},
    }, "billed units are what the account pays for"


def test_parse_tool_answer() -> None:
    result = ADAPTER.parse_chat(json.dumps(TOOL_ANSWER).encode(), model="m")
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None, "the tool plan stays with Cohere"
    assert choice["message"]["tool_calls"] == TOOL_ANSWER["message"]["tool_calls"]  # type: ignore[index]
    assert result["usage"]["prompt_tokens"] == 30, "tokens when no billed units are reported"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls")],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    answer = {**TEXT_ANSWER, "finish_reason": reason}
    assert ADAPTER.parse_chat(json.dumps(answer).encode(), model="m")["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(("reason", "kind"), [("ERROR", ErrorKind.SERVER), ("TIMEOUT", ErrorKind.TIMEOUT)])
def test_a_failed_generation_is_an_error_not_an_answer(reason: str, kind: ErrorKind) -> None:
    answer = {**TEXT_ANSWER, "finish_reason": reason}
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_chat(json.dumps(answer).encode(), model="m")
    assert caught.value.kind == kind


@pytest.mark.parametrize("body", [b"nope", b"{}", b'{"message": "x"}'])
def test_unparseable_answers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_chat(body, model="m")
    assert caught.value.kind == ErrorKind.PROTOCOL


# -- streams ----------------------------------------------------------------------------------------


def sse(*events: Json) -> bytes:
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode() for e in events
    )


MESSAGE_START = {
    "id": "29f14a5a-11de-4cae-9800-25e4747408ea",
    "type": "message-start",
    "delta": {
        "message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    },
}
USAGE = {
    "billed_units": {"input_tokens": 3, "output_tokens": 4},
    "tokens": {"input_tokens": 69, "output_tokens": 4},
}
TEXT_STREAM = sse(
    MESSAGE_START,
    {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Grüße "}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "👋 from Command"}}}},
    {"type": "content-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": USAGE}},
)


def tool_call_events(index: int, call_id: str, name: str, pieces: list[str]) -> list[Json]:
    head = {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return [
        {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": head}}},
        *(
            {
                "type": "tool-call-delta",
                "index": index,
                "delta": {"message": {"tool_calls": {"function": {"arguments": p}}}},
            }
            for p in pieces
        ),
        {"type": "tool-call-end", "index": index},
    ]


TOOL_STREAM = sse(
    MESSAGE_START,
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will "}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "check."}}},
    *tool_call_events(0, "get_weather_abc", "get_weather", ['{"city"', ':"Paris"}']),
    *tool_call_events(1, "get_time_def", "get_time", ["{}"]),
    {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": USAGE}},
)


def feed(data: bytes, size: int, *, include_usage: bool = True) -> tuple[list[Json], CohereStreamDecoder]:
    decoder = ADAPTER.chat_stream_decoder(model="command-a-03-2025", include_usage=include_usage)
    chunks: list[Json] = []
    for start in range(0, len(data), size):
        chunks.extend(decoder.feed(data[start : start + size]))
    for item in chunks:
        item.pop("created")
    return chunks, decoder


def deltas(chunks: list[Json]) -> list[Json]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_text_stream() -> None:
    chunks, decoder = feed(TEXT_STREAM, len(TEXT_STREAM))
    assert decoder.finished
    assert {c["id"] for c in chunks} == {"29f14a5a-11de-4cae-9800-25e4747408ea"}
    assert {c["model"] for c in chunks} == {"command-a-03-2025"}
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Grüße "},
        {"content": "👋 from Command"},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert decoder.usage == chunks[-1]["usage"]


@pytest.mark.parametrize("size", [1, 2, 5, 13, 100])
@pytest.mark.parametrize("stream", [TEXT_STREAM, TOOL_STREAM], ids=["text", "tools"])
def test_any_split_of_the_bytes_gives_the_same_chunks(stream: bytes, size: int) -> None:
    whole, _ = feed(stream, len(stream))
    split, decoder = feed(stream, size)
    assert split == whole and decoder.finished


def test_tool_stream() -> None:
    chunks, _ = feed(TOOL_STREAM, 9)
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "get_weather_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ':"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "get_time_def",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_opening_events_emit_nothing_and_a_cut_stream_is_not_finished() -> None:
    decoder = ADAPTER.chat_stream_decoder(model="m", include_usage=False)
    assert decoder.feed(TEXT_STREAM[: TEXT_STREAM.index(b"event: content-delta")]) == []
    cut, decoder = feed(TEXT_STREAM[: TEXT_STREAM.index(b"event: message-end")], 3, include_usage=False)
    assert deltas(cut)[1:] == [{"content": "Grüße "}, {"content": "👋 from Command"}]
    assert not decoder.finished and decoder.usage is None


def test_without_include_usage_no_usage_chunk() -> None:
    chunks, decoder = feed(TEXT_STREAM, 20, include_usage=False)
    assert all(c["choices"] for c in chunks)
    assert decoder.usage is not None and decoder.usage["total_tokens"] == 7


@pytest.mark.parametrize(
    ("delta", "kind"),
    [
        ({"finish_reason": "ERROR", "error": "internal server error"}, ErrorKind.SERVER),
        (
            {"finish_reason": "ERROR", "error": "You are past the per minute request limit"},
            ErrorKind.RATE_LIMITED,
        ),
        ({"finish_reason": "TIMEOUT"}, ErrorKind.TIMEOUT),
    ],
)
def test_a_failed_message_end_raises(delta: Json, kind: ErrorKind) -> None:
    decoder = ADAPTER.chat_stream_decoder(model="m", include_usage=True)
    decoder.feed(TEXT_STREAM[: TEXT_STREAM.index(b"event: content-end")])
    with pytest.raises(ProviderError) as caught:
        decoder.feed(sse({"type": "message-end", "delta": {**delta, "usage": USAGE}}))
    assert caught.value.kind == kind
    assert not decoder.finished
    assert decoder.usage is not None, "what was used is still accounted"


# -- errors and embeddings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "invalid request: message must be at least 1 token long", ErrorKind.BAD_REQUEST),
        (400, "too many tokens: size limit exceeded by 1203 tokens", ErrorKind.CONTEXT_TOO_LONG),
        (401, "invalid api token", ErrorKind.AUTH),
        (402, "Please add a payment method", ErrorKind.AUTH),
        (498, "invalid token", ErrorKind.AUTH),
        (404, "model 'x' not found", ErrorKind.NOT_FOUND),
        (422, "unprocessable", ErrorKind.BAD_REQUEST),
        (429, "You are past the per minute request limit", ErrorKind.RATE_LIMITED),
        (500, "internal server error", ErrorKind.SERVER),
        (503, "service unavailable", ErrorKind.OVERLOADED),
        (504, "gateway timeout", ErrorKind.TIMEOUT),
    ],
)
def test_error_mapping(status: int, message: str, kind: ErrorKind) -> None:
    error = ADAPTER.error(status, {"retry-after": "3"}, json.dumps({"id": "e1", "message": message}).encode())
    assert isinstance(error, ProviderError)
    assert (error.kind, error.status, error.message, error.provider) == (kind, status, message, "cohere")
    assert error.retry_after == 3.0
    assert ADAPTER.error(502, {}, b"Bad Gateway").message == "Bad Gateway"


def test_embeddings_request() -> None:
    request = ADAPTER.embeddings_request(TARGET, {"model": "embed", "input": ["a", "b"], "dimensions": 512})
    assert request.url == "https://api.cohere.com/v2/embed"
    assert request.headers["authorization"] == "Bearer co-test"
    assert json.loads(request.body) == {
        "model": "command-a-03-2025",
        "texts": ["a", "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 512,
    }
    single = json.loads(ADAPTER.embeddings_request(TARGET, {"input": "a", "encoding_format": "base64"}).body)
    assert single["texts"] == ["a"] and single["embedding_types"] == ["base64"]
    with pytest.raises(ProviderError) as caught:
        ADAPTER.embeddings_request(TARGET, {"input": [[1, 2, 3]]})
    assert caught.value.kind == ErrorKind.BAD_REQUEST


def test_parse_embeddings() -> None:
    answer = {
        "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
        "embeddings": {"float": [[0.1, 0.2], [0.3, 0.4]]},
        "texts": ["a", "b"],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 2}},
        "response_type": "embeddings_by_type",
    }
    assert ADAPTER.parse_embeddings(json.dumps(answer).encode(), model="embed-v4.0") == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
            {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
        ],
        "model": "embed-v4.0",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    encoded = {**answer, "embeddings": {"base64": ["zczMPQ=="]}}
    assert (
        ADAPTER.parse_embeddings(json.dumps(encoded).encode(), model="m")["data"][0]["embedding"]
        == "zczMPQ=="
    )
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_embeddings(b'{"embeddings": {}}', model="m")
    assert caught.value.kind == ErrorKind.PROTOCOL


def test_registry_serves_this_adapter() -> None:
    assert isinstance(adapter_for("cohere"), CohereAdapter)

"""The Anthropic adapter as pure translation: OpenAI requests to Messages API bodies, Claude's answers
and SSE events back to OpenAI objects and chunks, and Claude's errors onto the shared taxonomy."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)

from llmroute_sidecar.adapters.anthropic import AnthropicAdapter, AnthropicStreamDecoder
from llmroute_sidecar.adapters.base import Target
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.adapters.registry import adapter_for

Json = dict[str, Any]
ADAPTER = AnthropicAdapter()
TARGET = Target(provider="anthropic", model="claude-sonnet-4-6", endpoint="", api_key="sk-ant-test")
WEATHER: Json = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def build(body: Json, *, stream: bool = False, target: Target = TARGET) -> Json:
    request = ADAPTER.chat_request(target, {"model": "chat", **body}, stream=stream)
    sent: Json = json.loads(request.body)
    return sent


def user(text: str) -> Json:
    return {"role": "user", "content": text}


# -- requests ---------------------------------------------------------------------------------------


def test_url_headers_and_defaults() -> None:
    request = ADAPTER.chat_request(TARGET, {"model": "chat", "messages": [user("hi")]}, stream=False)
    assert request.method == "POST"
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    streaming = ADAPTER.chat_request(TARGET, {"model": "chat", "messages": [user("hi")]}, stream=True)
    assert json.loads(streaming.body)["stream"] is True
    assert streaming.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/v1/messages"),
        ("https://gateway.example/anthropic/", "https://gateway.example/anthropic/v1/messages"),
        ("https://gateway.example/v1", "https://gateway.example/v1/messages"),
    ],
)
def test_endpoint_is_the_sdk_base_url(endpoint: str, url: str) -> None:
    target = Target(provider="anthropic", model="m", endpoint=endpoint, api_key="k")
    assert ADAPTER.chat_request(target, {"model": "chat", "messages": [user("x")]}, stream=False).url == url


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    sent = build(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                user("hello"),
            ]
        }
    )
    assert sent["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in French."},
    ]
    assert [m["role"] for m in sent["messages"]] == ["user"]


def test_sampling_parameters() -> None:
    sent = build(
        {
            "messages": [user("x")],
            "max_completion_tokens": 300,
            "max_tokens": 100,
            "temperature": 1.7,
            "top_p": 0.5,
            "stop": ["END", "\n\n"],
            "seed": 7,
            "frequency_penalty": 0.5,
            "user": "user-42",
        }
    )
    assert sent["max_tokens"] == 300, "max_completion_tokens wins over the legacy max_tokens"
    assert sent["temperature"] == 1.0, "clamped to Claude's range"
    assert "top_p" not in sent, "recent Claude models refuse temperature and top_p together"
    assert sent["stop_sequences"] == ["END"], "whitespace-only stop sequences are refused by Claude"
    assert sent["metadata"] == {"user_id": "user-42"}
    assert "seed" not in sent and "frequency_penalty" not in sent
    alone = build({"messages": [user("x")], "max_tokens": 10, "top_p": 0.5, "stop": "###"})
    assert alone["max_tokens"] == 10 and alone["top_p"] == 0.5 and alone["stop_sequences"] == ["###"]


def test_images_and_documents() -> None:
    sent = build(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                        },
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": "data:application/pdf;base64,JVBERi0x",
                            },
                        },
                    ],
                }
            ]
        }
    )
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
        },
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-123"}},
    ],
)
def test_content_claude_cannot_take_is_a_bad_request(part: Json) -> None:
    with pytest.raises(ProviderError) as caught:
        build({"messages": [{"role": "user", "content": [part]}]})
    assert caught.value.kind == ErrorKind.BAD_REQUEST
    assert caught.value.provider == "anthropic"


def test_tools_and_tool_results() -> None:
    sent = build(
        {
            "messages": [
                {"role": "system", "content": "You help."},
                user("Weather in Paris and Rome?"),
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "tooluse:2/x",  # an id from another provider, with characters Claude refuses
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "tooluse:2/x",
                    "content": [{"type": "text", "text": "rain"}],
                },
                user("Thanks! And tomorrow?"),
            ],
            "tools": [WEATHER],
        }
    )
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert "tool_choice" not in sent, "auto is Claude's default"
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "tooluse_2_x", "name": "get_weather", "input": {}},
            ],
        },
        {
            # Both results and the next user text merge into one user turn, results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "tooluse_2_x",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"type": "text", "text": "Thanks! And tomorrow?"},
            ],
        },
    ]


def test_consecutive_messages_of_one_role_are_merged_and_empty_ones_dropped() -> None:
    sent = build(
        {
            "messages": [
                user("one"),
                user("two"),
                {"role": "assistant", "content": ""},
                user("three"),
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            ]
        }
    )
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": t} for t in ("one", "two", "three")],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "I can't."}]},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("none", None, {"type": "none"}),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: Json) -> None:
    body: Json = {"messages": [user("x")], "tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert build(body)["tool_choice"] == expected


def test_tool_arguments_that_are_not_a_json_object_are_a_bad_request() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    with pytest.raises(ProviderError) as caught:
        build({"messages": [user("x"), {"role": "assistant", "content": None, "tool_calls": [call]}]})
    assert caught.value.kind == ErrorKind.BAD_REQUEST


def test_json_mode_is_emulated_with_a_system_instruction() -> None:
    plain = build({"messages": [user("x")], "response_format": {"type": "json_object"}})
    assert "single valid JSON object" in plain["system"][-1]["text"]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    sent = build(
        {
            "messages": [{"role": "system", "content": "Be terse."}, user("x")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": True},
            },
        }
    )
    assert sent["system"][0] == {"type": "text", "text": "Be terse."}
    instruction = sent["system"][-1]["text"]
    assert 'named "reply"' in instruction
    assert json.loads(instruction.split("\n", 1)[1]) == schema
    assert "output_config" not in sent
    assert "system" not in build({"messages": [user("x")], "response_format": {"type": "text"}})


def test_bodies_validate_against_the_official_sdk_types() -> None:
    """What the adapter sends must be what the anthropic SDK itself would send (types and literals)."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    body: Json = {
        "messages": [
            {"role": "system", "content": "s"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x"}},
                ],
            },
            {"role": "assistant", "content": "checking", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "temperature": 0.4,
        "stop": ["END"],
        "user": "u-1",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": {"type": "object"}},
        },
    }
    plain = pydantic.TypeAdapter(MessageCreateParamsNonStreaming)
    plain.validate_python(build(body))
    pydantic.TypeAdapter(MessageCreateParamsStreaming).validate_python(build(body, stream=True))
    for choice in ("none", "auto", "required"):
        plain.validate_python(build({**body, "tool_choice": choice}))


# -- answers ----------------------------------------------------------------------------------------

TEXT_ANSWER = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "output_tokens": 503,
    },
}
TOOL_ANSWER = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {"type": "text", "text": "I'll check the weather."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 50, "output_tokens": 20},
}


def test_parse_text_answer_with_cache_usage() -> None:
    result = ADAPTER.parse_chat(json.dumps(TEXT_ANSWER).encode(), model="claude-sonnet-4-6")
    assert result["object"] == "chat.completion"
    assert result["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert result["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert result["usage"] == {
        "prompt_tokens": 3195,
        "completion_tokens": 503,
        "total_tokens": 3698,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


def test_parse_tool_use_answer() -> None:
    result = ADAPTER.parse_chat(json.dumps(TOOL_ANSWER).encode(), model="m")
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    only_tool = {**TOOL_ANSWER, "content": TOOL_ANSWER["content"][2:]}  # type: ignore[index]
    assert (
        ADAPTER.parse_chat(json.dumps(only_tool).encode(), model="m")["choices"][0]["message"]["content"]
        is None
    )


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    answer = {**TEXT_ANSWER, "stop_reason": stop_reason}
    assert ADAPTER.parse_chat(json.dumps(answer).encode(), model="m")["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("body", [b"not json", b'{"type": "message"}', b"[]"])
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
    "type": "message_start",
    "message": {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-6",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
    },
}
TEXT_STREAM = sse(
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Grüße "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "👋 from Claude"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
)
TOOL_STREAM = sse(
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Weather..."},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking."}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "content_block_start",
        "index": 3,
        "content_block": {"type": "tool_use", "id": "toolu_01T2y", "name": "get_time", "input": {}},
    },
    {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "content_block_stop", "index": 3},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
)


def feed(data: bytes, size: int, *, include_usage: bool = True) -> tuple[list[Json], AnthropicStreamDecoder]:
    decoder = ADAPTER.chat_stream_decoder(model="claude-sonnet-4-6", include_usage=include_usage)
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
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Grüße "},
        {"content": "👋 from Claude"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, None, "stop"]
    expected_usage = {
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "total_tokens": 45,
        "prompt_tokens_details": {"cached_tokens": 5},
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == expected_usage
    assert decoder.usage == expected_usage


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 333])
@pytest.mark.parametrize("stream", [TEXT_STREAM, TOOL_STREAM], ids=["text", "tools"])
def test_any_split_of_the_bytes_gives_the_same_chunks(stream: bytes, size: int) -> None:
    whole, _ = feed(stream, len(stream))
    split, decoder = feed(stream, size)
    assert split == whole and decoder.finished


def test_nothing_is_emitted_before_real_output() -> None:
    decoder = ADAPTER.chat_stream_decoder(model="m", include_usage=False)
    opening = sse(
        MESSAGE_START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    )
    assert decoder.feed(opening) == [], "so that an error event here can still fail over"
    assert decoder.usage is not None and decoder.usage["prompt_tokens"] == 30, "known for accounting already"


def test_tool_stream() -> None:
    chunks, _ = feed(TOOL_STREAM, 5)
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Checking."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_01T2y",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_without_include_usage_the_app_gets_no_usage_chunk_but_accounting_does() -> None:
    chunks, decoder = feed(TEXT_STREAM, 10, include_usage=False)
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert decoder.usage is not None and decoder.usage["completion_tokens"] == 15


def test_a_cut_stream_is_not_finished() -> None:
    cut = TEXT_STREAM[: TEXT_STREAM.index(b"event: message_delta")]
    chunks, decoder = feed(cut, 16)
    assert not decoder.finished
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.OVERLOADED),
        ("api_error", ErrorKind.SERVER),
        ("rate_limit_error", ErrorKind.RATE_LIMITED),
    ],
)
def test_error_event_raises(error_type: str, kind: ErrorKind) -> None:
    decoder = ADAPTER.chat_stream_decoder(model="m", include_usage=False)
    head = TEXT_STREAM[: TEXT_STREAM.index(b"event: content_block_stop")]
    assert decoder.feed(head)
    error = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    with pytest.raises(ProviderError) as caught:
        decoder.feed(sse(error))
    assert caught.value.kind == kind and caught.value.message == "Overloaded"
    assert not decoder.finished


def test_garbage_in_a_stream_is_a_protocol_error() -> None:
    decoder = ADAPTER.chat_stream_decoder(model="m", include_usage=False)
    with pytest.raises(ProviderError) as caught:
        decoder.feed(b"event: message_start\ndata: {not json\n\n")
    assert caught.value.kind == ErrorKind.PROTOCOL


# -- errors and the rest ----------------------------------------------------------------------------


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "error_type", "message", "kind"),
    [
        (400, "invalid_request_error", "messages: roles must alternate", ErrorKind.BAD_REQUEST),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            ErrorKind.CONTEXT_TOO_LONG,
        ),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000",
            ErrorKind.CONTEXT_TOO_LONG,
        ),
        (401, "authentication_error", "invalid x-api-key", ErrorKind.AUTH),
        (403, "permission_error", "no access to this model", ErrorKind.AUTH),
        (402, "billing_error", "credit balance too low", ErrorKind.AUTH),
        (404, "not_found_error", "model: claude-9", ErrorKind.NOT_FOUND),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            ErrorKind.RATE_LIMITED,
        ),
        (500, "api_error", "Internal server error", ErrorKind.SERVER),
        (529, "overloaded_error", "Overloaded", ErrorKind.OVERLOADED),
        (529, "", "", ErrorKind.OVERLOADED),
        (504, "timeout_error", "Request timed out", ErrorKind.TIMEOUT),
        (503, "some_new_error", "Service unavailable", ErrorKind.OVERLOADED),
    ],
)
def test_error_mapping(status: int, error_type: str, message: str, kind: ErrorKind) -> None:
    error = ADAPTER.error(status, {"request-id": "req_1"}, error_body(error_type, message))
    assert isinstance(error, ProviderError)
    assert error.kind == kind and error.status == status and error.provider == "anthropic"
    if message:
        assert error.message == message


def test_error_retry_after_and_non_json_bodies() -> None:
    error = ADAPTER.error(429, {"Retry-After": "7"}, error_body("rate_limit_error", "slow down"))
    assert error.retry_after == 7.0 and error.retryable
    bare = ADAPTER.error(502, {}, b"<html>Bad Gateway</html>")
    assert bare.kind == ErrorKind.SERVER and "Bad Gateway" in bare.message


def test_embeddings_are_refused() -> None:
    with pytest.raises(ProviderError, match="anthropic does not serve embeddings") as caught:
        ADAPTER.embeddings_request(TARGET, {"model": "e", "input": "x"})
    assert caught.value.kind == ErrorKind.BAD_REQUEST


def test_registry_serves_this_adapter() -> None:
    assert isinstance(adapter_for("anthropic"), AnthropicAdapter)
    assert adapter_for("anthropic").name == "anthropic"

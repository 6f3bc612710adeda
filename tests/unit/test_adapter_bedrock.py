"""The Bedrock adapter as pure translation: Converse request bodies, signed URLs, recorded answers,
ConverseStream frames fed in odd splits, and error mapping. No sockets."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from llmroute_fakes.sigv4 import check_sigv4
from llmroute_sidecar.adapters.base import AwsKeys, Target
from llmroute_sidecar.adapters.bedrock import BedrockAdapter, converse_body
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.aws.eventstream import encode_message, event_message, exception_message

ADAPTER = BedrockAdapter()
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
KEYS = AwsKeys("AKIDEXAMPLE", "secret")
TARGET = Target(provider="bedrock", model=MODEL, endpoint="", region="eu-west-1", aws=KEYS)
PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "now"}},
]


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- requests ------------------------------------------------------------------------------------


def test_messages_system_images_tools_and_merging() -> None:
    body = converse_body(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                },
                {"role": "user", "content": "and this"},
                {"role": "developer", "content": [{"type": "text", "text": "use metric units"}]},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [_call("t1", "get_weather", '{"city":"Paris"}'), _call("t2", "now", "")],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "thanks"},
            ],
            "max_completion_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "seed": 3,
            "tools": TOOLS,
            "tool_choice": "required",
        }
    )
    assert body["system"] == [{"text": "be brief"}, {"text": "use metric units"}]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"text": "look"},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                {"text": "and this"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "t2", "name": "now", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "t2", "content": [{"text": "noon"}]}},
                {"text": "thanks"},
            ],
        },
    ]
    assert body["inferenceConfig"] == {
        "maxTokens": 100,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather",
                    "inputSchema": {"json": TOOLS[0]["function"]["parameters"]},
                }
            },
            {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
        ],
        "toolChoice": {"any": {}},
    }
    assert "seed" not in orjson.dumps(body).decode(), "Converse has no seed"


@pytest.mark.parametrize(
    ("choice", "history", "expected"),
    [
        (None, False, None),
        ("auto", False, {"auto": {}}),
        ({"type": "function", "function": {"name": "now"}}, False, {"tool": {"name": "now"}}),
        ("none", False, "no toolConfig"),
        ("none", True, "tools without a choice"),
    ],
)
def test_tool_choice(choice: Any, history: bool, expected: Any) -> None:
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    if history:
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [_call("t1", "now", "{}")]},
            {"role": "tool", "tool_call_id": "t1", "content": "noon"},
        ]
    request: dict[str, Any] = {"messages": messages, "tools": TOOLS}
    if choice is not None:
        request["tool_choice"] = choice
    body = converse_body(request)
    if expected == "no toolConfig":
        assert "toolConfig" not in body
    elif expected == "tools without a choice":
        assert "toolChoice" not in body["toolConfig"] and len(body["toolConfig"]["tools"]) == 2
    elif expected is None:
        assert "toolChoice" not in body["toolConfig"]
    else:
        assert body["toolConfig"]["toolChoice"] == expected


def test_json_mode_is_a_system_instruction() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = converse_body(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
        }
    )
    (instruction,) = body["system"]
    assert (
        "JSON" in instruction["text"] and '"city"' in instruction["text"] and "place" in instruction["text"]
    )


def test_media_s3_images_documents_and_refusals() -> None:
    content: Any = [
        {"type": "image_url", "image_url": {"url": "s3://bucket/photo.JPG"}},
        {
            "type": "file",
            "file": {
                "file_data": "data:application/pdf;base64,JVBERi0=",
                "filename": "Q3 report (final).v2.pdf",
            },
        },
    ]
    body = converse_body({"messages": [{"role": "user", "content": content}]})
    assert body["messages"][0]["content"] == [
        {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/photo.JPG"}}}},
        {"document": {"format": "pdf", "name": "Q3 report (final) v2", "source": {"bytes": "JVBERi0="}}},
    ]
    refusals = {
        "https://example.com/cat.png": "not http URLs",
        "data:image/tiff;base64,AAAA": "image/tiff",
    }
    for url, says in refusals.items():
        with pytest.raises(ProviderError, match=says) as caught:
            converse_body(
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
                    ]
                }
            )
        assert caught.value.kind == ErrorKind.BAD_REQUEST
    audio: Any = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    with pytest.raises(ProviderError, match="input_audio"):
        converse_body({"messages": [{"role": "user", "content": audio}]})
    with pytest.raises(ProviderError, match="legacy function"):
        converse_body({"messages": [{"role": "function", "name": "f", "content": "x"}]})


def test_chat_request_url_and_signature() -> None:
    request = ADAPTER.chat_request(TARGET, {"messages": [{"role": "user", "content": "hi"}]}, stream=False)
    encoded = "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
    assert request.url == f"https://bedrock-runtime.eu-west-1.amazonaws.com/model/{encoded}/converse"
    assert request.headers["host"] == "bedrock-runtime.eu-west-1.amazonaws.com"
    assert "/eu-west-1/bedrock/aws4_request" in request.headers["authorization"]
    verdict = check_sigv4(
        method="POST",
        raw_path=f"/model/{encoded}/converse",
        headers=request.headers,
        body=request.body,
        service="bedrock",
        secrets={"AKIDEXAMPLE": "secret"},
    )
    assert verdict is None, verdict
    wrong = check_sigv4(
        method="POST",
        raw_path=f"/model/{encoded}/converse",
        headers=request.headers,
        body=request.body,
        service="bedrock",
        secrets={"AKIDEXAMPLE": "other"},
    )
    assert wrong is not None and wrong.code == "InvalidSignatureException"

    arn = "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude"
    temporary = Target(
        provider="bedrock", model=arn, endpoint="http://127.0.0.1:9000/", aws=AwsKeys("AKID", "s", "token")
    )
    stream = ADAPTER.chat_request(temporary, {"messages": []}, stream=True)
    assert stream.url == (
        "http://127.0.0.1:9000/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Ainference-profile"
        "%2Feu.anthropic.claude/converse-stream"
    )
    assert stream.headers["accept"] == "application/vnd.amazon.eventstream"
    assert stream.headers["x-amz-security-token"] == "token"
    assert "/us-east-1/bedrock/" in stream.headers["authorization"], "no region: us-east-1"

    bearer = Target(provider="bedrock", model="m", endpoint="", api_key="bedrock-api-key")
    assert (
        ADAPTER.chat_request(bearer, {"messages": []}, stream=False).headers["authorization"]
        == "Bearer bedrock-api-key"
    )
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_request(
            Target(provider="bedrock", model="m", endpoint=""), {"messages": []}, stream=False
        )
    assert caught.value.kind == ErrorKind.AUTH


# --- answers -------------------------------------------------------------------------------------


def test_parse_text_answer_with_cache_usage() -> None:
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello"}, {"text": " there"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 35, "cacheReadInputTokens": 20},
        "metrics": {"latencyMs": 321},
    }
    result = ADAPTER.parse_chat(orjson.dumps(answer), model=MODEL)
    assert result["object"] == "chat.completion" and result["id"].startswith("chatcmpl-")
    choice = result["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello there", "refusal": None}
    assert choice["finish_reason"] == "length"
    assert result["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "total_tokens": 35,
        "prompt_tokens_details": {"cached_tokens": 20},
    }


def test_parse_tool_use_answer() -> None:
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Let me check."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7},
    }
    message = ADAPTER.parse_chat(orjson.dumps(answer), model=MODEL)["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] == "Let me check."
    assert message["message"]["tool_calls"] == [
        {
            "id": "tooluse_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    answer = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": reason}
    assert ADAPTER.parse_chat(orjson.dumps(answer), model=MODEL)["choices"][0]["finish_reason"] == finish


def test_parse_garbage_is_a_protocol_error() -> None:
    for body in (b"<html>", b'{"output": {}}', b"[]"):
        with pytest.raises(ProviderError) as caught:
            ADAPTER.parse_chat(body, model=MODEL)
        assert caught.value.kind == ErrorKind.PROTOCOL


# --- streams -------------------------------------------------------------------------------------


def _events(*, tool: bool, metadata: bool = True) -> bytes:
    padded = {"p": "abcdefgh"}
    frames = [event_message("messageStart", {"role": "assistant", **padded})]
    frames += [
        event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}, **padded})
        for piece in ("Hello ", "world")
    ]
    frames.append(event_message("contentBlockStop", {"contentBlockIndex": 0}))
    if tool:
        start = {"toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}
        frames.append(event_message("contentBlockStart", {"contentBlockIndex": 1, "start": start}))
        for piece in ('{"city":', '"Paris"}'):
            delta = {"contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}}
            frames.append(event_message("contentBlockDelta", delta))
        frames.append(event_message("contentBlockStop", {"contentBlockIndex": 1}))
    frames.append(event_message("messageStop", {"stopReason": "tool_use" if tool else "end_turn"}))
    usage = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}
    if metadata:
        frames.append(event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 12}, **padded}))
    return b"".join(frames)


def _decode(data: bytes, size: int, *, include_usage: bool) -> tuple[list[dict[str, Any]], Any]:
    decoder = ADAPTER.chat_stream_decoder(model=MODEL, include_usage=include_usage)
    chunks: list[dict[str, Any]] = []
    for start in range(0, len(data), size):
        assert not decoder.finished
        chunks += decoder.feed(data[start : start + size])
    return chunks, decoder


@pytest.mark.parametrize("size", [1, 5, 13, 100, 100_000])
def test_stream_in_odd_splits(size: int) -> None:
    chunks, decoder = _decode(_events(tool=True), size, include_usage=True)
    assert decoder.finished
    assert decoder.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": "Hello "}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello world"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "tooluse_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == decoder.usage


def test_stream_without_include_usage_and_without_metadata() -> None:
    chunks, decoder = _decode(_events(tool=False), 7, include_usage=False)
    assert decoder.finished and all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert decoder.usage is not None, "usage is known for accounting even when the app did not ask"
    _, cut = _decode(_events(tool=False, metadata=False), 7, include_usage=False)
    assert not cut.finished, "a body that ends before metadata was cut"


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        ("throttlingException", ErrorKind.RATE_LIMITED),
        ("serviceUnavailableException", ErrorKind.OVERLOADED),
        ("modelStreamErrorException", ErrorKind.SERVER),
        ("internalServerException", ErrorKind.SERVER),
        ("validationException", ErrorKind.BAD_REQUEST),
    ],
)
def test_in_stream_exceptions(exception: str, kind: ErrorKind) -> None:
    decoder = ADAPTER.chat_stream_decoder(model=MODEL, include_usage=False)
    assert decoder.feed(event_message("messageStart", {"role": "assistant"})) == []
    with pytest.raises(ProviderError) as caught:
        decoder.feed(exception_message(exception, {"message": "it broke"}))
    assert caught.value.kind == kind and "it broke" in caught.value.message


def test_generic_error_frames_and_corruption() -> None:
    decoder = ADAPTER.chat_stream_decoder(model=MODEL, include_usage=False)
    frame = encode_message(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
    )
    with pytest.raises(ProviderError, match="boom") as caught:
        decoder.feed(frame)
    assert caught.value.kind == ErrorKind.SERVER
    corrupted = bytearray(event_message("messageStart", {"role": "assistant"}))
    corrupted[-1] ^= 1
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_stream_decoder(model=MODEL, include_usage=False).feed(bytes(corrupted))
    assert caught.value.kind == ErrorKind.PROTOCOL
    orphan = event_message(
        "contentBlockDelta", {"contentBlockIndex": 4, "delta": {"toolUse": {"input": "{"}}}
    )
    with pytest.raises(ProviderError, match="never started"):
        ADAPTER.chat_stream_decoder(model=MODEL, include_usage=False).feed(orphan)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message", "kind"),
    [
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            ErrorKind.RATE_LIMITED,
        ),
        (
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
            ErrorKind.OVERLOADED,
        ),
        (429, "ModelNotReadyException", "Model is not ready", ErrorKind.OVERLOADED),
        (403, "AccessDeniedException", "You don't have access to the model", ErrorKind.AUTH),
        (
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            ErrorKind.AUTH,
        ),
        (400, "ValidationException", "Malformed input request", ErrorKind.BAD_REQUEST),
        (400, "ValidationException", "Input is too long for requested model.", ErrorKind.CONTEXT_TOO_LONG),
        (
            400,
            "ValidationException",
            "prompt is too long: 215000 tokens > 200000 maximum",
            ErrorKind.CONTEXT_TOO_LONG,
        ),
        (408, "ModelTimeoutException", "Model has timed out", ErrorKind.TIMEOUT),
        (500, "InternalServerException", "internal error", ErrorKind.SERVER),
        (424, "ModelErrorException", "The model returned an error", ErrorKind.SERVER),
        (502, "", "Bad Gateway", ErrorKind.SERVER),
    ],
)
def test_error_mapping(status: int, error_type: str, message: str, kind: ErrorKind) -> None:
    headers = (
        {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        if error_type
        else {}
    )
    error = ADAPTER.error(status, headers, orjson.dumps({"message": message}))
    assert error.kind == kind and error.status == status and error.provider == "bedrock"
    assert message in error.message and error_type in error.message


def test_error_type_from_the_body_and_retry_after() -> None:
    body = orjson.dumps({"__type": "com.amazon.coral.availability#ThrottlingException", "Message": "slow"})
    error = ADAPTER.error(400, {"Retry-After": "3"}, body)
    assert error.kind == ErrorKind.RATE_LIMITED and error.retry_after == 3.0 and "slow" in error.message
    assert ADAPTER.error(500, {}, b"<html>oops</html>").message == "<html>oops</html>"


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings_titan_cohere_and_others() -> None:
    titan = Target(
        provider="bedrock", model="amazon.titan-embed-text-v2:0", endpoint="", region="us-west-2", aws=KEYS
    )
    request = ADAPTER.embeddings_request(titan, {"input": "hello", "dimensions": 256})
    assert request.url.endswith("/model/amazon.titan-embed-text-v2%3A0/invoke")
    assert orjson.loads(request.body) == {"inputText": "hello", "dimensions": 256}
    parsed = ADAPTER.parse_embeddings(
        orjson.dumps({"embedding": [0.1, 0.2], "inputTextTokenCount": 2}), model="t"
    )
    assert parsed["data"] == [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
    assert parsed["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    with pytest.raises(ProviderError, match="Titan embeds one text"):
        ADAPTER.embeddings_request(titan, {"input": ["a", "b"]})

    cohere = Target(provider="bedrock", model="cohere.embed-english-v3", endpoint="", aws=KEYS)
    request = ADAPTER.embeddings_request(cohere, {"input": ["a", "b"]})
    assert orjson.loads(request.body) == {"texts": ["a", "b"], "input_type": "search_document"}
    for answer in ({"embeddings": [[1.0], [2.0]]}, {"embeddings": {"float": [[1.0], [2.0]]}}):
        data = ADAPTER.parse_embeddings(orjson.dumps(answer), model="c")["data"]
        assert [d["embedding"] for d in data] == [[1.0], [2.0]]

    with pytest.raises(ProviderError, match="Converse has none") as caught:
        ADAPTER.embeddings_request(TARGET, {"input": "x"})
    assert caught.value.kind == ErrorKind.BAD_REQUEST

"""The Gemini adapter as pure translation: GenerateContent bodies, URLs, recorded answers, SSE streams
fed in odd splits, and error mapping. No sockets."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from llmroute_sidecar.adapters.base import Target
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.adapters.google import SKIP_SIGNATURE, GoogleAdapter, generate_content_body

ADAPTER = GoogleAdapter()
TARGET = Target(provider="google", model="gemini-2.5-flash", endpoint="", api_key="g-key")
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "now", "parameters": {}}},
]


def _call(call_id: str, name: str, arguments: str, signature: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if signature is not None:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


# --- requests ------------------------------------------------------------------------------------


def test_contents_system_media_and_generation_config() -> None:
    body = generate_content_body(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
                        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
                    ],
                },
                {"role": "developer", "content": "answer in French"},
                {"role": "assistant", "content": "Un chat."},
            ],
            "max_tokens": 64,
            "temperature": 0.3,
            "top_p": 0.8,
            "seed": 42,
            "presence_penalty": 0.5,
            "stop": ["\n\n"],
            "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}},
        }
    )
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "answer in French"}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "hi"},
                {"text": "what is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
            ],
        },
        {"role": "model", "parts": [{"text": "Un chat."}]},
    ]
    schema = {k: v for k, v in SCHEMA.items() if k != "$schema"}
    assert body["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.3,
        "topP": 0.8,
        "seed": 42,
        "presencePenalty": 0.5,
        "stopSequences": ["\n\n"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    json_object = generate_content_body(
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}
    )
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in generate_content_body({"messages": [{"role": "user", "content": "hi"}]})


def test_tool_calls_results_and_thought_signatures() -> None:
    body = generate_content_body(
        {
            "messages": [
                {"role": "user", "content": "weather and time?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        _call("call_a", "get_weather", '{"city":"Paris"}', "c2lnbmVk"),
                        _call("call_b", "now", ""),
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": '{"sky":"clear"}'},
                {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
                {"role": "assistant", "content": "Sunny.", "tool_calls": [_call("call_c", "now", "{}")]},
                {"role": "tool", "tool_call_id": "call_c", "content": "[1, 2]"},
            ],
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "now"}},
        }
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "weather and time?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "c2lnbmVk",
                },
                {"functionCall": {"name": "now", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
                {"functionResponse": {"name": "now", "response": {"output": "noon"}}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Sunny."},
                {"functionCall": {"name": "now", "args": {}}, "thoughtSignature": SKIP_SIGNATURE},
            ],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "now", "response": {"output": [1, 2]}}}]},
    ]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather",
                    "parametersJsonSchema": {k: v for k, v in SCHEMA.items() if k != "$schema"},
                },
                {"name": "now"},
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["now"]}}


@pytest.mark.parametrize(
    ("choice", "config"),
    [("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}), (None, None)],
)
def test_tool_choice(choice: Any, config: Any) -> None:
    request: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    if choice is not None:
        request["tool_choice"] = choice
    body = generate_content_body(request)
    assert body.get("toolConfig") == ({"functionCallingConfig": config} if config else None)


def test_refusals() -> None:
    orphan = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_zz", "content": "r"}]
    with pytest.raises(ProviderError, match="call_zz") as caught:
        generate_content_body({"messages": orphan})
    assert caught.value.kind == ErrorKind.BAD_REQUEST
    file_id: Any = [{"type": "file", "file": {"file_id": "file-abc"}}]
    with pytest.raises(ProviderError, match="file_data"):
        generate_content_body({"messages": [{"role": "user", "content": file_id}]})
    bad_args = [{"role": "assistant", "content": None, "tool_calls": [_call("c", "now", "{not json")]}]
    with pytest.raises(ProviderError, match="not valid JSON"):
        generate_content_body({"messages": bad_args})
    with pytest.raises(ProviderError, match="token-id"):
        ADAPTER.embeddings_request(TARGET, {"input": [[1, 2, 3]]})


def test_urls_and_headers() -> None:
    chat = ADAPTER.chat_request(TARGET, {"messages": [{"role": "user", "content": "hi"}]}, stream=False)
    assert (
        chat.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert chat.headers["x-goog-api-key"] == "g-key" and "authorization" not in chat.headers
    stream = ADAPTER.chat_request(TARGET, {"messages": []}, stream=True)
    assert stream.url.endswith("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    versioned = Target(
        provider="google", model="tunedModels/my-model", endpoint="http://127.0.0.1:9/v1/", api_key="k"
    )
    assert ADAPTER.chat_request(versioned, {"messages": []}, stream=False).url == (
        "http://127.0.0.1:9/v1/tunedModels/my-model:generateContent"
    )


# --- answers -------------------------------------------------------------------------------------

TEXT_ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [{"text": "thinking...", "thought": True}, {"text": "Hello"}, {"text": " there"}],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 5,
        "cachedContentTokenCount": 8,
        "totalTokenCount": 20,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "abc123",
}


def test_parse_text_answer() -> None:
    result = ADAPTER.parse_chat(orjson.dumps(TEXT_ANSWER), model="gemini-2.5-flash")
    assert result["id"] == "chatcmpl-abc123" and result["object"] == "chat.completion"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hello there", "refusal": None}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 8,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }


def test_parse_function_calls() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                            "thoughtSignature": "c2ln",
                        },
                        {"functionCall": {"name": "now", "args": {}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9},
    }
    choice = ADAPTER.parse_chat(orjson.dumps(answer), model="m")["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and first["id"] != second["id"]
    assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert first["extra_content"] == {"google": {"thought_signature": "c2ln"}}
    assert "extra_content" not in second


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    answer = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert ADAPTER.parse_chat(orjson.dumps(answer), model="m")["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_and_garbage() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    choice = ADAPTER.parse_chat(orjson.dumps(blocked), model="m")["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] == ""
    for body in (b"{}", b"not json", b"[]"):
        with pytest.raises(ProviderError) as caught:
            ADAPTER.parse_chat(body, model="m")
        assert caught.value.kind == ErrorKind.PROTOCOL


# --- streams -------------------------------------------------------------------------------------


def _sse(*responses: Any) -> bytes:
    return b"".join(b"data: " + orjson.dumps(r) + b"\r\n\r\n" for r in responses)


def _piece(parts: list[Any], finish: str | None = None, output: int = 1) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    usage = {"promptTokenCount": 4, "candidatesTokenCount": output, "totalTokenCount": 4 + output}
    return {"candidates": [candidate], "usageMetadata": usage, "responseId": "r1"}


TEXT_STREAM = _sse(
    _piece([{"text": "Hel"}]),
    _piece([{"text": "lo, "}], output=2),
    _piece([{"text": "wörld"}], "STOP", output=3),
)


def _decode(data: bytes, size: int, *, include_usage: bool) -> tuple[list[dict[str, Any]], Any]:
    decoder = ADAPTER.chat_stream_decoder(model="gemini-2.5-flash", include_usage=include_usage)
    chunks: list[dict[str, Any]] = []
    for start in range(0, len(data), size):
        chunks += decoder.feed(data[start : start + size])
    return chunks, decoder


@pytest.mark.parametrize("size", [1, 2, 9, 64, 100_000])
def test_text_stream_in_odd_splits(size: int) -> None:
    chunks, decoder = _decode(TEXT_STREAM, size, include_usage=True)
    assert decoder.finished
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": "Hel"}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello, wörld"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert {c["id"] for c in chunks} == {"chatcmpl-r1"}
    assert chunks[-1]["choices"] == []
    assert (
        chunks[-1]["usage"]
        == decoder.usage
        == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    )


def test_stream_without_usage_cut_and_after_the_end() -> None:
    chunks, decoder = _decode(TEXT_STREAM, 5, include_usage=False)
    assert decoder.finished and all("usage" not in c for c in chunks) and decoder.usage is not None
    _, cut = _decode(TEXT_STREAM[: TEXT_STREAM.rfind(b"data:")], 5, include_usage=False)
    assert not cut.finished, "no chunk carried a finishReason: the stream was cut"
    assert decoder.feed(_sse(_piece([{"text": "late"}]))) == [], "nothing after the end"


def test_function_call_stream() -> None:
    data = _sse(
        _piece(
            [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]
        ),
        _piece([{"functionCall": {"name": "now", "args": {}}}], "STOP"),
    )
    chunks, decoder = _decode(data, 3, include_usage=False)
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "now", {}),
    ]
    assert (
        calls[0]["id"].startswith("call_")
        and calls[0]["extra_content"]["google"]["thought_signature"] == "c2ln"
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and decoder.finished


def test_blocked_prompt_ends_the_stream() -> None:
    chunks, decoder = _decode(
        _sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}), 4, include_usage=False
    )
    assert decoder.finished and chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_in_stream_error_event() -> None:
    decoder = ADAPTER.chat_stream_decoder(model="m", include_usage=False)
    assert decoder.feed(_sse(_piece([{"text": "Hi"}])))
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(ProviderError, match="overloaded") as caught:
        decoder.feed(_sse(error))
    assert caught.value.kind == ErrorKind.OVERLOADED and caught.value.status == 503


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name", "message", "kind"),
    [
        (
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
            ErrorKind.RATE_LIMITED,
        ),
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", ErrorKind.OVERLOADED),
        (401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", ErrorKind.AUTH),
        (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers", ErrorKind.AUTH),
        (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", ErrorKind.AUTH),
        (
            400,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
            ErrorKind.BAD_REQUEST,
        ),
        (
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            ErrorKind.CONTEXT_TOO_LONG,
        ),
        (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", ErrorKind.TIMEOUT),
        (500, "INTERNAL", "An internal error has occurred.", ErrorKind.SERVER),
        (404, "NOT_FOUND", "models/gemini-9 is not found", ErrorKind.NOT_FOUND),
    ],
)
def test_error_mapping(status: int, name: str, message: str, kind: ErrorKind) -> None:
    error = ADAPTER.error(
        status, {}, orjson.dumps({"error": {"code": status, "message": message, "status": name}})
    )
    assert error.kind == kind and error.status == status and error.provider == "google"
    assert message in error.message and name in error.message


def test_error_details_array_form_and_garbage() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}],
        }
    }
    assert ADAPTER.error(429, {}, orjson.dumps(body)).retry_after == 17.0
    assert ADAPTER.error(429, {"retry-after": "2"}, orjson.dumps(body)).retry_after == 2.0, "the header wins"
    invalid_key = {
        "error": {
            "code": 400,
            "message": "bad",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    assert ADAPTER.error(400, {}, orjson.dumps([invalid_key])).kind == ErrorKind.AUTH
    garbage = ADAPTER.error(502, {}, b"<html>Bad Gateway</html>")
    assert garbage.kind == ErrorKind.SERVER and "Bad Gateway" in garbage.message


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings() -> None:
    target = Target(provider="google", model="gemini-embedding-001", endpoint="", api_key="k")
    request = ADAPTER.embeddings_request(target, {"input": ["a", "b"], "dimensions": 8})
    assert request.url.endswith("/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert orjson.loads(request.body) == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 8,
            }
            for t in ("a", "b")
        ]
    }
    single = orjson.loads(ADAPTER.embeddings_request(target, {"input": "solo"}).body)
    assert [r["content"]["parts"][0]["text"] for r in single["requests"]] == ["solo"]
    parsed = ADAPTER.parse_embeddings(
        orjson.dumps({"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}), model="e"
    )
    assert parsed["object"] == "list" and parsed["model"] == "e"
    assert parsed["data"] == [
        {"object": "embedding", "index": 0, "embedding": [0.1]},
        {"object": "embedding", "index": 1, "embedding": [0.2]},
    ]
    with pytest.raises(ProviderError):
        ADAPTER.parse_embeddings(b'{"error": 1}', model="e")

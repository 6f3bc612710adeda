"""The proto <-> OpenAI dict conversions of the gRPC front, both ways, without a socket."""

from __future__ import annotations

import base64
import struct
from types import SimpleNamespace

import grpc
import pytest

from llmroute_proto.v1 import config_pb2
from llmroute_proto.v1 import router_pb2 as pb
from llmroute_sidecar.grpc_convert import (
    chat_body,
    chat_chunk,
    chat_response,
    embed_body,
    embed_response,
    hints_for,
    list_models_response,
    route_info,
    token_usage,
)
from llmroute_sidecar.grpc_front import status_code_for
from llmroute_sidecar.openai_api.errors import ApiError
from llmroute_sidecar.openai_api.validate import parse_chat, parse_embeddings
from llmroute_sidecar.service import RouteMeta

PNG = b"\x89PNG\r\n\x1a\nfake"


def _full_request() -> pb.ChatRequest:
    return pb.ChatRequest(
        model="chat",
        messages=[
            pb.ChatMessage(role=pb.ROLE_DEVELOPER, content="be brief"),
            pb.ChatMessage(
                role=pb.ROLE_USER,
                name="ann",
                content_parts=[
                    pb.ContentPart(text="what is this?"),
                    pb.ContentPart(image_url=pb.ImageUrl(url="https://x.test/a.png", detail="low")),
                    pb.ContentPart(image_data=pb.ImageData(data=PNG, media_type="image/png", detail="high")),
                ],
            ),
            pb.ChatMessage(
                role=pb.ROLE_ASSISTANT,
                tool_calls=[
                    pb.ToolCall(id="c1", function=pb.FunctionCall(name="look", arguments='{"q": 1}'))
                ],
            ),
            pb.ChatMessage(role=pb.ROLE_TOOL, tool_call_id="c1", content="a cat"),
        ],
        tools=[
            pb.Tool(
                function=pb.FunctionDefinition(
                    name="look", description="Look it up", parameters_json='{"type": "object"}', strict=True
                )
            ),
            pb.Tool(function=pb.FunctionDefinition(name="noop")),
        ],
        tool_choice=pb.ToolChoice(function_name="look"),
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(
                name="answer", schema_json='{"type": "object", "properties": {}}', strict=False
            ),
        ),
        temperature=0.0,
        top_p=0.5,
        max_tokens=64,
        max_completion_tokens=80,
        stop=["END"],
        seed=-3,
        n=1,
        presence_penalty=0.1,
        frequency_penalty=-0.1,
        parallel_tool_calls=False,
        user="u-9",
    )


def test_chat_request_to_openai_body() -> None:
    body = chat_body(_full_request(), stream=False)
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert body == {
        "model": "chat",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": data_url, "detail": "high"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"q": 1}'}}
                ],
            },
            {"role": "tool", "content": "a cat", "tool_call_id": "c1"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "description": "Look it up",
                    "parameters": {"type": "object"},
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "noop"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {}},
                "strict": False,
            },
        },
        "temperature": 0.0,
        "top_p": 0.5,
        "max_tokens": 64,
        "max_completion_tokens": 80,
        "seed": -3,
        "n": 1,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "parallel_tool_calls": False,
        "stop": ["END"],
        "user": "u-9",
    }
    assert parse_chat(body) is body, "what the conversion builds passes the HTTP front's validation"
    assert chat_body(_full_request(), stream=True)["stream"] is True


def test_minimal_request_sends_only_what_is_set() -> None:
    body = chat_body(
        pb.ChatRequest(model="chat", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="")]), stream=False
    )
    assert body == {"model": "chat", "messages": [{"role": "user", "content": ""}]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE), "none"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO), "auto"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED), "required"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_UNSPECIFIED), None),
        (pb.ToolChoice(), None),
    ],
)
def test_tool_choice_modes(choice: pb.ToolChoice, expected: str | None) -> None:
    body = chat_body(pb.ChatRequest(model="m", tool_choice=choice), stream=False)
    assert body.get("tool_choice") == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED, None),
        (pb.RESPONSE_FORMAT_TYPE_TEXT, {"type": "text"}),
        (pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT, {"type": "json_object"}),
    ],
)
def test_response_formats(kind: int, expected: dict[str, str] | None) -> None:
    body = chat_body(pb.ChatRequest(model="m", response_format=pb.ResponseFormat(type=kind)), stream=False)  # type: ignore[arg-type]
    assert body.get("response_format") == expected


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (pb.ChatMessage(content="x"), "messages[0].role"),
        (pb.ChatMessage(role=42, content="x"), "messages[0].role"),  # type: ignore[arg-type]
        (
            pb.ChatMessage(role=pb.ROLE_USER, content="x", content_parts=[pb.ContentPart(text="y")]),
            "messages[0].content_parts",
        ),
        (pb.ChatMessage(role=pb.ROLE_USER, content_parts=[pb.ContentPart()]), "messages[0].content_parts[0]"),
        (
            pb.ChatMessage(
                role=pb.ROLE_USER, content_parts=[pb.ContentPart(image_data=pb.ImageData(data=PNG))]
            ),
            "messages[0].content_parts[0].image_data.media_type",
        ),
        (
            pb.ChatMessage(
                role=pb.ROLE_USER,
                content_parts=[pb.ContentPart(image_data=pb.ImageData(media_type="image/png"))],
            ),
            "messages[0].content_parts[0].image_data.data",
        ),
    ],
)
def test_malformed_messages_are_refused_naming_the_field(message: pb.ChatMessage, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        chat_body(pb.ChatRequest(model="m", messages=[message]), stream=False)
    assert caught.value.status == 400 and caught.value.param == param and param in caught.value.message


def test_json_text_fields_must_parse() -> None:
    bad_tool = pb.ChatRequest(
        model="m", tools=[pb.Tool(function=pb.FunctionDefinition(name="f", parameters_json="{"))]
    )
    with pytest.raises(ApiError, match="not valid JSON") as caught:
        chat_body(bad_tool, stream=False)
    assert caught.value.param == "tools[0].function.parameters_json"
    bad_schema = pb.ChatRequest(
        model="m",
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=pb.JsonSchema(name="s", schema_json="[")
        ),
    )
    with pytest.raises(ApiError) as caught:
        chat_body(bad_schema, stream=False)
    assert caught.value.param == "response_format.json_schema.schema_json"


def test_validation_is_shared_with_the_http_front() -> None:
    with pytest.raises(ApiError, match="model is required"):
        parse_chat(
            chat_body(pb.ChatRequest(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")]), stream=False)
        )
    with pytest.raises(ApiError, match="at least one message"):
        parse_chat(chat_body(pb.ChatRequest(model="m"), stream=False))
    with pytest.raises(ApiError, match="n must be 1"):
        parse_chat(
            chat_body(
                pb.ChatRequest(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")], n=2),
                stream=False,
            )
        )


def test_hints_request_fields_win_over_metadata() -> None:
    metadata = {
        "x-llmroute-task": "code",
        "x-llmroute-tier": "free",
        "x-llmroute-tenant": "t-meta",
        "x-llmroute-no-cache": "true",
        "x-request-id": "r1",
    }
    hints = hints_for(pb.RoutingHints(tier="premium", tenant="acme"), metadata, "body-user")
    assert (hints.task, hints.tier, hints.tenant, hints.user, hints.no_cache, hints.request_id) == (
        "code",
        "premium",
        "acme",
        "body-user",
        True,
        "r1",
    )
    assert (
        hints_for(pb.RoutingHints(user="hint-user"), {"x-llmroute-user": "meta-user"}, "body-user").user
        == "hint-user"
    )
    assert hints_for(pb.RoutingHints(), {"x-llmroute-user": "meta-user"}, "body-user").user == "meta-user"
    plain = hints_for(pb.RoutingHints(), {}, "")
    assert (plain.user, plain.no_cache) == ("", False) and plain.request_id


def test_embed_request_to_openai_body() -> None:
    body = embed_body(pb.EmbedRequest(model="embed", input=["a", "b"], dimensions=256, user="u"))
    assert body == {"model": "embed", "input": ["a", "b"], "dimensions": 256, "user": "u"}
    assert parse_embeddings(body) is body
    assert embed_body(pb.EmbedRequest(model="embed", input=["a"])) == {"model": "embed", "input": ["a"]}
    with pytest.raises(ApiError) as caught:
        parse_embeddings(embed_body(pb.EmbedRequest(model="embed")))
    assert caught.value.param == "input"


META = RouteMeta(backend="gpt4o-us", region="us-east-1", attempts=3, cost_usd=0.00042, cache="off")


def test_chat_completion_to_response() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            },
            {"index": 1, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"},
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    response = chat_response(completion, META)
    assert (response.id, response.created, response.model, response.system_fingerprint) == (
        "chatcmpl-1",
        1_700_000_000,
        "gpt-4o-2024-08-06",
        "fp_1",
    )
    first, second = response.choices
    assert first.message.role == pb.ROLE_ASSISTANT and not first.message.HasField("content")
    assert first.message.tool_calls[0] == pb.ToolCall(
        id="call_1", function=pb.FunctionCall(name="look", arguments="{}")
    )
    assert first.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert (second.index, second.message.content, second.finish_reason) == (1, "hi", pb.FINISH_REASON_LENGTH)
    assert response.usage == pb.TokenUsage(
        prompt_tokens=10, completion_tokens=5, total_tokens=15, cached_tokens=4
    )
    assert response.route == pb.RouteInfo(
        backend="gpt4o-us",
        region="us-east-1",
        attempts=3,
        cost_usd=0.00042,
        cache=config_pb2.CACHE_STATUS_BYPASS,
    )


def test_sparse_or_odd_answers_do_not_break_the_conversion() -> None:
    response = chat_response(
        {
            "choices": [
                {
                    "message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                    "finish_reason": "weird",
                }
            ],
            "usage": None,
        },
        META,
    )
    assert response.choices[0].message.content == "ab"
    assert response.choices[0].finish_reason == pb.FINISH_REASON_UNSPECIFIED
    assert not response.HasField("usage")
    assert chat_response({}, META).choices == []
    assert token_usage({"prompt_tokens": 3, "completion_tokens": 2}) == pb.TokenUsage(
        prompt_tokens=3, completion_tokens=2, total_tokens=5
    )
    assert token_usage({"prompt_tokens": -1, "completion_tokens": True}) == pb.TokenUsage()


@pytest.mark.parametrize(
    ("cache", "status"),
    [
        ("off", config_pb2.CACHE_STATUS_BYPASS),
        ("bypass", config_pb2.CACHE_STATUS_BYPASS),
        ("miss", config_pb2.CACHE_STATUS_MISS),
        ("hit", config_pb2.CACHE_STATUS_HIT),
        ("semantic-hit", config_pb2.CACHE_STATUS_SEMANTIC_HIT),
        ("?", config_pb2.CACHE_STATUS_UNSPECIFIED),
    ],
)
def test_route_info_cache_status(cache: str, status: int) -> None:
    info = route_info(RouteMeta("b", "r", 1, None, cache=cache))
    assert info.cache == status and info.cost_usd == 0.0


def test_stream_chunks_to_chat_chunks() -> None:
    base = {"id": "c-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-4o"}
    first = chat_chunk(
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    )
    assert (first.id, first.created, first.model) == ("c-1", 7, "gpt-4o")
    assert first.choices[0].delta.role == pb.ROLE_ASSISTANT and first.choices[0].delta.HasField("content")
    assert not first.HasField("route") and not first.HasField("usage")
    text = chat_chunk({**base, "choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    assert text.choices[0].delta.content == "Hel" and text.choices[0].delta.role == pb.ROLE_UNSPECIFIED
    call = chat_chunk(
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "look", "arguments": ""},
                            },
                            {"index": 1, "function": {"arguments": '{"q"'}},
                        ],
                    },
                }
            ],
        }
    )
    delta = call.choices[0].delta
    assert not delta.HasField("content")
    assert delta.tool_calls[0] == pb.ToolCallDelta(
        index=0, id="call_1", function=pb.FunctionCall(name="look")
    )
    assert delta.tool_calls[1] == pb.ToolCallDelta(index=1, function=pb.FunctionCall(arguments='{"q"'))
    end = chat_chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert end.choices[0].finish_reason == pb.FINISH_REASON_STOP and end.choices[0].HasField("delta")
    usage = chat_chunk(
        {**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    )
    assert usage.choices == [] and usage.usage.total_tokens == 3


def test_embeddings_answer_to_response() -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, -1.0)).decode()
    answer = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [
            {"object": "embedding", "index": 1, "embedding": packed},
            {"object": "embedding", "index": 0, "embedding": [0.25, 1, -2.5]},
        ],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    response = embed_response(answer, META)
    assert response.model == "text-embedding-3-small"
    assert [e.index for e in response.data] == [0, 1], "in input order"
    assert list(response.data[0].embedding) == [0.25, 1.0, -2.5]
    assert list(response.data[1].embedding) == [0.5, -1.0], "base64 vectors are decoded"
    assert response.usage == pb.TokenUsage(prompt_tokens=4, total_tokens=4)
    assert response.route.backend == "gpt4o-us"


def test_models_listing() -> None:
    assert list_models_response(None) == pb.ListModelsResponse()
    route = SimpleNamespace(namespace="team-a", name="chat-route")
    snapshot = SimpleNamespace(
        models={"chat": SimpleNamespace(route=route), "a-embed": SimpleNamespace(route=route)}
    )
    listed = list_models_response(snapshot)  # type: ignore[arg-type]
    assert [(m.id, m.owned_by, m.route) for m in listed.models] == [
        ("a-embed", "team-a", "chat-route"),
        ("chat", "team-a", "chat-route"),
    ]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.NOT_FOUND),
        (413, grpc.StatusCode.INVALID_ARGUMENT),
        (418, grpc.StatusCode.INVALID_ARGUMENT),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.INTERNAL),
        (502, grpc.StatusCode.UNAVAILABLE),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (599, grpc.StatusCode.INTERNAL),
    ],
)
def test_status_codes(status: int, code: grpc.StatusCode) -> None:
    assert status_code_for(ApiError(status, "x")) == code

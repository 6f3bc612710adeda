"""Fake Anthropic Messages API (``--protocol anthropic``).

Neighbours: ``replies`` decides the answer; ``sse`` and ``streaming`` send it. Endpoints:
``POST /v1/messages`` (JSON, or SSE with ``stream: true``), ``POST /v1/messages/count_tokens``,
``GET /v1/models``, and the Message Batches API (``anthropic_batches``). Requests need ``x-api-key`` (or ``Authorization: Bearer``) and
``anthropic-version``; ``max_tokens`` is required, as on the real API.

A stream is ``message_start``, then per content block ``content_block_start``, deltas
(``text_delta`` or ``input_json_delta``) and ``content_block_stop`` (a ``ping`` after the first
start, as the API sends one), then ``message_delta`` with the stop reason and usage, and
``message_stop``. A tool call comes as a short text block followed by a ``tool_use`` block, the way
Claude usually answers. Errors are ``{"type": "error", "error": {"type", "message"}}``; in a stream,
the same object as an ``error`` event (by default ``overloaded_error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .anthropic_batches import MessageBatchesApi
from .conversation import Conversation, Reply, ToolDef, ToolMode, Turn
from .protocol import (
    EXCHANGE,
    ApiError,
    Exchange,
    ProviderProtocol,
    default_message,
    json_response,
    retry_after_header,
)
from .replies import json_pieces, plan_reply, prompt_tokens, text_pieces
from .sse import SSE_CONTENT_TYPE, sse_frame
from .streaming import send_stream

__all__ = ["AnthropicProtocol"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MESSAGES = {429: "Number of request tokens has exceeded your per-minute rate limit.", 529: "Overloaded"}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_DEFAULT_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")


class AnthropicProtocol(ProviderProtocol):
    name = "anthropic"
    stream_error_status = 529

    def routes(self) -> list[web.RouteDef]:
        batches = MessageBatchesApi(answer=self.batch_answer, error_body=self.error_body, check=_check_params)
        return [
            web.post("/v1/messages", self.messages),
            web.post("/v1/messages/count_tokens", self.count_tokens),
            web.get("/v1/models", self.list_models),
            *batches.routes(),
        ]

    def batch_answer(self, exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
        """One request of a Message Batch, answered as ``POST /v1/messages`` would (no stream)."""
        reply = plan_reply(
            parse_messages(params),
            protocol=self.name,
            tool_knob=None,
            new_id=exchange.state.id_factory("toolu_"),
        )
        return _message(reply, id=exchange.state.new_id("msg_"), model=str(params["model"]))

    def authenticate(self, request: web.Request) -> None:
        configured = request[EXCHANGE].state.config.api_key
        key = request.headers.get("x-api-key", "").strip()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not key and scheme.lower() == "bearer":
            key = token.strip()
        if not key:
            raise ApiError(401, "x-api-key header is required")
        if configured is not None and key != configured:
            raise ApiError(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise ApiError(400, "anthropic-version: header is required")

    def error_body(self, error: ApiError, request_id: str | None = None) -> dict[str, Any]:
        kind = error.code or _ERROR_TYPES.get(error.status, "api_error")
        message = error.message or _MESSAGES.get(error.status) or default_message(error.status)
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        if request_id is not None:
            body["request_id"] = request_id
        return body

    def error_response(self, error: ApiError) -> web.Response:
        return json_response(self.error_body(error), status=error.status, headers=retry_after_header(error))

    async def messages(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        _check_params(body)
        model = body["model"]
        reply = plan_reply(
            parse_messages(body),
            protocol=self.name,
            tool_knob=exchange.faults.tool_call,
            new_id=exchange.state.id_factory("toolu_"),
        )
        message_id = exchange.state.new_id("msg_")
        request_id = exchange.state.new_id("req_")
        headers = {"request-id": request_id}
        if not body.get("stream"):
            return json_response(_message(reply, id=message_id, model=model), headers=headers)

        def error_frame(status: int | None) -> bytes:
            error = ApiError(status or self.stream_error_status)
            return sse_frame(self.error_body(error, request_id), event="error")

        frames = [sse_frame(event, event=event["type"]) for event in _stream_events(reply, message_id, model)]
        return await send_stream(
            request, frames, content_type=SSE_CONTENT_TYPE, error_frame=error_frame, headers=headers
        )

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = request[EXCHANGE].json_object()
        return json_response({"input_tokens": prompt_tokens(parse_messages(body))})

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        models = request[EXCHANGE].state.config.models or _DEFAULT_MODELS
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models
        ]
        return json_response({"data": data, "has_more": False, "first_id": models[0], "last_id": models[-1]})


def _check_params(body: Mapping[str, Any]) -> None:
    """What a Messages request needs before anything else is looked at."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: Field required")
    if not isinstance(body.get("max_tokens"), int):
        raise ApiError(400, "max_tokens: Field required")


def parse_messages(body: Mapping[str, Any]) -> Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: at least one message is required")
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise ApiError(400, "messages: each message needs a role of 'user' or 'assistant'")
        content = message.get("content")
        blocks: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        results = [b for b in blocks if isinstance(b, Mapping) and b.get("type") == "tool_result"]
        if results:
            turns.append(Turn("tool", "".join(_block_text(b.get("content")) for b in results)))
        else:
            turns.append(Turn(message["role"], _block_text(blocks)))

    tools = tuple(
        ToolDef(
            name=str(t.get("name", "")),
            description=str(t.get("description") or ""),
            parameters=t["input_schema"],
        )
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and isinstance(t.get("input_schema"), Mapping)
    )
    mode: ToolMode = "auto"
    forced: str | None = None
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        if choice.get("type") == "any":
            mode = "required"
        elif choice.get("type") == "none":
            mode = "none"
        elif choice.get("type") == "tool":
            forced = str(choice.get("name"))

    schema: Mapping[str, Any] | None = None
    output_config = body.get("output_config")
    output_format = output_config.get("format") if isinstance(output_config, Mapping) else None
    if isinstance(output_format, Mapping) and output_format.get("type") == "json_schema":
        schema = output_format.get("schema") or {}

    system = body.get("system")
    max_tokens = body.get("max_tokens")
    return Conversation(
        turns=tuple(turns),
        system=_block_text(system),
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        json_schema=schema,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def _block_text(content: Any) -> str:
    """The text of a string or of a list of blocks (nested ``tool_result`` content included)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block["text"]
            for block in content
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        )
    return ""


def _usage(reply: Reply, *, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    if not reply.tool_calls:
        return [{"type": "text", "text": reply.text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": reply.preamble}]
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}
        for call in reply.tool_calls
    )
    return blocks


def _message(reply: Reply, *, id: str, model: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(reply),
        "stop_reason": _STOP_REASONS[reply.finish],
        "stop_sequence": None,
        "usage": _usage(reply, output_tokens=reply.completion_tokens),
    }


def _stream_events(reply: Reply, message_id: str, model: str) -> list[dict[str, Any]]:
    start = {**_message(reply, id=message_id, model=model), "content": [], "stop_reason": None}
    start["usage"] = _usage(reply, output_tokens=1)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(_blocks(reply)):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            deltas = [{"type": "text_delta", "text": piece} for piece in text_pieces(block["text"])]
        else:
            head = {**block, "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": head})
            arguments = next(c.arguments_json for c in reply.tool_calls if c.id == block["id"])
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in json_pieces(arguments)]
        if index == 0:
            events.append({"type": "ping"})
        events.extend({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas)
        events.append({"type": "content_block_stop", "index": index})
    usage = _usage(reply, output_tokens=reply.completion_tokens)
    del usage["cache_creation"], usage["service_tier"]
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASONS[reply.finish], "stop_sequence": None},
            "usage": usage,
        }
    )
    events.append({"type": "message_stop"})
    return events

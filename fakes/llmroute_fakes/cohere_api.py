"""Fake Cohere API v2 (``--protocol cohere``).

Neighbours: ``replies`` decides the answer; ``sse``/``streaming`` send it; ``embeddings`` makes the
vectors. Endpoints: ``POST /v2/chat`` (JSON, or SSE with ``stream: true``) and ``POST /v2/embed``.
Auth is ``Authorization: Bearer``.

A stream is ``message-start``; for text ``content-start``, ``content-delta``s and ``content-end``;
for a tool call ``tool-plan-delta``s, then ``tool-call-start``, ``tool-call-delta``s and
``tool-call-end``; finally ``message-end`` with the finish reason and usage. Each is an SSE event
whose ``event:`` name equals the ``type`` in its data. Errors are ``{"message": ...}``. Cohere has no
separate error event: a failure mid-stream ends the stream with a ``message-end`` whose finish
reason is ``ERROR`` and whose delta carries ``error``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from .conversation import Conversation, Reply, ToolDef, ToolMode, Turn
from .embeddings import MAX_DIMENSIONS, embed, to_base64_f32, to_binary, to_int8, to_uint8
from .protocol import EXCHANGE, ApiError, ProviderProtocol, default_message, json_response, retry_after_header
from .replies import estimate_tokens, json_pieces, plan_reply, text_pieces
from .sse import SSE_CONTENT_TYPE, sse_frame
from .streaming import send_stream

__all__ = ["CohereProtocol"]

_MESSAGES = {
    401: "invalid api token",
    429: "You are past the per minute request limit, please wait and try again later.",
    500: "internal server error, this has been reported to our developers.",
    503: "service unavailable, please try again later.",
}
_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}
_EMBEDDING_DIMENSIONS = {
    "embed-v4.0": 1536,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
}


class CohereProtocol(ProviderProtocol):
    name = "cohere"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v2/chat", self.chat), web.post("/v2/embed", self.embed)]

    def authenticate(self, request: web.Request) -> None:
        configured = request[EXCHANGE].state.config.api_key
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "no api key supplied")
        if configured is not None and token.strip() != configured:
            raise ApiError(401, "invalid api token")

    def error_response(self, error: ApiError) -> web.Response:
        message = error.message or _MESSAGES.get(error.status) or default_message(error.status)
        return json_response({"message": message}, status=error.status, headers=retry_after_header(error))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        if not isinstance(body.get("model"), str):
            raise ApiError(400, "invalid request: model must be specified.")
        conversation = parse_chat(body)
        reply = plan_reply(
            conversation,
            protocol=self.name,
            tool_knob=exchange.faults.tool_call,
            new_id=exchange.state.id_factory("call_"),
        )
        response_id = str(uuid.UUID(int=exchange.state.new_number()))
        if not body.get("stream"):
            return json_response(
                {
                    "id": response_id,
                    "finish_reason": _FINISH[reply.finish],
                    "message": _message(reply),
                    "usage": _usage(reply),
                }
            )

        def error_frame(status: int | None) -> bytes:
            message = _MESSAGES.get(status or self.stream_error_status) or default_message(status or 500)
            end = {
                "type": "message-end",
                "delta": {"error": message, "finish_reason": "ERROR", "usage": _usage(reply)},
            }
            return sse_frame(end, event="message-end")

        frames = [sse_frame(event, event=event["type"]) for event in _stream_events(reply, response_id)]
        return await send_stream(request, frames, content_type=SSE_CONTENT_TYPE, error_frame=error_frame)

    async def embed(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        texts = body.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "invalid request: texts must be a list of strings.")
        model = str(body.get("model") or "")
        dimensions = body.get("output_dimension")
        if not isinstance(dimensions, int) or dimensions <= 0:
            dimensions = _EMBEDDING_DIMENSIONS.get(model, 1024)
        if dimensions > MAX_DIMENSIONS:
            raise ApiError(400, f"invalid request: output_dimension must be at most {MAX_DIMENSIONS}.")
        vectors = [embed(text, dimensions) for text in texts]
        kinds = body.get("embedding_types") or ["float"]
        encoders: dict[str, Callable[[list[float]], Any]] = {
            "float": lambda v: v,
            "int8": to_int8,
            "uint8": to_uint8,
            "binary": lambda v: to_binary(v, signed=True),
            "ubinary": lambda v: to_binary(v, signed=False),
            "base64": to_base64_f32,
        }
        unknown = [k for k in kinds if k not in encoders]
        if unknown:
            raise ApiError(400, f"invalid request: embedding_types {unknown} are not supported.")
        tokens = sum(estimate_tokens(t) for t in texts)
        return json_response(
            {
                "id": str(uuid.uuid4()),
                "embeddings": {kind: [encoders[kind](v) for v in vectors] for kind in kinds},
                "texts": texts,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
                "response_type": "embeddings_by_type",
            }
        )


def parse_chat(body: Mapping[str, Any]) -> Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalid request: messages must contain at least one message.")
    system: list[str] = []
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ApiError(400, "invalid request: each message must be an object.")
        role, text = message.get("role"), _content_text(message.get("content"))
        if role == "system":
            system.append(text)
        elif role in ("user", "assistant", "tool"):
            turns.append(Turn(role, text))
        else:
            raise ApiError(400, f"invalid request: unknown role {role!r}.")

    tools = tuple(
        ToolDef(
            name=str(fn.get("name", "")),
            description=str(fn.get("description") or ""),
            parameters=fn.get("parameters") if isinstance(fn.get("parameters"), Mapping) else None,
        )
        for tool in body.get("tools") or []
        if isinstance(tool, Mapping) and isinstance(fn := tool.get("function"), Mapping)
    )
    choice = body.get("tool_choice")
    mode: ToolMode = "required" if choice == "REQUIRED" else "none" if choice == "NONE" else "auto"
    response_format = body.get("response_format")
    schema: Mapping[str, Any] | None = None
    json_mode = False
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_object":
        candidate = response_format.get("json_schema")
        schema = candidate if isinstance(candidate, Mapping) else None
        json_mode = schema is None
    max_tokens = body.get("max_tokens")
    return Conversation(
        turns=tuple(turns),
        system="\n".join(system),
        tools=tools,
        tool_mode=mode,
        json_schema=schema,
        json_mode=json_mode,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif isinstance(item.get("document"), Mapping):
            data = item["document"].get("data")
            parts.append(data if isinstance(data, str) else orjson.dumps(data).decode())
    return "".join(parts)


def _usage(reply: Reply) -> dict[str, Any]:
    counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
    return {"billed_units": dict(counts), "tokens": dict(counts)}


def _tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _message(reply: Reply) -> dict[str, Any]:
    if reply.tool_calls:
        return {
            "role": "assistant",
            "tool_plan": reply.preamble,
            "tool_calls": [_tool_call(c.id, c.name, c.arguments_json) for c in reply.tool_calls],
        }
    return {"role": "assistant", "content": [{"type": "text", "text": reply.text}]}


def _stream_events(reply: Reply, response_id: str) -> list[dict[str, Any]]:
    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    events: list[dict[str, Any]] = [{"id": response_id, "type": "message-start", "delta": {"message": start}}]
    if reply.tool_calls:
        events.extend(
            {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}
            for piece in text_pieces(reply.preamble)
        )
        for index, call in enumerate(reply.tool_calls):
            head = _tool_call(call.id, call.name, "")
            events.append(
                {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": head}}}
            )
            events.extend(
                {
                    "type": "tool-call-delta",
                    "index": index,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}},
                }
                for piece in json_pieces(call.arguments_json)
            )
            events.append({"type": "tool-call-end", "index": index})
    else:
        events.append(
            {
                "type": "content-start",
                "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}},
            }
        )
        events.extend(
            {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}}
            for piece in text_pieces(reply.text)
        )
        events.append({"type": "content-end", "index": 0})
    events.append(
        {"type": "message-end", "delta": {"finish_reason": _FINISH[reply.finish], "usage": _usage(reply)}}
    )
    return events

"""Fake Amazon Bedrock Runtime Converse API (``--protocol bedrock``).

Neighbours: ``llmroute_sidecar.aws.eventstream`` frames the stream (the same encoder the sidecar's
decoder is tested against); ``sigv4`` checks signatures; ``replies`` decides the answer. Endpoints: ``POST /model/{modelId}/converse`` and ``POST /model/{modelId}/converse-stream``
(``modelId`` may be a percent-encoded ARN or inference-profile id).

Auth: ``Authorization: AWS4-HMAC-SHA256 ...`` for service ``bedrock`` (verified when the fake knows
the secrets), or ``Authorization: Bearer`` (Bedrock API keys). A stream is
``application/vnd.amazon.eventstream``: ``messageStart``, per block ``contentBlockStart`` (tool use
only, as Bedrock sends it), ``contentBlockDelta``s and ``contentBlockStop``, then ``messageStop`` and
``metadata`` with usage and metrics. Payloads carry Bedrock's ``p`` padding field, which clients must
ignore. Errors set ``x-amzn-ErrorType`` and a ``{"message"}`` body; in a stream, an
``:message-type: exception`` message such as ``modelStreamErrorException``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from llmroute_sidecar.aws.eventstream import EVENTSTREAM_CONTENT_TYPE, event_message, exception_message

from .conversation import Conversation, Reply, Role, ToolDef, ToolMode, Turn
from .protocol import EXCHANGE, ApiError, ProviderProtocol, default_message, json_response, retry_after_header
from .replies import json_pieces, plan_reply, text_pieces
from .sigv4 import check_sigv4
from .streaming import send_stream

__all__ = ["BedrockProtocol"]

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# The ConverseStream union members an in-stream exception may be.
_STREAM_EXCEPTIONS = {
    400: "validationException",
    424: "modelStreamErrorException",
    429: "throttlingException",
    500: "internalServerException",
    503: "serviceUnavailableException",
}
_MESSAGES = {
    424: "The model returned an error while streaming.",
    429: "Too many requests, please wait before trying again.",
    500: "The server encountered an internal error while processing the request.",
    503: "Bedrock is unable to process your request.",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class BedrockProtocol(ProviderProtocol):
    name = "bedrock"
    stream_error_status = 424

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/model/{model_id}/converse", self.converse),
            web.post("/model/{model_id}/converse-stream", self.converse),
        ]

    def authenticate(self, request: web.Request) -> None:
        config = request[EXCHANGE].state.config
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            if not token.strip() or (config.api_key is not None and token.strip() != config.api_key):
                raise ApiError(
                    403,
                    "Authentication failed: Please make sure your API Key is valid.",
                    code="AccessDeniedException",
                )
            return
        headers = {name.lower(): ",".join(request.headers.getall(name)) for name in request.headers}
        failure = check_sigv4(
            method=request.method,
            raw_path=request.raw_path,
            headers=headers,
            body=request[EXCHANGE].record.body,
            service="bedrock",
            secrets=config.aws_credentials,
        )
        if failure is not None:
            raise ApiError(403, failure.message, code=failure.code)

    def error_response(self, error: ApiError) -> web.Response:
        kind = error.code or _ERROR_TYPES.get(error.status, "InternalServerException")
        message = error.message or _MESSAGES.get(error.status) or default_message(error.status)
        headers = {
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
            **retry_after_header(error),
        }
        return json_response({"message": message}, status=error.status, headers=headers)

    def stream_error(self, status: int | None) -> bytes:
        status = status or self.stream_error_status
        kind = _STREAM_EXCEPTIONS.get(status, "internalServerException")
        payload: dict[str, Any] = {"message": _MESSAGES.get(status) or default_message(status)}
        if kind == "modelStreamErrorException":
            payload.update(originalStatusCode=500, originalMessage="Model stream interrupted.")
        return exception_message(kind, payload)

    async def converse(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        reply = plan_reply(
            parse_converse(body),
            protocol=self.name,
            tool_knob=exchange.faults.tool_call,
            new_id=exchange.state.id_factory("tooluse_"),
        )
        latency_ms = max(1, int((time.time() - exchange.record.received_at) * 1000))
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if not request.path.endswith("/converse-stream"):
            return json_response(_converse_response(reply, latency_ms), headers=headers)
        frames = [
            event_message(kind, _padded(payload)) for kind, payload in _stream_events(reply, latency_ms)
        ]
        return await send_stream(
            request,
            frames,
            content_type=EVENTSTREAM_CONTENT_TYPE,
            error_frame=self.stream_error,
            headers=headers,
        )


def parse_converse(body: Mapping[str, Any]) -> Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        )
    turns: list[Turn] = []
    for message in messages:
        blocks = message.get("content") if isinstance(message, Mapping) else None
        blocks = [b for b in blocks or [] if isinstance(b, Mapping)]
        results = [b["toolResult"] for b in blocks if isinstance(b.get("toolResult"), Mapping)]
        if results:
            turns.append(Turn("tool", "".join(_result_text(r) for r in results)))
        else:
            role: Role = "assistant" if message.get("role") == "assistant" else "user"
            turns.append(Turn(role, "".join(b["text"] for b in blocks if isinstance(b.get("text"), str))))

    tool_config = body.get("toolConfig")
    tool_config = tool_config if isinstance(tool_config, Mapping) else {}
    tools: list[ToolDef] = []
    for tool in tool_config.get("tools") or []:
        spec = tool.get("toolSpec") if isinstance(tool, Mapping) else None
        if isinstance(spec, Mapping):
            schema = spec.get("inputSchema")
            schema = schema.get("json") if isinstance(schema, Mapping) else None
            tools.append(
                ToolDef(
                    name=str(spec.get("name", "")),
                    description=str(spec.get("description") or ""),
                    parameters=schema if isinstance(schema, Mapping) else None,
                )
            )
    mode: ToolMode = "auto"
    forced: str | None = None
    choice = tool_config.get("toolChoice")
    if isinstance(choice, Mapping):
        if "any" in choice:
            mode = "required"
        elif isinstance(choice.get("tool"), Mapping):
            forced = str(choice["tool"].get("name"))

    inference = body.get("inferenceConfig")
    max_tokens = inference.get("maxTokens") if isinstance(inference, Mapping) else None
    system = body.get("system")
    return Conversation(
        turns=tuple(turns),
        system="".join(
            b["text"] for b in system or [] if isinstance(b, Mapping) and isinstance(b.get("text"), str)
        ),
        tools=tuple(tools),
        tool_mode=mode,
        forced_tool=forced,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def _result_text(result: Mapping[str, Any]) -> str:
    parts = []
    for item in result.get("content") or []:
        if isinstance(item, Mapping):
            if isinstance(item.get("text"), str):
                parts.append(item["text"])
            elif "json" in item:
                parts.append(orjson.dumps(item["json"]).decode())
    return "".join(parts)


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "inputTokens": reply.prompt_tokens,
        "outputTokens": reply.completion_tokens,
        "totalTokens": reply.total_tokens,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 0,
    }


def _content(reply: Reply) -> list[dict[str, Any]]:
    if not reply.tool_calls:
        return [{"text": reply.text}]
    return [
        {"text": reply.preamble},
        *(
            {"toolUse": {"toolUseId": c.id, "name": c.name, "input": dict(c.arguments)}}
            for c in reply.tool_calls
        ),
    ]


def _converse_response(reply: Reply, latency_ms: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": _content(reply)}},
        "stopReason": _STOP_REASONS[reply.finish],
        "usage": _usage(reply),
        "metrics": {"latencyMs": latency_ms},
    }


def _stream_events(reply: Reply, latency_ms: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(_content(reply)):
        if "text" in block:
            deltas: list[dict[str, Any]] = [{"text": piece} for piece in text_pieces(block["text"])]
        else:
            tool_use = block["toolUse"]
            start = {"toolUse": {"toolUseId": tool_use["toolUseId"], "name": tool_use["name"]}}
            events.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            arguments = orjson.dumps(tool_use["input"]).decode()
            deltas = [{"toolUse": {"input": piece}} for piece in json_pieces(arguments)]
        events.extend(("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}) for delta in deltas)
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": _STOP_REASONS[reply.finish]}))
    events.append(("metadata", {"usage": _usage(reply), "metrics": {"latencyMs": latency_ms}}))
    return events


def _padded(payload: dict[str, Any]) -> dict[str, Any]:
    # Bedrock pads event payloads with a "p" field of varying length, so frame sizes leak less.
    size = len(orjson.dumps(payload))
    return {**payload, "p": _PADDING[: 8 + size % 40]}

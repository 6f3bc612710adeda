"""Fake Gemini API (``--protocol google``), the Generative Language API that google-genai calls.

Neighbours: ``replies`` decides the answer; ``sse``/``streaming`` send it; ``embeddings`` makes
vectors. Endpoints, under ``/v1beta`` (also ``/v1`` and ``/v1alpha``):
``POST models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``, ``:countTokens``,
``:embedContent``, ``:batchEmbedContents``; ``GET models`` and ``models/{model}``.

Auth is the ``x-goog-api-key`` header or the ``key`` query parameter. A stream is a series of
``GenerateContentResponse`` objects as ``data:`` events (CRLF line ends, as Google sends them) with no
terminal event: the last chunk carries ``finishReason`` and the full ``usageMetadata``. Function calls
arrive whole in one part. Errors are ``{"error": {"code", "message", "status"}}`` (a 429 also carries
a ``RetryInfo`` detail when ``retry_after`` is set); in a stream, that object as a ``data:`` event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from .conversation import Conversation, Reply, Role, ToolDef, ToolMode, Turn
from .embeddings import MAX_DIMENSIONS, embed
from .protocol import (
    EXCHANGE,
    ApiError,
    ProviderProtocol,
    default_message,
    json_response,
    retry_after_header,
)
from .replies import estimate_tokens, plan_reply, prompt_tokens, text_pieces
from .sse import sse_frame
from .streaming import send_stream

__all__ = ["GeminiProtocol"]

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
_DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001")
_EMBEDDING_DIMENSIONS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}
_SSE_CONTENT_TYPE = "text/event-stream"
_CRLF = "\r\n"


class GeminiProtocol(ProviderProtocol):
    name = "google"

    def routes(self) -> list[web.RouteDef]:
        prefix = "/{version:v1|v1beta|v1alpha}/models"
        return [
            web.post(prefix + "/{model}:{method}", self.model_method),
            web.get(prefix, self.list_models),
            web.get(prefix + "/{model}", self.get_model),
        ]

    def authenticate(self, request: web.Request) -> None:
        configured = request[EXCHANGE].state.config.api_key
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not key.strip():
            raise ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if configured is not None and key.strip() != configured:
            raise ApiError(400, "API key not valid. Please pass a valid API key.", code="API_KEY_INVALID")

    def error_object(self, error: ApiError) -> dict[str, Any]:
        status = _STATUSES.get(error.status, "UNKNOWN")
        message = error.message or _MESSAGES.get(error.status) or default_message(error.status)
        body: dict[str, Any] = {"code": error.status, "message": message, "status": status}
        details: list[dict[str, Any]] = []
        if error.code is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": error.code,
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            )
        if error.retry_after is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{error.retry_after:g}s"}
            )
        if details:
            body["details"] = details
        return body

    def error_response(self, error: ApiError) -> web.Response:
        return json_response(
            {"error": self.error_object(error)}, status=error.status, headers=retry_after_header(error)
        )

    async def model_method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        handler = {
            "generateContent": self.generate,
            "streamGenerateContent": self.generate,
            "countTokens": self.count_tokens,
            "embedContent": self.embed_content,
            "batchEmbedContents": self.batch_embed_contents,
        }.get(method)
        if handler is None:
            raise ApiError(404, f"Method not found: {method}.")
        return await handler(request)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        model = request.match_info["model"]
        reply = plan_reply(
            parse_request(body),
            protocol=self.name,
            tool_knob=exchange.faults.tool_call,
            new_id=exchange.state.id_factory("call_"),
        )
        response_id = exchange.state.new_id("")
        if request.match_info["method"] == "generateContent":
            return json_response(_response(reply, _parts(reply), model, response_id))
        if request.query.get("alt") != "sse":
            # Without alt=sse Google streams one JSON array; nothing here needs that form.
            raise ApiError(400, "The fake serves streamGenerateContent with alt=sse only.")

        def error_frame(status: int | None) -> bytes:
            error = ApiError(status or self.stream_error_status)
            return sse_frame({"error": self.error_object(error)}, newline=_CRLF)

        frames = [sse_frame(chunk, newline=_CRLF) for chunk in _chunks(reply, model, response_id)]
        return await send_stream(request, frames, content_type=_SSE_CONTENT_TYPE, error_frame=error_frame)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = request[EXCHANGE].json_object()
        inner = _field(body, "generateContentRequest")
        tokens = prompt_tokens(
            parse_request(inner if isinstance(inner, Mapping) else body, require_contents=False)
        )
        return json_response(
            {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
        )

    async def embed_content(self, request: web.Request) -> web.StreamResponse:
        body = request[EXCHANGE].json_object()
        return json_response({"embedding": _embedding(body, request.match_info["model"])})

    async def batch_embed_contents(self, request: web.Request) -> web.StreamResponse:
        body = request[EXCHANGE].json_object()
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "* BatchEmbedContentsRequest.requests: at least one request is required.")
        model = request.match_info["model"]
        return json_response(
            {"embeddings": [_embedding(r, model) for r in requests if isinstance(r, Mapping)]}
        )

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        models = request[EXCHANGE].state.config.models or _DEFAULT_MODELS
        return json_response({"models": [_model_object(m) for m in models]})

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        return json_response(_model_object(request.match_info["model"]))


def parse_request(body: Mapping[str, Any], *, require_contents: bool = True) -> Conversation:
    contents = body.get("contents")
    if not isinstance(contents, list) or (require_contents and not contents):
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    turns: list[Turn] = []
    for content in contents:
        parts = content.get("parts") if isinstance(content, Mapping) else None
        parts = [p for p in parts or [] if isinstance(p, Mapping)]
        responses = [r for p in parts if isinstance(r := _field(p, "functionResponse"), Mapping)]
        if responses:
            turns.append(
                Turn("tool", "".join(orjson.dumps(r.get("response", {})).decode() for r in responses))
            )
        else:
            role: Role = "assistant" if content.get("role") == "model" else "user"
            turns.append(Turn(role, _parts_text(parts)))

    tools: list[ToolDef] = []
    for tool in body.get("tools") or []:
        for fn in (_field(tool, "functionDeclarations") or []) if isinstance(tool, Mapping) else []:
            if isinstance(fn, Mapping):
                schema = _field(fn, "parametersJsonSchema") or fn.get("parameters")
                tools.append(
                    ToolDef(
                        name=str(fn.get("name", "")),
                        description=str(fn.get("description") or ""),
                        parameters=schema if isinstance(schema, Mapping) else None,
                    )
                )
    mode: ToolMode = "auto"
    forced: str | None = None
    tool_config = _field(body, "toolConfig")
    calling = _field(tool_config, "functionCallingConfig") if isinstance(tool_config, Mapping) else None
    if isinstance(calling, Mapping):
        if calling.get("mode") == "NONE":
            mode = "none"
        elif calling.get("mode") == "ANY":
            mode = "required"
            allowed = _field(calling, "allowedFunctionNames")
            if isinstance(allowed, list) and allowed:
                forced = str(allowed[0])

    config = _field(body, "generationConfig")
    config = config if isinstance(config, Mapping) else {}
    schema = _field(config, "responseJsonSchema") or _field(config, "responseSchema")
    max_tokens = _field(config, "maxOutputTokens")
    system = _field(body, "systemInstruction")
    return Conversation(
        turns=tuple(turns),
        system=_parts_text(system.get("parts") if isinstance(system, Mapping) else None),
        tools=tuple(tools),
        tool_mode=mode,
        forced_tool=forced,
        json_schema=schema if isinstance(schema, Mapping) else None,
        json_mode=_field(config, "responseMimeType") == "application/json",
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def _field(mapping: Mapping[str, Any], name: str) -> Any:
    """A field by its JSON name, or by its proto name: Google's JSON parsers accept both spellings, and
    google-genai sends some nested fields (``parameters_json_schema``) in snake case."""
    if name in mapping:
        return mapping[name]
    return mapping.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name))


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str))


def _parts(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool_calls:
        return [{"functionCall": {"name": c.name, "args": dict(c.arguments)}} for c in reply.tool_calls]
    return [{"text": reply.text}]


def _response(
    reply: Reply, parts: list[dict[str, Any]], model: str, response_id: str, *, sent: int | None = None
) -> dict[str, Any]:
    """One ``GenerateContentResponse``; ``sent`` is the output tokens so far in a stream (``None``:
    the whole reply, which also carries the finish reason)."""
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if sent is None:
        candidate["finishReason"] = _FINISH[reply.finish]
    output = reply.completion_tokens if sent is None else sent
    # Google repeats usageMetadata in every chunk, counting cumulatively; the last chunk is the total.
    usage: dict[str, Any] = {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": output,
        "totalTokenCount": reply.prompt_tokens + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
    }
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


def _chunks(reply: Reply, model: str, response_id: str) -> list[dict[str, Any]]:
    if reply.tool_calls:
        return [_response(reply, _parts(reply), model, response_id)]
    pieces = list(text_pieces(reply.text)) or [""]
    chunks = []
    sent = ""
    for index, piece in enumerate(pieces):
        sent += piece
        last = index == len(pieces) - 1
        tokens = None if last else estimate_tokens(sent)
        chunks.append(_response(reply, [{"text": piece}], model, response_id, sent=tokens))
    return chunks


def _embedding(request: Mapping[str, Any], model: str) -> dict[str, Any]:
    content = request.get("content")
    text = _parts_text(content.get("parts")) if isinstance(content, Mapping) else ""
    dimensions = _field(request, "outputDimensionality")
    if not isinstance(dimensions, int) or dimensions <= 0:
        dimensions = _EMBEDDING_DIMENSIONS.get(model.removeprefix("models/"), 768)
    if dimensions > MAX_DIMENSIONS:
        raise ApiError(400, f"* EmbedContentRequest.output_dimensionality: at most {MAX_DIMENSIONS}.")
    return {"values": embed(text, dimensions)}


def _model_object(model: str) -> dict[str, Any]:
    embedding = "embedding" in model
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "inputTokenLimit": 2048 if embedding else 1_048_576,
        "outputTokenLimit": 1 if embedding else 65_536,
        "supportedGenerationMethods": ["embedContent", "batchEmbedContents"]
        if embedding
        else ["generateContent", "countTokens"],
    }

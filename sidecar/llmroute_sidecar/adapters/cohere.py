"""Cohere API v2 (``POST /v2/chat``, ``POST /v2/embed``): the OpenAI shapes to Cohere's and back.

Cohere's v2 chat is close to OpenAI's: the same roles, OpenAI-style tools and tool calls (arguments
as a JSON string), text and ``image_url`` parts. The differences handled here:

- an assistant message's text next to its tool calls goes into ``tool_plan``, where Cohere keeps the
  model's reasoning before a call; in answers, ``tool_plan`` (and ``tool-plan-delta`` events) stay
  with the provider, and ``content`` is null beside tool calls, as OpenAI's would be;
- ``tool_choice`` has no "this function" form, so a named choice sends only that tool and
  ``REQUIRED``; ``auto`` is the default and is left out;
- ``response_format`` maps onto Cohere's ``json_object`` (with ``json_schema`` for a schema); all
  tools ``strict`` maps onto ``strict_tools``;
- ``top_p`` is clamped to Cohere's 0.01..0.99 (as ``p``), the penalties to 0..1;
- usage: ``billed_units`` (what the account pays for) is preferred over ``tokens``;
- Cohere has no error event: a stream that fails ends with ``message-end`` whose finish reason is
  ``ERROR`` (or ``TIMEOUT``), which becomes a :class:`ProviderError`, never a clean end.

Embeddings: ``/v2/embed`` with ``input_type: search_document`` (the sidecar embeds documents to
compare them); ``encoding_format: base64`` asks for Cohere's ``base64`` type, the same little-endian
float32 encoding as OpenAI's.

Neighbours: ``base.py``, ``cohere_stream.py`` (the stream decoder, finish reasons, usage),
``openai_fields.py`` (reading the request), ``common.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .base import Target, UpstreamRequest
from .cohere_stream import FINISH_REASONS, CohereStreamDecoder, cohere_usage, failed_generation
from .common import completion, encode, loads, retry_after
from .errors import ErrorKind, ProviderError, kind_for_status
from .openai_fields import as_object, content_text, max_output_tokens, stop_list, unsupported

__all__ = ["CohereAdapter", "CohereStreamDecoder", "cohere_body", "cohere_error_kind"]

Json = dict[str, Any]
NAME = "cohere"
DEFAULT_ENDPOINT = "https://api.cohere.com"


def cohere_error_kind(status: int, message: str) -> ErrorKind:
    """A Cohere status (and message) onto the shared taxonomy; 402 and 498 are key/billing trouble."""
    if status in (402, 498):
        return ErrorKind.AUTH
    return kind_for_status(status, message)


# -- request ------------------------------------------------------------------------------------


def _user_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts: list[Json] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = as_object(part.get("image_url"))
            converted: Json = {"url": image.get("url", "")}
            if image.get("detail") in ("auto", "low", "high"):
                converted["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": converted})
        else:
            raise unsupported(NAME, f"{part.get('type')} content parts")
    return parts


def _tool_call(call: Json) -> Json:
    function = as_object(call.get("function"))
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = encode(arguments or {}, NAME, kind=ErrorKind.PROTOCOL).decode()
    return {
        "id": call.get("id", ""),
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }


def _message(message: Json) -> Json:
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        return {"role": "system", "content": content_text(content)}
    if role == "user":
        return {"role": "user", "content": _user_content(content)}
    if role == "assistant":
        out: Json = {"role": "assistant"}
        text = content_text(content)
        if message.get("tool_calls"):
            out["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
            if text:
                out["tool_plan"] = text
        else:
            out["content"] = text
        return out
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.get("tool_call_id", ""),
            "content": content_text(content),
        }
    raise unsupported(NAME, f"{role}-role messages (send tool messages for tool results)")


def _tools(body: Json, out: Json) -> None:
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    if not tools:
        return
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        # Cohere cannot name a tool; offering only that one and requiring a call means the same.
        name = as_object(choice.get("function")).get("name")
        tools = [t for t in tools if as_object(t.get("function")).get("name") == name] or tools
        out["tool_choice"] = "REQUIRED"
    elif choice == "required":
        out["tool_choice"] = "REQUIRED"
    elif choice == "none":
        out["tool_choice"] = "NONE"
    converted: list[Json] = []
    for tool in tools:
        function = as_object(tool.get("function"))
        entry: Json = {"name": function.get("name", "")}
        if function.get("description"):
            entry["description"] = function["description"]
        if isinstance(function.get("parameters"), dict):
            entry["parameters"] = function["parameters"]
        converted.append({"type": "function", "function": entry})
    out["tools"] = converted
    if all(as_object(t.get("function")).get("strict") is True for t in tools):
        out["strict_tools"] = True


def _clamp(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return min(max(float(value), low), high)


def cohere_body(target: Target, body: Json, *, stream: bool) -> Json:
    """The v2 chat request body for an OpenAI chat-completions ``body``."""
    out: Json = {"model": target.model, "messages": [_message(m) for m in body.get("messages") or []]}
    _tools(body, out)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = as_object(fmt.get("json_schema"))
        converted: Json = {"type": "json_object"}
        if isinstance(spec.get("schema"), dict):
            converted["json_schema"] = spec["schema"]
        out["response_format"] = converted
    limit = max_output_tokens(body)
    if limit is not None:
        out["max_tokens"] = limit
    if isinstance(body.get("temperature"), (int, float)):
        out["temperature"] = body["temperature"]
    for source, name, low, high in (
        ("top_p", "p", 0.01, 0.99),
        ("frequency_penalty", "frequency_penalty", 0.0, 1.0),
        ("presence_penalty", "presence_penalty", 0.0, 1.0),
    ):
        value = _clamp(body.get(source), low, high)
        if value is not None:
            out[name] = value
    stops = stop_list(body)
    if stops:
        out["stop_sequences"] = stops
    if isinstance(body.get("seed"), int):
        out["seed"] = body["seed"]
    if stream:
        out["stream"] = True
    return out


# -- adapter ------------------------------------------------------------------------------------


class CohereAdapter:
    """Cohere's v2 API at api.cohere.com (or a compatible endpoint)."""

    name = NAME

    def _base(self, target: Target) -> str:
        base = (target.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        return base.removesuffix("/v2")

    def _headers(self, target: Target, *, stream: bool = False) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "authorization": f"Bearer {target.api_key}",
        }

    def chat_request(self, target: Target, body: Json, *, stream: bool) -> UpstreamRequest:
        payload = encode(cohere_body(target, body, stream=stream), NAME)
        return UpstreamRequest(
            "POST", f"{self._base(target)}/v2/chat", self._headers(target, stream=stream), payload
        )

    def parse_chat(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("message"), dict):
            raise ProviderError(ErrorKind.PROTOCOL, "answer has no message", provider=NAME)
        reason = str(parsed.get("finish_reason") or "COMPLETE")
        if reason in ("ERROR", "TIMEOUT"):
            raise failed_generation(reason, parsed.get("error"))
        answer = parsed["message"]
        texts = [
            item["text"]
            for item in answer.get("content") or []
            if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str)
        ]
        calls = [_tool_call(call) for call in answer.get("tool_calls") or [] if isinstance(call, dict)]
        text = "".join(texts)
        message: Json = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return completion(
            id=str(parsed.get("id") or "chat"),
            model=model,
            message=message,
            finish_reason=FINISH_REASONS.get(reason, "stop"),
            usage_=cohere_usage(parsed.get("usage")),
        )

    def chat_stream_decoder(self, *, model: str, include_usage: bool) -> CohereStreamDecoder:
        return CohereStreamDecoder(model=model, include_usage=include_usage)

    def embeddings_request(self, target: Target, body: Json) -> UpstreamRequest:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise unsupported(NAME, "token-id embedding inputs (send text)")
        base64 = body.get("encoding_format") == "base64"
        out: Json = {
            "model": target.model,
            "texts": texts,
            "input_type": "search_document",
            "embedding_types": ["base64" if base64 else "float"],
        }
        if isinstance(body.get("dimensions"), int):
            out["output_dimension"] = body["dimensions"]
        return UpstreamRequest(
            "POST", f"{self._base(target)}/v2/embed", self._headers(target), encode(out, NAME)
        )

    def parse_embeddings(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        if not isinstance(parsed, dict):
            raise ProviderError(ErrorKind.PROTOCOL, "embeddings answer is not an object", provider=NAME)
        embeddings = parsed.get("embeddings")
        vectors: Any = None
        if isinstance(embeddings, dict):  # embeddings_by_type
            vectors = embeddings.get("float", embeddings.get("base64"))
        elif isinstance(embeddings, list):  # embeddings_floats (no embedding_types)
            vectors = embeddings
        if not isinstance(vectors, list):
            raise ProviderError(ErrorKind.PROTOCOL, "embeddings answer has no vectors", provider=NAME)
        meta = as_object(parsed.get("meta"))
        billed = as_object(meta.get("billed_units"))
        tokens = int(billed.get("input_tokens") or 0)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message = f"HTTP {status}"
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            if body:
                message = body[:200].decode("utf-8", errors="replace")
        else:
            if isinstance(parsed, dict) and parsed.get("message"):
                message = str(parsed["message"])
        return ProviderError(
            cohere_error_kind(status, message),
            message,
            status=status,
            retry_after=retry_after(headers),
            provider=NAME,
        )

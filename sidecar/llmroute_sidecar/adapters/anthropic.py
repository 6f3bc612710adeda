"""Anthropic Messages API (``POST /v1/messages``): the OpenAI chat shape to Claude's and back.

Requests: system and developer messages become the top-level ``system``; tool results become user
``tool_result`` blocks; consecutive messages of one role are merged, since Claude wants user and
assistant turns to alternate. Answers: text blocks join into ``content``, ``tool_use`` blocks become
``tool_calls``, and the stream's typed events (``message_start`` ... ``message_stop``) become
``chat.completion.chunk`` dicts. The decoder holds back the first chunk until real output arrives, so
an ``overloaded_error`` event right after the 200 still fails over to another backend.

What Claude cannot express is approximated, never faked silently, and documented here:

- ``response_format`` (``json_object``/``json_schema``): the Messages API offers no schema-less JSON
  mode, so both are emulated with a system instruction carrying the schema. The model is asked, not
  constrained; apps must still validate. (Native structured outputs, ``output_config.format``, exist
  only on recent models, and a model without them answers 400, which would stop the route's
  fallback; so they are not sent.)
- ``temperature`` is clamped to Claude's 0..1; ``top_p`` is dropped when ``temperature`` is also set
  (recent models refuse both); whitespace-only ``stop`` sequences are dropped (Claude refuses them).
- ``seed``, penalties and ``logprobs`` have no Claude counterpart and are ignored.
- usage: ``prompt_tokens`` counts cache reads and writes too, as OpenAI's does; cache reads are
  reported as ``prompt_tokens_details.cached_tokens``.

Neighbours: ``base.py`` (the contract), ``anthropic_stream.py`` (the stream decoder, stop reasons,
usage and error mapping), ``openai_fields.py`` (reading the request), ``common.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from .anthropic_stream import AnthropicStreamDecoder, anthropic_error_kind, anthropic_usage, finish_reason
from .base import Target, UpstreamRequest
from .common import completion, encode, loads, retry_after
from .errors import ErrorKind, ProviderError
from .openai_fields import (
    as_object,
    content_text,
    json_instruction,
    max_output_tokens,
    parse_data_uri,
    stop_list,
    tool_arguments,
    unsupported,
)

__all__ = ["AnthropicAdapter", "AnthropicStreamDecoder", "anthropic_error_kind", "anthropic_messages"]

Json = dict[str, Any]
NAME = "anthropic"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

_TOOL_ID_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


# -- request ------------------------------------------------------------------------------------


def _tool_id(value: Any) -> str:
    """Claude accepts ``[a-zA-Z0-9_-]`` in tool ids; ids from other providers may carry more."""
    return _TOOL_ID_INVALID.sub("_", str(value or "")) or "call"


def _media_block(url: str) -> Json:
    data = parse_data_uri(url)
    if data is not None:
        source = {"type": "base64", "media_type": data.media_type, "data": data.data}
        return {"type": "document" if data.media_type == "application/pdf" else "image", "source": source}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise unsupported(NAME, "images other than http(s) URLs and base64 data: URIs")


def _part_blocks(content: Any, *, media: bool) -> list[Json]:
    """Content blocks of a message content (a string or OpenAI parts); empty text is left out."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Json] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = content_text([part])
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url" and media:
            image = part.get("image_url")
            blocks.append(_media_block(str(image.get("url", "")) if isinstance(image, dict) else ""))
        elif kind == "file" and media:
            file = part.get("file")
            file_data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(file_data, str) or parse_data_uri(file_data) is None:
                raise unsupported(NAME, "file parts without inline file_data (a base64 data: URI)")
            blocks.append(_media_block(file_data))
        else:
            raise unsupported(NAME, f"{kind} content parts here")
    return blocks


def _assistant_blocks(message: Json) -> list[Json]:
    blocks = _part_blocks(message.get("content"), media=False)
    for call in message.get("tool_calls") or []:
        function = as_object(call.get("function"))
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call.get("id")),
                "name": function.get("name", ""),
                "input": tool_arguments(function.get("arguments"), NAME),
            }
        )
    return blocks


def _tool_result(message: Json) -> Json:
    result: Json = {"type": "tool_result", "tool_use_id": _tool_id(message.get("tool_call_id"))}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    else:
        blocks = _part_blocks(content, media=True)
        if blocks:
            result["content"] = blocks
    return result


def anthropic_messages(messages: list[Json]) -> tuple[list[Json], list[Json]]:
    """OpenAI messages as Claude's ``(system blocks, alternating messages)``."""
    system: list[Json] = []
    turns: list[Json] = []

    def add(role: str, blocks: list[Json]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append({"type": "text", "text": text})
        elif role == "user":
            add("user", _part_blocks(message.get("content"), media=True))
        elif role == "assistant":
            add("assistant", _assistant_blocks(message))
        elif role == "tool":
            add("user", [_tool_result(message)])
        else:
            raise unsupported(NAME, f"{role}-role messages (send tool messages for tool results)")
    for turn in turns:
        if turn["role"] == "user":
            # Claude wants a user turn's tool results before anything else in it.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _tools(body: Json) -> tuple[list[Json], Json | None]:
    tools: list[Json] = []
    for tool in body.get("tools") or []:
        function = as_object(tool.get("function"))
        parameters = function.get("parameters")
        converted: Json = {
            "name": function.get("name", ""),
            "input_schema": parameters
            if isinstance(parameters, dict)
            else {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        tools.append(converted)
    if not tools:
        return [], None
    choice = body.get("tool_choice")
    converted_choice: Json
    if choice == "none":
        return tools, {"type": "none"}
    if choice == "required":
        converted_choice = {"type": "any"}
    elif isinstance(choice, dict):
        converted_choice = {"type": "tool", "name": as_object(choice.get("function")).get("name", "")}
    else:
        converted_choice = {"type": "auto"}
    if body.get("parallel_tool_calls") is False:
        converted_choice["disable_parallel_tool_use"] = True
    elif choice is None:
        return tools, None  # Claude's default is auto
    return tools, converted_choice


def anthropic_body(target: Target, body: Json, *, stream: bool) -> Json:
    """The Messages API request body for an OpenAI chat-completions ``body``."""
    system, messages = anthropic_messages(body.get("messages") or [])
    instruction = json_instruction(body.get("response_format"))
    if instruction:
        system.append({"type": "text", "text": instruction})
    out: Json = {
        "model": target.model,
        "max_tokens": max_output_tokens(body, DEFAULT_MAX_TOKENS),
        "messages": messages,
    }
    if system:
        out["system"] = system
    tools, choice = _tools(body)
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)):
        out["temperature"] = min(float(temperature), 1.0)
    elif isinstance(body.get("top_p"), (int, float)):
        out["top_p"] = body["top_p"]
    stops = [s for s in stop_list(body) if s.strip()]
    if stops:
        out["stop_sequences"] = stops
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if stream:
        out["stream"] = True
    return out


# -- adapter ------------------------------------------------------------------------------------


class AnthropicAdapter:
    """Claude through api.anthropic.com (or a compatible endpoint)."""

    name = NAME

    def _headers(self, target: Target, *, stream: bool) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": API_VERSION,
            "x-api-key": target.api_key,
        }

    def chat_request(self, target: Target, body: Json, *, stream: bool) -> UpstreamRequest:
        base = (target.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        payload = encode(anthropic_body(target, body, stream=stream), NAME)
        return UpstreamRequest("POST", url, self._headers(target, stream=stream), payload)

    def parse_chat(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("content"), list):
            raise ProviderError(ErrorKind.PROTOCOL, "answer has no content blocks", provider=NAME)
        texts: list[str] = []
        calls: list[Json] = []
        for block in parsed["content"]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                arguments = encode(as_object(block.get("input")), NAME, kind=ErrorKind.PROTOCOL).decode()
                calls.append(
                    {
                        "id": block.get("id", ""),
                        "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": arguments},
                    }
                )
        text = "".join(texts)
        message: Json = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        counts = parsed.get("usage")
        return completion(
            id=str(parsed.get("id") or "msg"),
            model=str(parsed.get("model") or model),
            message=message,
            finish_reason=finish_reason(parsed.get("stop_reason")),
            usage_=anthropic_usage(counts) if isinstance(counts, dict) else None,
        )

    def chat_stream_decoder(self, *, model: str, include_usage: bool) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(model=model, include_usage=include_usage)

    def embeddings_request(self, target: Target, body: Json) -> UpstreamRequest:
        raise ProviderError(ErrorKind.BAD_REQUEST, "anthropic does not serve embeddings", provider=NAME)

    def parse_embeddings(self, body: bytes, *, model: str) -> Json:
        raise ProviderError(ErrorKind.BAD_REQUEST, "anthropic does not serve embeddings", provider=NAME)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message, error_type = f"HTTP {status}", ""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            if body:
                message = body[:200].decode("utf-8", errors="replace")
        else:
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                error_type = str(error.get("type") or "")
        return ProviderError(
            anthropic_error_kind(error_type, status, message),
            message,
            status=status,
            retry_after=retry_after(headers),
            provider=NAME,
        )

"""Claude's streamed Messages API events, decoded into OpenAI ``chat.completion.chunk`` dicts.

A stream is ``message_start`` (id, model, input tokens), per content block ``content_block_start``,
deltas (``text_delta``, ``input_json_delta``, and ``thinking_delta``/``signature_delta``, which stay
with the provider) and ``content_block_stop``, then ``message_delta`` (stop reason, cumulative usage)
and ``message_stop``; ``ping`` may come anywhere and an ``error`` event ends a failed stream. Each
``tool_use`` block becomes an OpenAI tool call, numbered in order of appearance. Nothing is emitted
before the first real output (see ``chunks.py``), so an overload right after the 200 still fails over.

Also home to what the adapter (``anthropic.py``) shares with the decoder: the stop reasons, the usage
conversion and the error taxonomy mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .chunks import ChunkWriter
from .common import loads, usage
from .errors import ErrorKind, ProviderError, kind_for_status
from .openai_fields import as_object
from .sse import SseParser

__all__ = ["AnthropicStreamDecoder", "anthropic_error_kind", "anthropic_usage", "finish_reason"]

Json = dict[str, Any]
NAME = "anthropic"

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERROR_KINDS = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "billing_error": ErrorKind.AUTH,  # this account cannot pay; another backend may
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "api_error": ErrorKind.SERVER,
    "timeout_error": ErrorKind.TIMEOUT,
}
_TOO_LONG_HINTS = ("prompt is too long", "exceed context limit", "context window", "maximum context")


def anthropic_error_kind(error_type: str, status: int | None, message: str) -> ErrorKind:
    """Anthropic's error ``type`` (plus status and message) onto the shared taxonomy."""
    if status == 529:
        return ErrorKind.OVERLOADED
    kind = _ERROR_KINDS.get(error_type) or kind_for_status(status or 500, message)
    if kind == ErrorKind.BAD_REQUEST and any(hint in message.lower() for hint in _TOO_LONG_HINTS):
        return ErrorKind.CONTEXT_TOO_LONG
    return kind


def finish_reason(stop_reason: Any) -> str:
    """Claude's ``stop_reason`` as an OpenAI ``finish_reason``."""
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_usage(data: Mapping[str, Any]) -> Json:
    """Claude's usage counts as OpenAI usage: cache reads and writes are prompt tokens too."""

    def count(name: str) -> int:
        value = data.get(name)
        return int(value) if isinstance(value, (int, float)) else 0

    prompt = count("input_tokens") + count("cache_read_input_tokens") + count("cache_creation_input_tokens")
    return usage(prompt, count("output_tokens"), count("cache_read_input_tokens"))


def _index(payload: Json) -> int:
    index = payload.get("index")
    return index if isinstance(index, int) else -1


class AnthropicStreamDecoder:
    """Claude's typed SSE events in, OpenAI chunks out; ``message_stop`` marks the end."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._sse = SseParser()
        self._chunks = ChunkWriter(id="msg", model=model)
        self._include_usage = include_usage
        self._finished = False
        self._finish_sent = False
        self._counts: Json | None = None
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool_calls index

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def usage(self) -> Json | None:
        return anthropic_usage(self._counts) if self._counts is not None else None

    def feed(self, data: bytes) -> list[Json]:
        out: list[Json] = []
        for event in self._sse.feed(data):
            if not event.data:
                continue
            payload = loads(event.data.encode(), NAME)
            if not isinstance(payload, dict):
                raise ProviderError(ErrorKind.PROTOCOL, "stream event is not an object", provider=NAME)
            self._handle(str(payload.get("type") or event.event), payload, out)
        return out

    def _handle(self, kind: str, payload: Json, out: list[Json]) -> None:
        if kind == "message_start":
            message = as_object(payload.get("message"))
            self._chunks.id = str(message.get("id") or self._chunks.id)
            self._chunks.model = str(message.get("model") or self._chunks.model)
            self._counts = dict(as_object(message.get("usage")))
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_delta":
            self._block_delta(payload, out)
        elif kind == "message_delta":
            if isinstance(payload.get("usage"), dict):
                # Counts in message_delta are cumulative; they update those of message_start.
                known = {k: v for k, v in payload["usage"].items() if v is not None}
                self._counts = {**(self._counts or {}), **known}
            delta = as_object(payload.get("delta"))
            if delta.get("stop_reason") is not None:
                self._chunks.delta(out, {}, finish_reason(delta["stop_reason"]))
                self._finish_sent = True
        elif kind == "message_stop":
            if not self._finish_sent:
                self._chunks.delta(out, {}, "stop")
                self._finish_sent = True
            self._finished = True
            if self._include_usage:
                self._chunks.usage(out, self.usage or usage(0, 0))
        elif kind == "error":
            error = as_object(payload.get("error"))
            text = str(error.get("message") or "stream error")
            error_kind = anthropic_error_kind(str(error.get("type") or ""), None, text)
            raise ProviderError(error_kind, text, provider=NAME)
        # ping, content_block_stop and event types added later carry nothing for the app.

    def _block_start(self, payload: Json, out: list[Json]) -> None:
        block = as_object(payload.get("content_block"))
        if block.get("type") == "text" and block.get("text"):
            self._chunks.delta(out, {"content": block["text"]})
        elif block.get("type") == "tool_use":
            index = len(self._tools)
            self._tools[_index(payload)] = index
            call = {
                "index": index,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            self._chunks.delta(out, {"tool_calls": [call]})
        # thinking and server-tool blocks stay with the provider.

    def _block_delta(self, payload: Json, out: list[Json]) -> None:
        delta = as_object(payload.get("delta"))
        if delta.get("type") == "text_delta" and delta.get("text"):
            self._chunks.delta(out, {"content": delta["text"]})
        elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = self._tools.get(_index(payload))
            if index is not None:
                call = {"index": index, "function": {"arguments": delta["partial_json"]}}
                self._chunks.delta(out, {"tool_calls": [call]})

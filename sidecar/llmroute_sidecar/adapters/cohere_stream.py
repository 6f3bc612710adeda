"""Cohere's v2 chat stream, decoded into OpenAI ``chat.completion.chunk`` dicts.

A stream is ``message-start`` (the id); for text ``content-start``, ``content-delta``s and
``content-end``; for tool calls ``tool-plan-delta``s (the model's plan, which stays with the
provider), then per call ``tool-call-start`` (id and name), ``tool-call-delta``s (argument text) and
``tool-call-end``; citation and debug events may come too; ``message-end`` carries the finish reason
and usage. Cohere has no error event: a failed generation ends with a ``message-end`` whose finish
reason is ``ERROR`` (or ``TIMEOUT``), which is raised as a :class:`ProviderError`, never a clean end.
Nothing is emitted before the first real output (see ``chunks.py``).

Also home to what the adapter (``cohere.py``) shares with the decoder: finish reasons, usage, and the
error of a failed generation.
"""

from __future__ import annotations

from typing import Any

from .chunks import ChunkWriter
from .common import loads, usage
from .errors import ErrorKind, ProviderError, kind_for_status
from .openai_fields import as_object
from .sse import SseParser

__all__ = ["FINISH_REASONS", "CohereStreamDecoder", "cohere_usage", "failed_generation"]

Json = dict[str, Any]
NAME = "cohere"

FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_RATE_HINTS = ("rate limit", "per minute", "too many requests")


def failed_generation(finish_reason: str, error: Any) -> ProviderError:
    """The error for a generation Cohere ended with ERROR or TIMEOUT, in a stream or not."""
    message = str(error or f"the generation ended with {finish_reason}")
    if finish_reason == "TIMEOUT":
        kind = ErrorKind.TIMEOUT
    elif any(hint in message.lower() for hint in _RATE_HINTS):
        kind = ErrorKind.RATE_LIMITED
    else:
        kind = kind_for_status(500, message)
    return ProviderError(kind, message, provider=NAME)


def cohere_usage(data: Any) -> Json | None:
    """Cohere's usage as OpenAI usage: billed units (what the account pays for) before tokens."""
    if not isinstance(data, dict):
        return None
    for key in ("billed_units", "tokens"):
        counts = data.get(key)
        if isinstance(counts, dict) and ("input_tokens" in counts or "output_tokens" in counts):
            cached = data.get("cached_tokens")
            return usage(
                int(counts.get("input_tokens") or 0),
                int(counts.get("output_tokens") or 0),
                int(cached) if isinstance(cached, (int, float)) else 0,
            )
    return None


def _index(payload: Json) -> int:
    index = payload.get("index")
    return index if isinstance(index, int) else -1


class CohereStreamDecoder:
    """Cohere's v2 SSE events in, OpenAI chunks out; ``message-end`` marks the end."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._sse = SseParser()
        self._chunks = ChunkWriter(id="chat", model=model)
        self._include_usage = include_usage
        self._finished = False
        self._usage: Json | None = None
        self._tools: dict[int, int] = {}  # Cohere's tool-call index -> OpenAI's

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def usage(self) -> Json | None:
        return self._usage

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
        delta = as_object(payload.get("delta"))
        message = as_object(delta.get("message"))
        if kind == "message-start":
            self._chunks.id = str(payload.get("id") or self._chunks.id)
        elif kind in ("content-start", "content-delta"):
            content = as_object(message.get("content"))
            # Only text reaches the app; "thinking" content stays with the provider.
            if isinstance(content.get("text"), str) and content["text"]:
                self._chunks.delta(out, {"content": content["text"]})
        elif kind == "tool-call-start":
            call = as_object(message.get("tool_calls"))
            function = as_object(call.get("function"))
            index = len(self._tools)
            self._tools[_index(payload)] = index
            head = {
                "index": index,
                "id": call.get("id", ""),
                "type": "function",
                "function": {"name": function.get("name", ""), "arguments": function.get("arguments") or ""},
            }
            self._chunks.delta(out, {"tool_calls": [head]})
        elif kind == "tool-call-delta":
            call = as_object(message.get("tool_calls"))
            function = as_object(call.get("function"))
            known = self._tools.get(_index(payload))
            if known is None and self._tools:
                known = max(self._tools.values())
            if known is not None and function.get("arguments"):
                self._chunks.delta(
                    out, {"tool_calls": [{"index": known, "function": {"arguments": function["arguments"]}}]}
                )
        elif kind == "message-end":
            self._end(delta, out)
        # tool-plan-delta, content-end, tool-call-end, citations and debug events carry nothing here.

    def _end(self, delta: Json, out: list[Json]) -> None:
        self._usage = cohere_usage(delta.get("usage")) or self._usage
        reason = str(delta.get("finish_reason") or "COMPLETE")
        if reason in ("ERROR", "TIMEOUT") or delta.get("error"):
            raise failed_generation(reason, delta.get("error"))
        self._chunks.delta(out, {}, FINISH_REASONS.get(reason, "stop"))
        self._finished = True
        if self._include_usage:
            self._chunks.usage(out, self._usage or usage(0, 0))

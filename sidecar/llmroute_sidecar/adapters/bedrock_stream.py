"""Bedrock ConverseStream decoding: AWS event-stream frames in, OpenAI chunks out.

Neighbours: ``bedrock.py`` (the adapter, which also uses :func:`error_kind` and :func:`stop_reason`
for non-streaming answers), ``llmroute_sidecar.aws.eventstream`` (the framing).

Events, in order: ``messageStart``; per content block an optional ``contentBlockStart`` (only tool
use starts carry data: the tool use id and name), ``contentBlockDelta``s (``delta.text`` or
``delta.toolUse.input``, a piece of the arguments' JSON text) and ``contentBlockStop``; then
``messageStop`` (the stop reason) and ``metadata`` (usage), which is the end. A frame with
``:message-type: exception`` (``throttlingException``, ``modelStreamErrorException``, ...) is an
in-stream error and raises :class:`ProviderError`. Payloads carry a ``p`` padding field, ignored.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..aws.eventstream import EventStreamDecoder, EventStreamError, Message
from ..ids import new_id
from .common import chunk, loads, usage
from .errors import ErrorKind, ProviderError

__all__ = ["BedrockStreamDecoder", "bedrock_usage", "error_kind", "stop_reason"]

Json = dict[str, Any]
NAME = "bedrock"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Error types (``x-amzn-ErrorType``, or ``:exception-type`` in a stream, where they are lowerCamel)
# lower-cased, without the "exception" suffix.
_ERROR_KINDS = {
    "throttling": ErrorKind.RATE_LIMITED,
    "servicequotaexceeded": ErrorKind.RATE_LIMITED,
    "toomanyrequests": ErrorKind.RATE_LIMITED,
    "serviceunavailable": ErrorKind.OVERLOADED,
    "modelnotready": ErrorKind.OVERLOADED,
    "accessdenied": ErrorKind.AUTH,
    "unrecognizedclient": ErrorKind.AUTH,
    "invalidsignature": ErrorKind.AUTH,
    "incompletesignature": ErrorKind.AUTH,
    "missingauthenticationtoken": ErrorKind.AUTH,
    "expiredtoken": ErrorKind.AUTH,
    "invalidclienttokenid": ErrorKind.AUTH,
    "validation": ErrorKind.BAD_REQUEST,
    "resourcenotfound": ErrorKind.NOT_FOUND,
    "modeltimeout": ErrorKind.TIMEOUT,
    "internalserver": ErrorKind.SERVER,
    "modelerror": ErrorKind.SERVER,
    "modelstreamerror": ErrorKind.SERVER,
}
_CONTEXT_TOO_LONG = re.compile(
    r"input is too long|prompt is too long|too many (input )?tokens|context (window|length)|"
    r"maximum context|exceeds? the maximum (number of )?(input )?tokens",
    re.IGNORECASE,
)


def error_kind(error_type: str, message: str) -> ErrorKind | None:
    """The kind of a Bedrock error type; None for a type this map does not know."""
    key = error_type.lower().removesuffix("exception")
    kind = _ERROR_KINDS.get(key)
    if kind == ErrorKind.BAD_REQUEST and key == "validation" and _CONTEXT_TOO_LONG.search(message):
        return ErrorKind.CONTEXT_TOO_LONG
    return kind


def stop_reason(reason: Any, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason for a Converse ``stopReason``."""
    finish = _STOP_REASONS.get(str(reason), "stop")
    if has_tool_calls and finish == "stop":
        return "tool_calls"
    return finish


def bedrock_usage(raw: Any) -> Json | None:
    """Converse ``usage`` in OpenAI's terms: ``inputTokens`` excludes cache reads and writes."""
    if not isinstance(raw, dict):
        return None
    cache_read = int(raw.get("cacheReadInputTokens") or 0)
    prompt = int(raw.get("inputTokens") or 0) + cache_read + int(raw.get("cacheWriteInputTokens") or 0)
    return usage(prompt, int(raw.get("outputTokens") or 0), cache_read)


class BedrockStreamDecoder:
    """One ConverseStream body to OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._frames = EventStreamDecoder()
        self._model = model
        self._include_usage = include_usage
        self._id = f"chatcmpl-{new_id()}"
        self._created = int(time.time())
        self._finished = False
        self._usage: Json | None = None
        self._sent_role = False
        self._tool_index: dict[int, int] = {}  # contentBlockIndex -> OpenAI tool_calls index
        self._finish: str | None = None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def usage(self) -> Json | None:
        return self._usage

    def feed(self, data: bytes) -> list[Json]:
        try:
            messages = self._frames.feed(data)
        except EventStreamError as exc:
            raise ProviderError(ErrorKind.PROTOCOL, f"bad event-stream frame: {exc}", provider=NAME) from exc
        out: list[Json] = []
        for message in messages:
            out.extend(self._on_message(message))
        return out

    def _chunk(self, delta: Json | None = None, finish_reason: str | None = None, **extra: Any) -> Json:
        if delta is not None and not self._sent_role:
            delta = {"role": "assistant", **delta}
            self._sent_role = True
        return chunk(
            id=self._id,
            model=self._model,
            created=self._created,
            delta=delta,
            finish_reason=finish_reason,
            **extra,
        )

    def _on_message(self, message: Message) -> list[Json]:
        kind = message.header(":message-type") or "event"
        if kind == "exception":
            error_type = message.header(":exception-type")
            text = _payload_message(message) or error_type
            raise ProviderError(
                error_kind(error_type, text) or ErrorKind.SERVER, f"{error_type}: {text}", provider=NAME
            )
        if kind == "error":
            code = message.header(":error-code")
            text = message.header(":error-message") or code
            raise ProviderError(error_kind(code, text) or ErrorKind.SERVER, f"{code}: {text}", provider=NAME)
        if kind != "event":
            return []
        payload = loads(message.payload, NAME) if message.payload else {}
        if not isinstance(payload, dict):
            raise ProviderError(ErrorKind.PROTOCOL, "event payload is not an object", provider=NAME)
        event = message.header(":event-type")
        if event == "contentBlockStart":
            return self._block_start(payload)
        if event == "contentBlockDelta":
            return self._block_delta(payload)
        if event == "messageStop":
            has_calls = bool(self._tool_index)
            self._finish = stop_reason(payload.get("stopReason"), has_calls)
            return [self._chunk({}, self._finish)]
        if event == "metadata":
            self._usage = bedrock_usage(payload.get("usage"))
            self._finished = True
            if self._include_usage and self._usage is not None:
                return [self._chunk(usage_=self._usage)]
        return []  # messageStart, contentBlockStop and events newer than this decoder

    def _block_start(self, payload: Json) -> list[Json]:
        start = payload.get("start")
        tool_use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(tool_use, dict):
            return []
        index = len(self._tool_index)
        self._tool_index[int(payload.get("contentBlockIndex") or 0)] = index
        call = {
            "index": index,
            "id": tool_use.get("toolUseId") or f"call_{new_id()[:24]}",
            "type": "function",
            "function": {"name": tool_use.get("name", ""), "arguments": ""},
        }
        return [self._chunk({"content": None, "tool_calls": [call]})]

    def _block_delta(self, payload: Json) -> list[Json]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return []
        text = delta.get("text")
        if isinstance(text, str):
            return [self._chunk({"content": text})] if text else []
        tool_use = delta.get("toolUse")
        if isinstance(tool_use, dict):
            block = int(payload.get("contentBlockIndex") or 0)
            if block not in self._tool_index:
                raise ProviderError(
                    ErrorKind.PROTOCOL, "tool input delta for a block that never started", provider=NAME
                )
            piece = {
                "index": self._tool_index[block],
                "function": {"arguments": str(tool_use.get("input", ""))},
            }
            return [self._chunk({"tool_calls": [piece]})]
        return []  # reasoningContent and citations: no place in a chat.completion.chunk


def _payload_message(message: Message) -> str:
    try:
        payload = loads(message.payload, NAME)
    except ProviderError:
        return message.payload[:200].decode("utf-8", errors="replace")
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("Message") or "")
    return ""

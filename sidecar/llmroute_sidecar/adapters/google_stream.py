"""Reading Gemini ``GenerateContentResponse`` objects, whole or streamed, as OpenAI results.

Neighbours: ``google.py`` (the adapter; it parses non-streaming answers with :func:`read_response`),
``sse.py`` (the framing of ``:streamGenerateContent?alt=sse``).

A stream is a series of ``data:`` events, each a full ``GenerateContentResponse`` holding the next
piece of the candidate; there is no terminal event: the chunk that carries a ``finishReason`` (or a
``promptFeedback.blockReason`` when the prompt itself was blocked) is the last, and
``usageMetadata`` is cumulative, so the last one is the total. Function calls arrive whole, each in one
part; they get ids (``call_...``) here, since Gemini's calls usually have none. A part's
``thoughtSignature`` is returned to the app in ``extra_content.google.thought_signature`` of its tool
call, where Google's own OpenAI-compatible endpoint puts it, so an app that echoes the tool call back
lets the adapter return the signature Gemini 3 requires. Thought parts (``thought: true``) are not
content and are skipped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..ids import new_id
from .common import chunk, encode, loads, retry_after
from .errors import ErrorKind, ProviderError, kind_for_status
from .sse import SseParser

__all__ = ["GeminiStreamDecoder", "Piece", "gemini_error", "gemini_usage", "new_call_id", "read_response"]

Json = dict[str, Any]
NAME = "google"

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


# google.rpc status names -> kinds; INVALID_ARGUMENT is refined below (bad key, context too long).
_STATUS_KINDS = {
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMITED,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "UNAUTHENTICATED": ErrorKind.AUTH,
    "PERMISSION_DENIED": ErrorKind.AUTH,
    "INVALID_ARGUMENT": ErrorKind.BAD_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.BAD_REQUEST,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "OUT_OF_RANGE": ErrorKind.BAD_REQUEST,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
    "INTERNAL": ErrorKind.SERVER,
    "UNKNOWN": ErrorKind.SERVER,
    "ABORTED": ErrorKind.SERVER,
    "CANCELLED": ErrorKind.SERVER,
}
_CONTEXT_TOO_LONG = re.compile(
    r"input token count .* exceeds|exceeds the maximum number of tokens|too many tokens|context (window|length)",
    re.IGNORECASE,
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def gemini_error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """The error for a Gemini ``{"error": {"code", "message", "status", "details"}}`` answer (also the
    JSON-array form, and the same object sent as a stream event)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        message = body[:200].decode("utf-8", errors="replace") or f"HTTP {status}"
        kind = kind_for_status(status, message)
        return ProviderError(kind, message, status=status, retry_after=retry_after(headers), provider=NAME)
    status = int(error.get("code") or status)
    message = str(error.get("message") or f"HTTP {status}")
    name = str(error.get("status") or "")
    reasons: set[str] = set()
    wait = retry_after(headers)
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if isinstance(detail.get("reason"), str):
            reasons.add(detail["reason"])
        match = _DURATION.match(str(detail.get("retryDelay") or ""))
        if match and wait is None:
            wait = float(match.group(1))
    kind = _STATUS_KINDS.get(name) or kind_for_status(status, message)
    if kind == ErrorKind.BAD_REQUEST:
        if reasons & {"API_KEY_INVALID", "API_KEY_EXPIRED"} or "API key" in message:
            kind = ErrorKind.AUTH  # Google answers a bad key with 400 INVALID_ARGUMENT
        elif _CONTEXT_TOO_LONG.search(message):
            kind = ErrorKind.CONTEXT_TOO_LONG
    text = f"{name}: {message}" if name else message
    return ProviderError(kind, text, status=status, retry_after=wait, provider=NAME)


def new_call_id() -> str:
    return f"call_{new_id()[:24]}"


def gemini_usage(raw: Any) -> Json | None:
    """``usageMetadata`` in OpenAI's terms. Thinking tokens are billed as output, so they count as
    completion tokens (and are reported as reasoning tokens); cached tokens are part of the prompt."""
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0)
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    completion = int(raw.get("candidatesTokenCount") or 0) + thoughts
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(raw.get("totalTokenCount") or prompt + completion),
    }
    cached = int(raw.get("cachedContentTokenCount") or 0)
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


@dataclass
class Piece:
    """What one response (or stream chunk) adds: text, whole tool calls, and whether it is the end."""

    text: str = ""
    tool_calls: list[Json] = field(default_factory=list)
    finish: str | None = None  # OpenAI's finish_reason when this response ends the answer


def read_response(response: Any) -> Piece:
    """The content of ``candidates[0]`` (tool calls without their stream ``index``)."""
    if not isinstance(response, dict):
        raise ProviderError(ErrorKind.PROTOCOL, "Gemini answer is not an object", provider=NAME)
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = response.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            return Piece(finish="content_filter")  # the prompt was blocked: no candidate at all
        return Piece()
    candidate = candidates[0] if isinstance(candidates[0], dict) else {}
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    piece = Piece()
    texts: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(call := part.get("functionCall"), dict):
            tool_call: Json = {
                "id": call.get("id") or new_call_id(),
                "type": "function",
                "function": {
                    "name": call.get("name", ""),
                    "arguments": encode(call.get("args", {}), NAME, kind=ErrorKind.PROTOCOL).decode(),
                },
            }
            if isinstance(part.get("thoughtSignature"), str):
                tool_call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
            piece.tool_calls.append(tool_call)
    piece.text = "".join(texts)
    reason = candidate.get("finishReason")
    if reason and reason != "FINISH_REASON_UNSPECIFIED":
        piece.finish = _FINISH.get(str(reason), "stop")
    return piece


class GeminiStreamDecoder:
    """One ``streamGenerateContent?alt=sse`` body to OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._sse = SseParser()
        self._model = model
        self._include_usage = include_usage
        self._id = ""
        self._created = int(time.time())
        self._finished = False
        self._usage: Json | None = None
        self._sent_role = False
        self._calls = 0
        self._had_calls = False

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def usage(self) -> Json | None:
        return self._usage

    def _chunk(
        self, delta: Json | None, finish_reason: str | None = None, usage_: Json | None = None
    ) -> Json:
        if delta is not None and not self._sent_role:
            delta = {"role": "assistant", **delta}
            self._sent_role = True
        return chunk(
            id=self._id,
            model=self._model,
            created=self._created,
            delta=delta,
            finish_reason=finish_reason,
            usage_=usage_,
        )

    def feed(self, data: bytes) -> list[Json]:
        out: list[Json] = []
        for event in self._sse.feed(data):
            if not event.data.strip():
                continue
            response = loads(event.data.encode(), NAME)
            if isinstance(response, dict) and "error" in response:
                raise gemini_error(500, {}, event.data.encode())
            out.extend(self._on_response(response))
        return out

    def _on_response(self, response: Any) -> list[Json]:
        piece = read_response(response)
        if not self._id:
            self._id = f"chatcmpl-{response.get('responseId') or new_id()}"
        usage = gemini_usage(response.get("usageMetadata"))
        if usage is not None:
            self._usage = usage
        if self._finished:
            return []  # nothing follows the end; a late usage update was kept above
        out: list[Json] = []
        if piece.text:
            out.append(self._chunk({"content": piece.text}))
        if piece.tool_calls:
            calls = []
            for call in piece.tool_calls:
                calls.append({"index": self._calls, **call})
                self._calls += 1
            self._had_calls = True
            out.append(self._chunk({"content": None, "tool_calls": calls}))
        if piece.finish is not None:
            finish = "tool_calls" if self._had_calls and piece.finish == "stop" else piece.finish
            out.append(self._chunk({}, finish))
            self._finished = True
            if self._include_usage and self._usage is not None:
                out.append(self._chunk(None, usage_=self._usage))
        return out

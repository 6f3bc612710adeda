"""Helpers the adapters share: Retry-After parsing, OpenAI-shaped result builders, JSON coding."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from .errors import ErrorKind, ProviderError

__all__ = ["chunk", "completion", "encode", "loads", "retry_after", "usage"]

Json = dict[str, Any]


def loads(body: bytes, provider: str) -> Any:
    """Decode a provider's JSON, turning garbage into a PROTOCOL error instead of a crash."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(
            ErrorKind.PROTOCOL, f"{provider} sent invalid JSON: {exc}", provider=provider
        ) from exc


def encode(value: Any, provider: str, *, kind: ErrorKind = ErrorKind.BAD_REQUEST) -> bytes:
    """Encode JSON for (or from) ``provider``; JSON nested deeper than orjson encodes (254 levels)
    becomes a ProviderError rather than a crash. The app's body is checked for depth on arrival, but
    a translation can nest it one level deeper, and JSON inside strings (tool call arguments, a tool
    result Gemini wants as an object) is only decoded by the adapters. ``kind`` is BAD_REQUEST for
    requests, PROTOCOL for answers (a provider's JSON may nest up to the decoder's 1024 levels)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise ProviderError(
            kind, f"JSON for {provider} cannot be encoded: {exc}", provider=provider
        ) from None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def usage(prompt: int, completion_tokens: int, cached: int = 0) -> Json:
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def completion(
    *, id: str, model: str, message: Json, finish_reason: str, usage_: Json | None, created: int | None = None
) -> Json:
    """An OpenAI ``chat.completion`` object with one choice."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage_,
    }


def chunk(
    *,
    id: str,
    model: str,
    created: int,
    delta: Json | None = None,
    finish_reason: str | None = None,
    usage_: Json | None = None,
) -> Json:
    """An OpenAI ``chat.completion.chunk``; with ``usage_`` and no delta it is the final usage chunk."""
    out: Json = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model}
    if delta is None and finish_reason is None:
        out["choices"] = []
    else:
        out["choices"] = [
            {"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}
        ]
    if usage_ is not None:
        out["usage"] = usage_
    return out

"""What a cached answer is filed under: partitions, exact keys, and the text a semantic lookup embeds.

Pure functions of the request body, no I/O. ``facade.py`` (:class:`ResponseCache`) stores and finds
answers under what these return; the glue computes a :class:`CacheKey` with :func:`exact_key`, and for
a semantic lookup embeds :func:`semantic_text` with the route's embedding backend and searches
:func:`semantic_partition`.

The exact key is a digest of the body without the fields that cannot change the answer (``stream``,
``user``, ``metadata``, ...). It is a deny-list on purpose: a sampling parameter the provider adds next
year changes the key until someone decides it is safe to ignore, rather than silently sharing answers.
Bodies are whatever the app sent, so nothing here raises on odd JSON (the API layer rejects it later).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

__all__ = [
    "IGNORED_FIELDS",
    "CacheKey",
    "exact_key",
    "partition_of",
    "semantic_partition",
    "semantic_text",
]

#: Request fields that never change the answer: transport (``stream``, ``stream_options``: a hit is
#: replayed as a stream when asked), attribution (``user``, ``safety_identifier``, ``metadata``) and
#: provider-side storage or billing (``store``, ``service_tier``, ``prompt_cache_*``).
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)

# Roles whose messages set the scene rather than ask: a semantic match requires them to be identical.
# Tuples, not sets: a role is whatever the app sent, and an unhashable one must compare unequal
# rather than make a set lookup raise.
_SYSTEM_ROLES = ("system", "developer")
_TURN_ROLES = ("user", "assistant")
# Larger integers than this are sent as JSON text by Python's encoder (orjson stops at 64 bits).
_EXACT_FLOAT_INTS = 2**53


@dataclass(frozen=True)
class CacheKey:
    """Where one exact answer lives: its partition (namespace, tenant, route) and the body's digest."""

    partition: str
    digest: str


def partition_of(*, namespace: str, tenant: str, route: str) -> str:
    """``namespace/tenant/route``, each part percent-encoded so no two triples share a partition
    (a tenant named ``a/b`` cannot reach another's entries) and the result is safe in a Redis key."""
    return "/".join(quote(str(part), safe="") for part in (namespace, tenant, route))


def exact_key(body: dict[str, Any], *, namespace: str, tenant: str, route: str) -> CacheKey:
    """The key of this request's answer: equal for bodies that differ only in key order, number
    spelling (``0`` and ``0.0``), ``null`` top-level fields or the :data:`IGNORED_FIELDS`."""
    relevant = _relevant(body)
    return CacheKey(partition_of(namespace=namespace, tenant=tenant, route=route), _digest(relevant))


def semantic_partition(
    body: dict[str, Any], *, namespace: str, tenant: str, route: str, embedding_backend: str
) -> str:
    """Where this request's semantic neighbours live: the route's partition, the embedding backend
    (vectors of two models are not comparable), and a digest of everything except the conversation's
    turns, so a semantic hit never crosses models, response formats, token limits, sampling settings
    or system prompts. Only meaningful when :func:`semantic_text` is not ``None``."""
    relevant = _relevant(body)
    messages = relevant.get("messages")
    if isinstance(messages, list):
        relevant["messages"] = [m for m in messages if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
    base = partition_of(namespace=namespace, tenant=tenant, route=route)
    return f"{base}/{quote(str(embedding_backend), safe='')}/{_digest(relevant)[:32]}"


def semantic_text(body: dict[str, Any], *, deterministic_only: bool = True) -> str | None:
    """The conversation's turns to embed, or ``None`` when the request may not be answered by a
    similar one: tools or functions offered, a tool exchange in the history, non-text content (two
    questions about different images read the same), audio output, ``n`` > 1, or - when
    ``deterministic_only`` - a temperature other than 0 (absent counts as not 0: OpenAI's default is 1).

    System and developer messages are left out of the text (they are in :func:`semantic_partition`
    instead): a long shared system prompt would otherwise dominate the embedding and make every
    question look alike. One user turn is embedded as is; longer conversations as ``role: text`` lines.
    """
    if not isinstance(body, dict):
        return None
    if body.get("tools") or body.get("functions"):
        return None
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        return None
    if deterministic_only:
        temperature = body.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature != 0:
            return None
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            continue
        if role not in _TURN_ROLES or message.get("tool_calls") or message.get("function_call"):
            return None
        text = _content_text(message.get("content"))
        if text is None:
            return None
        turns.append((str(role), text))
    if not turns or not any(text.strip() for _, text in turns):
        return None
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n".join(f"{role}: {text}" for role, text in turns)


def _content_text(content: Any) -> str | None:
    """A message's text; ``None`` when it holds anything but text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None
        texts.append(part["text"])
    return "".join(texts)


def _relevant(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {"": _safe_normalize(body)}
    # A top-level null means "the default" to every provider, same as leaving the field out.
    return {str(k): _safe_normalize(v) for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}


def _safe_normalize(value: Any) -> Any:
    try:
        return _normalize(value)
    except RecursionError:  # absurdly deep JSON: keyed as sent, still deterministic
        return value


def _normalize(value: Any) -> Any:
    """JSON with integral floats as integers (``temperature: 0.0`` and ``0`` ask the same)."""
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) < _EXACT_FLOAT_INTS
    ):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return value


def _digest(value: dict[str, Any]) -> str:
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError, RecursionError):
        # orjson refuses integers beyond 64 bits and nesting beyond 254 levels; bodies the API will
        # reject anyway, but keying them must not raise.
        data = _dump_iteratively(value)
    return hashlib.sha256(data).hexdigest()


def _dump_iteratively(value: Any) -> bytes:
    """A canonical encoding without recursion (any depth), keys sorted; not JSON, just unambiguous."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Token):
            out.append(item.text)
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Token("}"))
            for k in sorted(item, key=str, reverse=True):
                stack.extend((item[k], _Token(json.dumps(str(k)) + ":")))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append(_Token("]"))
            stack.extend(reversed(item))
        else:
            out.append(f"{type(item).__name__}:{item!r},")
    return "".join(out).encode()


@dataclass(frozen=True, slots=True)
class _Token:
    text: str

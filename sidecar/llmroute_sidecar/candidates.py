"""Which backends may answer a request, in which order.

For now: the logical model's declared order, minus backends that cannot serve this request (no chat
or embeddings support, no tools when tools are sent, no JSON mode when a JSON response is asked
for, no vision when images are sent). Strategies, rules, regions and health arrive with the routing
issue and slot in here without touching the attempt loop.
"""

from __future__ import annotations

from typing import Any

from .config.snapshot import BackendEntry, ModelEntry

__all__ = ["NoCandidate", "chat_candidates", "embedding_candidates"]


class NoCandidate(Exception):
    """No backend of the model can serve this kind of request; the message says why."""


def _needs(body: dict[str, Any]) -> list[str]:
    needs = []
    if body.get("tools"):
        needs.append("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        needs.append("json_mode")
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            needs.append("vision")
            break
    return needs


def chat_candidates(entry: ModelEntry, body: dict[str, Any]) -> list[BackendEntry]:
    needs = _needs(body)
    chosen = [
        b
        for b in entry.backends
        if b.capabilities.chat and all(getattr(b.capabilities, need) for need in needs)
    ]
    if not chosen:
        wanted = " and ".join(["chat", *needs])
        raise NoCandidate(f"no backend of model {entry.name!r} supports {wanted}")
    return chosen


def embedding_candidates(entry: ModelEntry) -> list[BackendEntry]:
    chosen = [b for b in entry.backends if b.capabilities.embeddings]
    if not chosen:
        raise NoCandidate(f"no backend of model {entry.name!r} serves embeddings")
    return chosen

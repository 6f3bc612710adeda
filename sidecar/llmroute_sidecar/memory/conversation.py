"""Conversations as message lists: what a new turn adds, what is kept, what a summary replaces.

Pure functions over OpenAI-shaped messages. A request's system and developer messages are its own
(they are not stored: an app may change its instructions between turns); everything else it sends
is the new turn. Cuts reuse ``routing/context.truncate_oldest``, so the rules that keep a tool call
with its results and start the kept part at a user message hold here too. Neighbours: ``policy.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..routing.context import truncate_oldest

__all__ = [
    "MAX_ID",
    "assistant_message",
    "check_conversation_id",
    "oldest_to_summarize",
    "split_turn",
    "summary_message",
    "summary_request",
    "window",
]

Json = dict[str, Any]
MAX_ID = 200
_PINNED = ("system", "developer")
SUMMARY_PREFIX = "Summary of the earlier conversation: "


def check_conversation_id(value: str) -> str | None:
    """The problem with an ``x-llmroute-conversation`` value, or None when it is a usable id."""
    if not 0 < len(value) <= MAX_ID or not value.isascii() or not value.isprintable() or " " in value:
        return f"must be 1 to {MAX_ID} printable ASCII characters without spaces"
    return None


def split_turn(messages: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(the request's system/developer messages, the new turn: every other message, in order)."""
    pinned = [m for m in messages if isinstance(m, dict) and m.get("role") in _PINNED]
    turn = [m for m in messages if not (isinstance(m, dict) and m.get("role") in _PINNED)]
    return pinned, turn


def window(messages: Sequence[Any], per_message: Sequence[int], budget: int) -> tuple[list[Any], int]:
    """The messages that fit ``budget`` tokens, oldest history left out first; and how many were left
    out. When even the newest turn does not fit, everything is sent (the planner then answers the
    route's context policy, a clear 400)."""
    keep = truncate_oldest(messages, per_message, budget)
    if keep is None:
        return list(messages), 0
    return [messages[i] for i in keep], len(messages) - len(keep)


def oldest_to_summarize(history: Sequence[Any], per_message: Sequence[int], budget: int) -> int:
    """How many of the oldest stored messages to replace by a summary so that the rest fits half of
    ``budget`` (room for the summary and a few more turns before the next one); never the newest."""
    target = budget // 2
    total = sum(per_message)
    cut = 0
    while total > target and cut < len(history) - 1:
        total -= per_message[cut]
        cut += 1
    # Do not split a tool call from its results: a cut lands before a user message.
    while cut < len(history) - 1 and not (
        isinstance(history[cut], dict) and history[cut].get("role") == "user"
    ):
        cut += 1
    return cut


def summary_request(model: str, older: Sequence[Any]) -> Json:
    """The body asking the summarizer model to summarise ``older``."""
    lines = []
    for message in older:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else str(content)
        lines.append(f"{message.get('role', 'user')}: {text}")
    return {
        "model": model,
        "messages": [
            {
                "role": "system",
                "content": "Summarise this conversation for whoever continues it: keep names, facts, "
                "decisions and open questions; at most 200 words.",
            },
            {"role": "user", "content": "\n".join(lines)},
        ],
        "max_tokens": 400,
    }


def summary_message(text: str) -> Json:
    return {"role": "system", "content": SUMMARY_PREFIX + text}


def assistant_message(response: Json) -> Json | None:
    """The answer of a chat completion as the message to store, or None when there is none."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    out: Json = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out

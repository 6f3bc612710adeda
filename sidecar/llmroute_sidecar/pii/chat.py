"""Where prompt text lives in an OpenAI chat-completions body, and how to rewrite it.

Texts are ``messages[].content`` when it is a string, the ``text`` of its ``{"type": "text"}``
parts when it is a list, and ``messages[].tool_calls[].function.arguments`` (a JSON string the
model wrote earlier). Names, roles, tools and everything else are left alone. Bodies are only
loosely validated before they get here, so every step checks the shape it expects and skips what
is not text; nothing here raises on odd JSON. ``redact.py`` rewrites through
:func:`map_prompt_texts`; :func:`scan_chat` only counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from .detect import find_pii

__all__ = ["map_prompt_texts", "prompt_texts", "scan_chat"]


def prompt_texts(body: Any) -> list[str]:
    """Every prompt text of ``body``, in message order. Walks through :func:`map_prompt_texts`, so
    what is counted and what is rewritten can never disagree."""
    texts: list[str] = []

    def collect(text: str) -> str:
        texts.append(text)
        return text

    map_prompt_texts(body, collect)
    return texts


def scan_chat(body: dict[str, Any], types: frozenset[str]) -> Counter[str]:
    """How many values of each PII type the prompt texts of ``body`` hold (for ``action: block``
    and for metrics). Types with no match are absent."""
    counts: Counter[str] = Counter()
    for text in prompt_texts(body):
        counts.update(match.type for match in find_pii(text, types))
    return counts


def map_prompt_texts(body: Any, rewrite: Callable[[str], str]) -> Any:
    """``body`` with every prompt text replaced by ``rewrite(text)``. Containers on the path to a
    changed text are copied; the input is never mutated, and is returned as is if nothing changed.
    Untouched subtrees are shared with the input."""
    if not isinstance(body, dict):
        return body
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    new_messages = [_map_message(message, rewrite) for message in messages]
    if all(new is old for new, old in zip(new_messages, messages, strict=True)):
        return body
    return {**body, "messages": new_messages}


def _map_message(message: Any, rewrite: Callable[[str], str]) -> Any:
    if not isinstance(message, dict):
        return message
    changes: dict[str, Any] = {}
    content = message.get("content")
    if isinstance(content, str):
        new_content: Any = rewrite(content)
        if new_content != content:
            changes["content"] = new_content
    elif isinstance(content, list):
        new_content = [_map_part(part, rewrite) for part in content]
        if any(new is not old for new, old in zip(new_content, content, strict=True)):
            changes["content"] = new_content
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        new_calls = [_map_tool_call(call, rewrite) for call in tool_calls]
        if any(new is not old for new, old in zip(new_calls, tool_calls, strict=True)):
            changes["tool_calls"] = new_calls
    return {**message, **changes} if changes else message


def _map_part(part: Any, rewrite: Callable[[str], str]) -> Any:
    if not isinstance(part, dict) or part.get("type") != "text":
        return part
    text = part.get("text")
    if not isinstance(text, str):
        return part
    new_text = rewrite(text)
    return part if new_text == text else {**part, "text": new_text}


def _map_tool_call(call: Any, rewrite: Callable[[str], str]) -> Any:
    if not isinstance(call, dict):
        return call
    function = call.get("function")
    if not isinstance(function, dict):
        return call
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return call
    new_arguments = rewrite(arguments)
    if new_arguments == arguments:
        return call
    return {**call, "function": {**function, "arguments": new_arguments}}

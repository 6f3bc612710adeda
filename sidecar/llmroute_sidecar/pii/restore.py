"""Putting redacted values back into what the provider answers: whole responses and streams.

:class:`~.redact.Redaction` holds the placeholder -> original table and delegates here. A stream
needs care because a placeholder can arrive split across chunks (``"<EMA"`` then ``"IL_1> ..."``):
:class:`ChunkRestorer` holds back, per choice, a tail that is a proper prefix of an issued
placeholder and emits it with a later chunk, at the choice's ``finish_reason``, or from
:meth:`ChunkRestorer.flush`.

Why piecewise restoring equals restoring the whole: a placeholder contains exactly one ``<``, at
its start. If a placeholder spanned the point where a chunk's text is cut, everything from the
last ``<`` before the cut would be a proper prefix of it, and that is exactly what is held back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .placeholders import PLACEHOLDER

__all__ = ["ChunkRestorer", "restore_response", "restore_text"]

# The chunk fields a flushed chunk copies from the last one seen, so that it reads like the
# provider's own chunk.
_CHUNK_IDENTITY = ("id", "object", "created", "model", "system_fingerprint", "service_tier")


def restore_text(originals: Mapping[str, str], text: str) -> str:
    """``text`` with every placeholder in ``originals`` replaced by its original value; any other
    placeholder-shaped string is left as it is."""
    if not originals or "<" not in text:
        return text
    return PLACEHOLDER.sub(lambda match: originals.get(match.group(), match.group()), text)


def restore_response(originals: Mapping[str, str], response: Any) -> Any:
    """An OpenAI ``chat.completion`` with ``choices[].message.content`` and its tool-call and
    legacy function-call arguments restored: a new dict if anything changed, else ``response``."""
    if not originals or not isinstance(response, dict):
        return response
    choices = response.get("choices")
    if not isinstance(choices, list):
        return response
    new_choices = [_restore_choice(originals, choice) for choice in choices]
    if all(new is old for new, old in zip(new_choices, choices, strict=True)):
        return response
    return {**response, "choices": new_choices}


def _restore_choice(originals: Mapping[str, str], choice: Any) -> Any:
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        return choice
    message: dict[str, Any] = choice["message"]
    changes: dict[str, Any] = {}
    content = message.get("content")
    if isinstance(content, str):
        if (restored := restore_text(originals, content)) != content:
            changes["content"] = restored
    elif isinstance(content, list):
        parts = [_restore_part(originals, part) for part in content]
        if any(new is not old for new, old in zip(parts, content, strict=True)):
            changes["content"] = parts
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        calls = [_restore_call(originals, call) for call in tool_calls]
        if any(new is not old for new, old in zip(calls, tool_calls, strict=True)):
            changes["tool_calls"] = calls
    function_call = message.get("function_call")
    if isinstance(function_call, dict):
        call = _restore_call(originals, {"function": function_call})
        if call["function"] is not function_call:
            changes["function_call"] = call["function"]
    return {**choice, "message": {**message, **changes}} if changes else choice


def _restore_part(originals: Mapping[str, str], part: Any) -> Any:
    if not isinstance(part, dict) or not isinstance(part.get("text"), str):
        return part
    restored = restore_text(originals, part["text"])
    return part if restored == part["text"] else {**part, "text": restored}


def _restore_call(originals: Mapping[str, str], call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function: dict[str, Any] = call["function"]
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return call
    # Redacted values never contain a quote or a backslash (see detect.py), so putting one back
    # into a JSON-encoded arguments string keeps it valid JSON.
    restored = restore_text(originals, arguments)
    return call if restored == arguments else {**call, "function": {**function, "arguments": restored}}


# A held-back tail is keyed by choice index and by tool-call index (None for the content).
_Key = tuple[int, int | None]


class ChunkRestorer:
    """Restores a stream of ``chat.completion.chunk`` dicts for one request. Not thread-safe; one
    per stream."""

    def __init__(self, originals: Mapping[str, str]) -> None:
        self._originals = originals
        # Every proper prefix of every issued placeholder: what a chunk may not end with.
        self._prefixes = frozenset(
            placeholder[:length] for placeholder in originals for length in range(1, len(placeholder))
        )
        self._held: dict[_Key, str] = {}
        self._identity: dict[str, Any] = {}

    def feed(self, chunk: Any) -> Any:
        """``chunk`` with its deltas restored (a new dict if anything changed). A tail that may be
        the start of a placeholder is held back; it is released into this chunk if the choice
        finishes here."""
        if not self._originals or not isinstance(chunk, dict):
            return chunk
        self._identity = {key: chunk[key] for key in _CHUNK_IDENTITY if key in chunk}
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk
        new_choices = [self._feed_choice(choice, position) for position, choice in enumerate(choices)]
        if all(new is old for new, old in zip(new_choices, choices, strict=True)):
            return chunk
        return {**chunk, "choices": new_choices}

    def flush(self) -> list[dict[str, Any]]:
        """One chunk per choice that still has held-back text, carrying that text; the held text is
        then forgotten. Call before forwarding the usage chunk or ``[DONE]``."""
        by_choice: dict[int, dict[str, Any]] = {}
        for (index, tool), text in sorted(self._held.items(), key=lambda item: _order(item[0])):
            delta = by_choice.setdefault(index, {})
            if tool is None:
                delta["content"] = text
            else:
                delta.setdefault("tool_calls", []).append({"index": tool, "function": {"arguments": text}})
        self._held.clear()
        return [
            {
                "object": "chat.completion.chunk",
                **self._identity,
                "choices": [{"index": index, "delta": delta, "finish_reason": None}],
            }
            for index, delta in by_choice.items()
        ]

    def _feed_choice(self, choice: Any, position: int) -> Any:
        if not isinstance(choice, dict):
            return choice
        index = choice.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = position
        final = choice.get("finish_reason") is not None
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            if not final or not any(key[0] == index for key in self._held):
                return choice
            delta = {}
        changes: dict[str, Any] = {}
        content = delta.get("content")
        if isinstance(content, str) or (final and (index, None) in self._held):
            text = content if isinstance(content, str) else ""
            if (restored := self._pass((index, None), text, final)) != content:
                changes["content"] = restored
        tool_calls = delta.get("tool_calls")
        calls = tool_calls if isinstance(tool_calls, list) else []
        new_calls = [self._feed_call(index, call, final) for call in calls]
        if final:
            # Held arguments of tool calls that this last chunk does not mention.
            for key in [key for key in self._held if key[0] == index and key[1] is not None]:
                new_calls.append({"index": key[1], "function": {"arguments": self._held.pop(key)}})
        if len(new_calls) != len(calls) or any(
            new is not old for new, old in zip(new_calls, calls, strict=False)
        ):
            changes["tool_calls"] = new_calls
        if not changes:
            return choice
        return {**choice, "delta": {**delta, **changes}}

    def _feed_call(self, index: int, call: Any, final: bool) -> Any:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            return call
        function: dict[str, Any] = call["function"]
        arguments = function.get("arguments")
        tool = call.get("index")
        if not isinstance(arguments, str) or not isinstance(tool, int) or isinstance(tool, bool):
            return call
        restored = self._pass((index, tool), arguments, final)
        return call if restored == arguments else {**call, "function": {**function, "arguments": restored}}

    def _pass(self, key: _Key, text: str, final: bool) -> str:
        """The restored part of held text + ``text`` that can be emitted now."""
        pending = self._held.pop(key, "") + text
        if not final:
            cut = pending.rfind("<")
            if cut != -1 and pending[cut:] in self._prefixes:
                self._held[key] = pending[cut:]
                pending = pending[:cut]
        return restore_text(self._originals, pending)


def _order(key: _Key) -> tuple[int, int]:
    return key[0], -1 if key[1] is None else key[1]

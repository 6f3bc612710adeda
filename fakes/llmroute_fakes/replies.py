"""How the fakes answer: a deterministic :class:`Reply` derived from the :class:`Conversation` alone.

Neighbours: the protocol modules call :func:`plan_reply` after parsing and render its result;
``schemas`` fills tool arguments and structured outputs; ``ids`` names what needs a unique id.

The rules, identical for every protocol so that tests can predict answers:

- text: ``fake-<protocol> reply to: <first 40 characters of the last user message>``; after a tool
  result: ``fake-<protocol> got tool result: <first 40 characters of it>``;
- a tool call when tools were sent, the last message is the user's, tool choice is not ``none``, and
  either the request forces a tool (tool choice required/any/named), the ``tool_call`` fault knob
  says so, or the user's text names a tool or contains the word "tool";
- structured output: an instance of the requested schema (``{"reply": <text>}`` in plain JSON mode);
- tokens: ``ceil(characters / 4)`` per piece of text, so usage is stable and easy to compute;
- ``max_tokens`` smaller than the text cuts it and reports the "length" finish reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from .conversation import Conversation, Reply, ToolCall, ToolDef, Turn
from .schemas import schema_instance

__all__ = ["estimate_tokens", "json_pieces", "plan_reply", "prompt_tokens", "text_pieces"]

_QUOTE_CHARS = 40
_CHARS_PER_TOKEN = 4
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)
_PIECE = re.compile(r"\S+\s*|\s+")


def estimate_tokens(text: str) -> int:
    """Tokens of a piece of text: a quarter of its characters, rounded up."""
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def prompt_tokens(conversation: Conversation) -> int:
    total = estimate_tokens(conversation.system) + sum(estimate_tokens(t.text) for t in conversation.turns)
    for tool in conversation.tools:
        total += estimate_tokens(tool.name + tool.description)
        if tool.parameters:
            total += estimate_tokens(orjson.dumps(tool.parameters).decode())
    return total


def plan_reply(
    conversation: Conversation,
    *,
    protocol: str,
    tool_knob: str | None,
    new_id: Callable[[], str],
) -> Reply:
    """Decide the reply. ``tool_knob`` is the fault spec's ``tool_call`` (``""`` = any tool)."""
    prompt = prompt_tokens(conversation)
    last = conversation.turns[-1] if conversation.turns else Turn("user", "")
    tool = _tool_to_call(conversation, last, tool_knob)
    if tool is not None:
        arguments = schema_instance(tool.parameters, name=tool.name)
        if not isinstance(arguments, dict):
            arguments = {}
        arguments_json = orjson.dumps(arguments).decode()
        call = ToolCall(id=new_id(), name=tool.name, arguments=arguments, arguments_json=arguments_json)
        preamble = f"fake-{protocol} calling {tool.name}"
        return Reply(
            text="",
            tool_calls=(call,),
            finish="tool_calls",
            prompt_tokens=prompt,
            completion_tokens=estimate_tokens(preamble) + estimate_tokens(tool.name + arguments_json),
            preamble=preamble,
        )

    quoted = last.text[:_QUOTE_CHARS]
    if last.role == "tool":
        text = f"fake-{protocol} got tool result: {quoted}"
    else:
        text = f"fake-{protocol} reply to: {quoted}"
    if conversation.json_schema is not None:
        text = orjson.dumps(schema_instance(conversation.json_schema)).decode()
    elif conversation.json_mode:
        text = orjson.dumps({"reply": text}).decode()

    finish: Any = "stop"
    limit = conversation.max_tokens
    if limit is not None and estimate_tokens(text) > limit:
        text = text[: max(limit, 0) * _CHARS_PER_TOKEN]
        finish = "length"
    return Reply(
        text=text, tool_calls=(), finish=finish, prompt_tokens=prompt, completion_tokens=estimate_tokens(text)
    )


def _tool_to_call(conversation: Conversation, last: Turn, tool_knob: str | None) -> ToolDef | None:
    tools = conversation.tools
    if not tools or conversation.tool_mode == "none" or last.role != "user":
        return None
    by_name = {tool.name: tool for tool in tools}
    if tool_knob:
        return by_name.get(tool_knob, tools[0])
    if conversation.forced_tool is not None:
        return by_name.get(conversation.forced_tool, tools[0])
    lowered = last.text.lower()
    named = next((tool for tool in tools if tool.name.lower() in lowered), None)
    if named is not None:
        return named
    if tool_knob == "" or conversation.tool_mode == "required" or _TOOL_WORD.search(last.text):
        return tools[0]
    return None


def text_pieces(text: str) -> Iterator[str]:
    """Stream deltas of a text: one word with its trailing space each; their concatenation is ``text``."""
    yield from _PIECE.findall(text)


def json_pieces(text: str, size: int = 12) -> Iterator[str]:
    """Stream deltas of a JSON text (tool arguments), in fixed-size slices as providers send them."""
    for start in range(0, len(text), size):
        yield text[start : start + size]

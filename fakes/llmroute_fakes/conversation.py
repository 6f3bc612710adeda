"""Protocol-neutral values: what a chat request asked for, and what the fake answers.

Each protocol module parses its own wire format into a :class:`Conversation` and renders a
:class:`Reply` back into it; ``replies`` decides the reply from the conversation alone. Keeping the
decision here, apart from the wire formats, is what makes every protocol answer the same question the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Conversation", "FinishReason", "Reply", "Role", "ToolCall", "ToolDef", "ToolMode", "Turn"]

Role = Literal["user", "assistant", "tool"]
ToolMode = Literal["auto", "none", "required"]
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class Turn:
    """One message, reduced to its text. A ``tool`` turn carries a tool result."""

    role: Role
    text: str


@dataclass(frozen=True)
class ToolDef:
    name: str
    description: str = ""
    #: JSON Schema of the arguments (Gemini's OpenAPI-style schemas are accepted too).
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    system: str = ""
    tools: tuple[ToolDef, ...] = ()
    tool_mode: ToolMode = "auto"
    #: A tool the request forces (OpenAI/Anthropic/Bedrock ``tool_choice`` naming one tool).
    forced_tool: str | None = None
    #: The schema a structured-output request asks the text to follow.
    json_schema: Mapping[str, Any] | None = None
    #: JSON asked for without a schema (OpenAI ``json_object``, Gemini ``application/json``).
    json_mode: bool = False
    max_tokens: int | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any]
    #: The arguments as the JSON text the provider sends (OpenAI and Cohere carry a string).
    arguments_json: str


@dataclass(frozen=True)
class Reply:
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish: FinishReason
    prompt_tokens: int
    completion_tokens: int
    #: What a model says before calling a tool: Anthropic's and Bedrock's leading text block,
    #: Cohere's ``tool_plan``. Protocols whose models stay silent (OpenAI, Gemini) ignore it.
    preamble: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

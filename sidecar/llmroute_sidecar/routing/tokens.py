"""Token estimates for a chat request, without a tokenizer: what context fitting and cost need.

A tokenizer per provider would be exact but slow and heavy; routing only needs a bound that is
right to within tens of percent, computed in microseconds. The rule (also as text in :data:`RULE`):

- text: ``ceil(characters / 4)`` for ASCII text; for other text ``ceil(UTF-8 bytes / 4)``, which
  counts CJK and other multi-byte scripts at about 0.75 token per character, as real tokenizers do;
- each message adds :data:`MESSAGE_OVERHEAD` tokens (role and separators), each request
  :data:`REQUEST_OVERHEAD`;
- each image part costs :data:`IMAGE_TOKENS` (OpenAI's price of a 1024x1024 image at high detail),
  or :data:`IMAGE_TOKENS_LOW` when ``detail`` is ``low``;
- tool definitions cost the size of their JSON schema; tool calls the size of their arguments;
- the output budget is ``max_completion_tokens``, else ``max_tokens``, else
  :data:`DEFAULT_OUTPUT_TOKENS`.

Neighbours: ``context.py`` fits and truncates with these numbers, ``strategies.py`` prices them,
``complexity.py`` reads the input size as one of its features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "IMAGE_TOKENS",
    "IMAGE_TOKENS_LOW",
    "MESSAGE_OVERHEAD",
    "REQUEST_OVERHEAD",
    "RULE",
    "Estimate",
    "estimate_chat",
    "estimate_embeddings",
    "message_tokens",
    "output_budget",
    "text_tokens",
]

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3
IMAGE_TOKENS = 765
IMAGE_TOKENS_LOW = 85
DEFAULT_OUTPUT_TOKENS = 1024
RULE = (
    "tokens = ceil(chars/4) (UTF-8 bytes/4 for non-ASCII) + 4 per message + 3 per request "
    f"+ {IMAGE_TOKENS} per image + tool schemas by size; output = max_completion_tokens, "
    f"else max_tokens, else {DEFAULT_OUTPUT_TOKENS}"
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated tokens of one request: its input, and the output it may produce."""

    input_tokens: int
    output_tokens: int
    # Per-message input tokens, in message order (chat only), so truncation need not recount.
    per_message: tuple[int, ...] = ()
    # Image parts in the messages: the request needs a vision-capable backend.
    images: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def text_tokens(text: str) -> int:
    """Tokens of a piece of text (``str.isascii`` is O(1), so ASCII text costs a division)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
    return -(-size // CHARS_PER_TOKEN)


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return text_tokens(text) if isinstance(text, str) else 0
    if kind == "image_url":
        image = part.get("image_url")
        low = isinstance(image, dict) and image.get("detail") == "low"
        return IMAGE_TOKENS_LOW if low else IMAGE_TOKENS
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        # Base64 audio: ~10 tokens per second, ~16 kB of base64 per second of 16 kHz PCM.
        return len(data) // 1600 if isinstance(data, str) else 0
    return 0


def message_tokens(message: Any) -> int:
    """Tokens one chat message adds to the prompt, overhead included."""
    if not isinstance(message, dict):
        return 0
    tokens = MESSAGE_OVERHEAD
    content = message.get("content")
    if isinstance(content, str):
        tokens += text_tokens(content)
    elif isinstance(content, list):
        for part in content:
            tokens += _part_tokens(part)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                tokens += MESSAGE_OVERHEAD + text_tokens(str(function.get("name") or ""))
                tokens += text_tokens(str(function.get("arguments") or ""))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        tokens += text_tokens(str(legacy.get("arguments") or ""))
    return tokens


def _schema_tokens(value: Any) -> int:
    if not value:
        return 0
    try:
        return -(-len(orjson.dumps(value)) // CHARS_PER_TOKEN)
    except TypeError:
        return 0


def output_budget(body: Mapping[str, Any]) -> int:
    """The output the request may produce: its explicit limit, else the documented default."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_OUTPUT_TOKENS


def estimate_chat(body: Mapping[str, Any]) -> Estimate:
    """Estimate a chat completion request (an OpenAI-shaped body, already validated)."""
    messages = body.get("messages")
    per: list[int] = []
    images = 0
    for message in messages if isinstance(messages, list) else ():
        # Fast path for the common message, {role, content: ASCII text}: one call fewer per message.
        content = message.get("content") if type(message) is dict else None
        if type(content) is str and len(message) == 2 and content.isascii():
            per.append(MESSAGE_OVERHEAD + -(-len(content) // CHARS_PER_TOKEN))
            continue
        per.append(message_tokens(message))
        if type(content) is list:
            images += sum(1 for p in content if type(p) is dict and p.get("type") == "image_url")
    per_message = tuple(per)
    tools = _schema_tokens(body.get("tools")) + _schema_tokens(body.get("functions"))
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        tools += _schema_tokens(fmt.get("json_schema"))
    return Estimate(REQUEST_OVERHEAD + sum(per_message) + tools, output_budget(body), per_message, images)


def estimate_embeddings(body: Mapping[str, Any]) -> Estimate:
    """Estimate an embeddings request: the input text(s); embeddings produce no output tokens."""
    value = body.get("input")
    if isinstance(value, str):
        return Estimate(text_tokens(value), 0)
    total = 0
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                total += text_tokens(item)
            elif isinstance(item, int):  # a pre-tokenized input: a list of token ids
                total += 1
            elif isinstance(item, list):
                total += len(item)
    return Estimate(total, 0)

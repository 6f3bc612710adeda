"""What a request cost: the provider's usage in one shape, priced by the backend, in micro-USD. Pure.

- :func:`usage_of` reads an OpenAI-shaped ``usage`` (every adapter translates its provider's counts
  into it, cache reads in ``prompt_tokens_details.cached_tokens``).
- :func:`cost_micro` prices it: cached input tokens at ``cachedInputPerMillion`` where the backend
  sets one, the rest of the input at ``inputPerMillion``, the output at ``outputPerMillion``. Integer
  micro-USD, the unit of usage records, allowances and budgets, so sums never drift.
- :func:`estimate_micro` prices the planner's estimate (prompt tokens plus the output budget), which
  budgets reserve before an attempt and rate limits charge before the answer; the actual cost
  replaces it afterwards.
- :class:`RelayCount` counts what a stream relayed, for providers that send no usage (the record is
  then marked ``estimated``).

Neighbours: ``service.py`` calls these; ``routing/tokens.py`` holds the token-estimate rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config.snapshot import BackendEntry
from .routing.tokens import text_tokens

__all__ = ["RelayCount", "Usage", "cost_micro", "estimate_micro", "usage_of"]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(raw: Any) -> Usage | None:
    """An OpenAI ``usage`` object as :class:`Usage`; None when it is absent or not an object."""
    if not isinstance(raw, Mapping):
        return None
    details = raw.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    prompt = _count(raw.get("prompt_tokens"))
    return Usage(prompt, _count(raw.get("completion_tokens")), min(cached, prompt))


def cost_micro(backend: BackendEntry, usage: Usage) -> int:
    cached_price = (
        backend.cached_input_per_million
        if backend.cached_input_per_million is not None
        else backend.input_per_million
    )
    # tokens x USD-per-million-tokens is micro-USD exactly.
    micro = (
        (usage.input_tokens - usage.cached_tokens) * backend.input_per_million
        + usage.cached_tokens * cached_price
        + usage.output_tokens * backend.output_per_million
    )
    return round(micro)


def estimate_micro(backend: BackendEntry, input_tokens: int, output_tokens: int) -> int:
    """The most the request may cost on ``backend`` by the estimate (rounded up)."""
    if backend.free:
        return 0
    return math.ceil(input_tokens * backend.input_per_million + output_tokens * backend.output_per_million)


class RelayCount:
    """Output tokens of a stream by what it relayed: content, refusals and tool-call arguments."""

    __slots__ = ("_chars",)

    def __init__(self) -> None:
        self._chars: list[str] = []

    def feed(self, chunk: Mapping[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, Mapping) else None
            if not isinstance(delta, Mapping):
                continue
            for key in ("content", "refusal", "reasoning_content"):
                if isinstance(delta.get(key), str):
                    self._chars.append(delta[key])
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping) and isinstance(function.get("arguments"), str):
                    self._chars.append(function["arguments"])

    def tokens(self) -> int:
        return text_tokens("".join(self._chars)) if self._chars else 0

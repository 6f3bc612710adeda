"""Redaction: replacing detected PII with numbered placeholders, and the table to undo it.

``redact_chat`` (chat-completions bodies, through ``chat.py``) and ``redact_texts`` (embeddings
input) return the rewritten input and a :class:`Redaction`. One value gets one placeholder for the
whole request, so a model that sees ``<EMAIL_1>`` twice knows it is the same address. Numbers
already present in the request as placeholder-shaped text are skipped, so restoring never turns
the app's own ``<EMAIL_1>`` into someone's address. The Redaction restores responses and streams
(``restore.py``) and carries per-type counts for metrics; its repr shows counts, never values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .chat import map_prompt_texts, prompt_texts
from .detect import find_pii
from .placeholders import PLACEHOLDER, placeholder
from .restore import ChunkRestorer, restore_response, restore_text

__all__ = ["Redaction", "redact_chat", "redact_texts"]


@dataclass(frozen=True)
class Redaction:
    """What one request's redaction replaced: match counts per type, and (hidden from repr and
    equality) the placeholder -> original table that restoring uses."""

    counts: Counter[str] = field(default_factory=Counter)
    originals: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def __bool__(self) -> bool:
        return bool(self.originals)

    def restore_text(self, text: str) -> str:
        """``text`` with the placeholders this redaction issued put back."""
        return restore_text(self.originals, text)

    def restore_response(self, response: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` with content and tool-call arguments restored; ``response`` itself
        if nothing changed (it is never mutated)."""
        restored: dict[str, Any] = restore_response(self.originals, response)
        return restored

    def stream_restorer(self) -> ChunkRestorer:
        """A restorer for this request's stream of ``chat.completion.chunk`` dicts."""
        return ChunkRestorer(self.originals)


class _Issuer:
    """Hands out placeholders for one request."""

    def __init__(self, types: frozenset[str], texts: Iterable[str]) -> None:
        self._types = types
        self._reserved = frozenset(match.group() for text in texts for match in PLACEHOLDER.finditer(text))
        self._issued: dict[tuple[str, str], str] = {}
        self._last: Counter[str] = Counter()
        self.originals: dict[str, str] = {}
        self.counts: Counter[str] = Counter()

    def redact(self, text: str) -> str:
        matches = find_pii(text, self._types)
        if not matches:
            return text
        pieces: list[str] = []
        cursor = 0
        for match in matches:
            pieces.append(text[cursor : match.start])
            pieces.append(self._placeholder(match.type, text[match.start : match.end]))
            cursor = match.end
            self.counts[match.type] += 1
        pieces.append(text[cursor:])
        return "".join(pieces)

    def _placeholder(self, kind: str, value: str) -> str:
        issued = self._issued.get((kind, value))
        if issued is None:
            while True:
                self._last[kind] += 1
                issued = placeholder(kind, self._last[kind])
                if issued not in self._reserved:
                    break
            self._issued[kind, value] = issued
            self.originals[issued] = value
        return issued

    def redaction(self) -> Redaction:
        return Redaction(counts=self.counts, originals=MappingProxyType(self.originals))


def redact_chat(body: dict[str, Any], types: frozenset[str]) -> tuple[dict[str, Any], Redaction]:
    """A new chat-completions body with every match of ``types`` in its prompt texts replaced by a
    placeholder, and the :class:`Redaction` that undoes it. ``body`` is never mutated; if nothing
    matched, it is returned as is."""
    issuer = _Issuer(types, prompt_texts(body))
    new_body: dict[str, Any] = map_prompt_texts(body, issuer.redact)
    return new_body, issuer.redaction()


def redact_texts(texts: list[str], types: frozenset[str]) -> tuple[list[str], Redaction]:
    """Embeddings input redacted like :func:`redact_chat`: one placeholder table for all texts.
    Items that are not strings (token arrays) pass through unchanged."""
    strings = [text for text in texts if isinstance(text, str)]
    issuer = _Issuer(types, strings)
    redacted = [issuer.redact(text) if isinstance(text, str) else text for text in texts]
    return redacted, issuer.redaction()

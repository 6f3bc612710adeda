"""Incremental Server-Sent Events parsing, shared by the SSE-speaking adapters.

Feeds arrive split anywhere (mid-line, mid-UTF-8 sequence); :class:`SseParser` buffers bytes and
yields complete events. Only ``event`` and ``data`` fields matter to LLM providers; comments and
``id``/``retry`` are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser"]


@dataclass(frozen=True)
class SseEvent:
    event: str  # "" when the event had no event: line ("message" by the spec)
    data: str


class SseParser:
    """Bytes in, complete events out."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return events
            raw, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if self._data or self._event:
                    events.append(SseEvent(self._event, "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value

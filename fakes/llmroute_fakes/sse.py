"""Server-sent events: the framing of every streaming protocol here except Bedrock's.

Neighbours: protocol modules turn their events into frames with :func:`sse_frame`; ``streaming``
sends the frames with the in-stream fault knobs applied.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["SSE_CONTENT_TYPE", "sse_frame"]

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


def sse_frame(data: Any, *, event: str | None = None, newline: str = "\n") -> bytes:
    """One event: an optional ``event:`` line, one ``data:`` line, then a blank line.

    ``data`` is JSON-encoded unless it is already ``str``/``bytes`` (OpenAI's ``[DONE]``). The JSON
    has no newlines, so a single ``data:`` line always suffices. Gemini ends its lines with CRLF,
    hence ``newline``.
    """
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = orjson.dumps(data)
    head = f"event: {event}{newline}data: ".encode() if event else b"data: "
    end = (newline * 2).encode()
    return head + payload + end

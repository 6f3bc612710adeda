"""Sending a stream of frames (SSE events or event-stream messages) with the in-stream faults.

Neighbours: protocol handlers build their frames (``sse``, ``llmroute_sidecar.aws.eventstream``) and call
:func:`send_stream`; the knobs come from the request's ``FaultSpec`` (see ``faults``):
``slow_stream_ms`` between frames, ``error_event`` (the provider's in-stream error, then a proper end),
``cut_after`` (abrupt close) and ``truncate_after`` (a proper end, but no terminal event).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from .protocol import EXCHANGE
from .transport import close_abruptly

__all__ = ["send_stream"]


async def send_stream(
    request: web.Request,
    frames: Sequence[bytes],
    *,
    content_type: str,
    error_frame: Callable[[int | None], bytes],
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send ``frames`` as a chunked 200 response. ``error_frame(status)`` renders the in-stream error."""
    faults = request[EXCHANGE].faults
    response = web.StreamResponse(status=200, headers=headers)
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    delay = (faults.slow_stream_ms or 0) / 1000
    for index, frame in enumerate(frames):
        if index and delay:
            await asyncio.sleep(delay)
        if index == faults.error_event:
            await response.write(error_frame(faults.error_status))
            break
        if index == faults.cut_after:
            await close_abruptly(request)
            return response
        if index == faults.truncate_after:
            break
        await response.write(frame)
    await response.write_eof()
    return response

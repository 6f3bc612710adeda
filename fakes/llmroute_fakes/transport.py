"""Connection-level faults: a real TCP reset, and an abrupt close in the middle of a body.

Neighbours: ``app`` resets connections for the ``reset`` and ``hang`` knobs; ``streaming`` cuts
streams for ``cut_after``. Both act on the socket, never by sending an HTTP response, because the
point is to exercise the client's connection-error paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from aiohttp import web

__all__ = ["close_abruptly", "reset_connection"]

# SO_LINGER on with a zero timeout makes close() send RST instead of FIN: a "connection reset by peer".
_LINGER_RESET = struct.pack("ii", 1, 0)
_FLUSH_TIMEOUT_S = 1.0


def reset_connection(request: web.BaseRequest) -> None:
    """Abort the connection with a TCP RST; the client sees ECONNRESET, not a response."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


async def close_abruptly(request: web.BaseRequest) -> None:
    """Close the connection mid-body once what was written has left, without ending the body.

    ``abort()`` drops whatever is still buffered, so wait for the buffer to drain first: the client
    should receive exactly the chunks sent before the cut.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _FLUSH_TIMEOUT_S
    # Polling, because asyncio offers no "write buffer empty" event (only the high-water mark).
    while transport.get_write_buffer_size() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    transport.abort()

"""The types the server's modules share: handlers, middlewares, the error renderer, and the
:class:`Channel` a request and its response talk to (the connection, ``protocol.py``), declared
here so that ``request.py`` and ``response.py`` need not import the protocol that imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .errors import HTTPError
    from .request import Request
    from .response import Response, StreamResponse

__all__ = ["Channel", "ErrorRenderer", "Handler", "Middleware", "PrepareHook"]

Handler = Callable[["Request"], Awaitable["StreamResponse"]]
Middleware = Callable[["Request", Handler], Awaitable["StreamResponse"]]
ErrorRenderer = Callable[["HTTPError"], "Response"]
PrepareHook = Callable[["Request", "StreamResponse"], None]  # sync: it runs on every response


class Channel(Protocol):
    """What a request and its response need from their connection."""

    def send_continue(self) -> None:
        """``100 Continue``, when the client waits for it before sending the body."""

    def want_body(self) -> None:
        """A handler waits for the body: read from the socket again if reading was paused."""

    def start_response(self, request: Request, response: StreamResponse) -> None:
        """Write a streamed response's head."""

    def write(self, data: bytes) -> None:
        """Write bytes of the response; raises ConnectionResetError once the client is gone."""

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""

    def end_response(self, request: Request, response: StreamResponse) -> None:
        """A streamed response is complete."""

"""What a handler answers: a whole :class:`Response`, or a :class:`StreamResponse` written piece
by piece (SSE).

A :class:`Response` is only data until the handler returns it; the connection then writes its head
and body in one go, with a Content-Length. A :class:`StreamResponse` goes out as the handler writes
it: :meth:`~StreamResponse.prepare` sends the head (headers are settable until then), each
:meth:`~StreamResponse.write` one chunk of the chunked transfer encoding, and it waits while the
client reads slower than the handler writes (the socket's write buffer above its high-water mark),
so a slow reader holds the handler back rather than the sidecar's memory. Once the client is gone,
writes raise ``ConnectionResetError``, as aiohttp's do. Neighbours: ``headers.py``,
``protocol.py`` (the :class:`~.types.Channel` that does the writing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .headers import ResponseHeaders
from .wire import chunk

if TYPE_CHECKING:
    from .request import Request
    from .types import Channel

__all__ = ["Response", "StreamResponse"]


class StreamResponse:
    """A response whose body is written after its head has gone out."""

    __slots__ = ("_channel", "_eof", "_request", "chunked", "headers", "reason", "status")

    def __init__(
        self, *, status: int = 200, reason: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = ResponseHeaders(headers)
        self.chunked = False  # set by the connection when it frames the body in chunks
        self._channel: Channel | None = None
        self._request: Request | None = None
        self._eof = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type") or "application/octet-stream"

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers["content-type"] = value

    @property
    def prepared(self) -> bool:
        return self._channel is not None

    async def prepare(self, request: Request) -> None:
        """Send the head. Headers set after this are not sent."""
        if self._channel is not None:
            return
        request.channel.start_response(request, self)
        self._channel = request.channel
        self._request = request

    async def write(self, data: bytes) -> None:
        channel = self._channel
        if channel is None:
            raise RuntimeError("write() before prepare()")
        if self._eof:
            raise RuntimeError("write() after write_eof()")
        if not data:
            return
        if self.chunked:
            channel.write(chunk(data))
        else:
            channel.write(data)
        await channel.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof:
            return
        if data:
            await self.write(data)
        channel, request = self._channel, self._request
        if channel is None or request is None:
            raise RuntimeError("write_eof() before prepare()")
        self._eof = True
        channel.end_response(request, self)

    @property
    def finished(self) -> bool:
        return self._eof


class Response(StreamResponse):
    """A whole response: status, headers and body, written when the handler returns it."""

    __slots__ = ("body",)

    def __init__(
        self,
        *,
        body: bytes | None = None,
        text: str | None = None,
        status: int = 200,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        if text is not None:
            if body is not None:
                raise ValueError("body and text are exclusive")
            body = text.encode("utf-8")
            if content_type is None and "content-type" not in self.headers:
                content_type = "text/plain; charset=utf-8"
        self.body = body or b""
        if content_type is not None:
            self.headers["content-type"] = content_type
        elif "content-type" not in self.headers and self.body:
            self.headers["content-type"] = "application/octet-stream"

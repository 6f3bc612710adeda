"""One HTTP request as a handler sees it: method, path, query, headers, the body, path parameters.

The connection (``protocol.py``) creates it once the head is parsed, hands it to the application
at once, and feeds the body into it as the bytes arrive; :meth:`Request.read` waits for the whole
body. The body limit holds in both shapes a body can come in: a Content-Length above the limit is
refused before a byte of the body is read (and before ``100 Continue`` is sent, so a client that
asked first never sends it); a chunked body is refused as soon as its bytes pass the limit, and
what it sent is dropped. A gzip or deflate body (``Content-Encoding``) is decoded under the same
limit, as aiohttp's server decoded it. Neighbours: ``headers.py`` (the header map), ``app.py`` (the
application the request belongs to), ``types.py`` (the :class:`Channel` it reads through).
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

from .errors import HTTPBadRequest, HTTPRequestEntityTooLarge, HTTPUnsupportedEncoding
from .headers import Headers

if TYPE_CHECKING:
    from .app import Application
    from .response import StreamResponse
    from .types import Channel

__all__ = ["Request", "RequestKey", "decode_path", "decompress"]

T = TypeVar("T")


class RequestKey(Generic[T]):
    """A typed key of the per-request dict (``request[KEY] = value``), like aiohttp's."""

    __slots__ = ("name",)

    def __init__(self, name: str, _type: type[T] | None = None) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<RequestKey {self.name}>"


def decode_path(raw: bytes) -> str:
    """The request path as routes match it: percent-decoded, as UTF-8 (an invalid sequence becomes
    U+FFFD, so the path can always be put in a JSON error message)."""
    if raw.isascii() and b"%" not in raw:
        return raw.decode("ascii")
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A ``Content-Encoding: gzip`` or ``deflate`` body, decoded (as aiohttp's server did), with the
    body limit on what it decodes to: a small bomb is a 413, not a heap."""
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise HTTPUnsupportedEncoding(encoding)
    # gzip: the header is checked (wbits | 16); deflate: zlib-wrapped or raw, as clients vary.
    attempts = (zlib.MAX_WBITS | 16,) if encoding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in attempts:
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit or decoder.unconsumed_tail:
            raise HTTPRequestEntityTooLarge(limit)
        if not decoder.eof:
            break  # truncated
        return out
    raise HTTPBadRequest(f"the request body is not valid {encoding} data")


class Request:
    """A parsed request; its body arrives through :meth:`feed` and is read with :meth:`read`."""

    __slots__ = (
        "_body",
        "_chunks",
        "_complete",
        "_continue",
        "_failure",
        "_max_body",
        "_query",
        "_raw_query",
        "_received",
        "_state",
        "_too_large",
        "_waiter",
        "app",
        "channel",
        "headers",
        "keep_alive",
        "match_info",
        "method",
        "path",
        "response",
        "version",
    )

    def __init__(
        self,
        *,
        app: Application,
        channel: Channel,
        method: str,
        path: str,
        raw_query: bytes,
        version: str,
        headers: Headers,
        keep_alive: bool,
        max_body: int,
    ) -> None:
        self.app = app
        self.channel = channel
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.match_info: dict[str, str] = {}
        self.response: StreamResponse | None = None  # the one whose head went out, once it has
        self._raw_query = raw_query
        self._query: dict[str, str] | None = None
        self._state: dict[RequestKey[Any], Any] | None = None
        self._max_body = max_body
        self._chunks: list[bytes] = []
        self._received = 0
        self._complete = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._body: bytes | None = None
        # A client that sent "Expect: 100-continue" waits for our go before sending the body; it gets
        # it only when a handler reads the body, so a request refused from its head costs no upload.
        self._continue = version == "1.1" and headers.get("expect", "").lower() == "100-continue"
        length = self.content_length
        self._too_large = length is not None and length > max_body

    # -- what handlers read -----------------------------------------------------------------------

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        return int(raw) if raw is not None and raw.isdigit() else None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``application/octet-stream`` if none)."""
        raw = self.headers.get("content-type")
        if not raw:
            return "application/octet-stream"
        return raw.split(";", 1)[0].strip().lower()

    @property
    def query(self) -> dict[str, str]:
        """The query parameters (a repeated name keeps its first value)."""
        if self._query is None:
            query: dict[str, str] = {}
            if self._raw_query:
                text = self._raw_query.decode("latin-1")
                for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
                    query.setdefault(name, value)
            self._query = query
        return self._query

    async def read(self) -> bytes:
        """The whole body; 413 past the limit, 400 if the client sent a malformed one."""
        if self._body is not None:
            return self._body
        if self._too_large:
            raise HTTPRequestEntityTooLarge(self._max_body)
        while not self._complete:
            if self._failure is not None:
                raise self._failure
            if self._continue:
                self._continue = False
                self.channel.send_continue()
            self.channel.want_body()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self._too_large:
                raise HTTPRequestEntityTooLarge(self._max_body)
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        encoding = self.headers.get("content-encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            body = decompress(body, encoding.strip().lower(), self._max_body)
        self._body = body
        return body

    # -- the per-request dict -----------------------------------------------------------------------

    def __getitem__(self, key: RequestKey[T]) -> T:
        if self._state is None:
            raise KeyError(key)
        value: T = self._state[key]
        return value

    def __setitem__(self, key: RequestKey[T], value: T) -> None:
        if self._state is None:
            self._state = {}
        self._state[key] = value

    def get(self, key: RequestKey[T], default: T | None = None) -> T | None:
        if self._state is None:
            return default
        value: T | None = self._state.get(key, default)
        return value

    # -- what the connection feeds ------------------------------------------------------------------

    @property
    def body_complete(self) -> bool:
        return self._complete

    @property
    def body_too_large(self) -> bool:
        return self._too_large

    def feed(self, data: bytes) -> bool:
        """Bytes of the body; False once they pass the limit (the caller stops reading)."""
        if self._too_large:
            return False
        self._received += len(data)
        if self._received > self._max_body:
            self._too_large = True
            self._chunks = []  # never read now: free them
            self._wake()
            return False
        self._chunks.append(data)
        return True

    def finish(self) -> None:
        self._complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """The body will never be complete: malformed, or the client went away."""
        if not self._complete and self._failure is None:
            self._failure = error
            self._wake()

    def malformed(self, reason: str) -> None:
        self.fail(HTTPBadRequest(f"malformed request body: {reason}"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"

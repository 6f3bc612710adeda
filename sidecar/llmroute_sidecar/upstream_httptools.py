"""The provider-facing HTTP/1.1 client on httptools' parser: the sidecar's default hot path.

Same contract as :class:`~llmroute_sidecar.upstream_aiohttp.Upstream` (``open(request, adapter)`` returns an
open 2xx response with ``read()``/``iter_chunks()``/``close()``; transport failures are
:class:`ProviderError` of kind CONNECTION; non-2xx answers are classified by the backend's adapter).
Why not aiohttp's client, which the sidecar used first: per request it builds a ``ClientRequest``,
a ``ClientResponse``, timer and tracing hooks, cookie and redirect handling, and yarl URLs, about
100 µs of CPU per call on this machine, more than all of the sidecar's routing. The sidecar needs none
of that: adapters hand it a finished request (percent-encoded URL, headers, bytes body), there are no
cookies, no redirects (a provider answering 3xx is an error, as before), and the attempt loop owns
timeouts and cancellation. So this module keeps only the part that matters, one keep-alive
connection pool per origin on ``asyncio.Protocol``, and leaves HTTP parsing to ``httptools`` (the
llhttp parser uvicorn uses): chunked bodies, pipelining guards and malformed answers are llhttp's job,
not ours. Measured in ``make bench`` against the aiohttp client (``docs/performance.md``).

What it does: HTTP/1.1 over TCP or TLS (the system's default trust store, SNI), keep-alive with
idle expiry (the backends' ``maxConcurrency`` bounds connections, in ``load/``), ``gzip``/``deflate`` decoding (no
``Accept-Encoding`` is sent, so providers answer uncompressed anyway), streaming with flow control
(reading pauses while the app has not taken 256 KiB), and a connection that is cancelled, cut or
not read to its end is closed rather than reused. It does not do proxies (``HTTPS_PROXY``), HTTP/2
or redirects; neither did the aiohttp client as configured here.
Neighbours: ``upstream.py`` (the contract, ``make_upstream``), ``attempts.py`` (its only caller).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from .adapters.base import ProviderAdapter, UpstreamRequest
from .adapters.errors import ErrorKind, ProviderError

__all__ = ["HttptoolsUpstream"]

_KEEPALIVE_SECONDS = 15.0  # aiohttp's default: providers keep idle connections about that long
_PAUSE_AT = 256 * 1024  # buffered, unread stream bytes at which reading from the socket pauses
_ROUTES_CACHED = 4096  # parsed URLs kept (backends have one or two each; Bedrock/Google per model)
_BAD_HEADER = frozenset("\r\n\0")
_OURS = frozenset({"content-length", "host", "transfer-encoding", "connection"})  # this module writes them


_Origin = tuple[str, str, int]  # scheme, host, port: a plain tuple, whose hash is C (a pool's dict key)


def _authority(origin: _Origin) -> bytes:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return (host if port == (443 if scheme == "https" else 80) else f"{host}:{port}").encode("ascii")


@dataclass(frozen=True, slots=True)
class _Route:
    """A URL split once: where to connect and what to put on the request line."""

    origin: _Origin
    target: bytes
    head: bytes  # "<target> HTTP/1.1\r\nHost: ...\r\n" without the method


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed as bytes arrive."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.lost: BaseException | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.head_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProviderError(ErrorKind.CONNECTION, f"malformed HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # close the transport: connection_lost decides whether the answer was whole

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.head_done.done() and self._reads_to_eof():
            self._message_done()  # no length, not chunked: the answer ends where the connection does
            return
        reason = f": {exc}" if exc else ""
        self._fail(ProviderError(ErrorKind.CONNECTION, f"connection failed: server disconnected{reason}"))

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.head_done.done():
            self.head_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= _PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._message_done()

    # -- helpers ----------------------------------------------------------------------------------

    def _message_done(self) -> None:
        self.complete = True
        self.keep_alive = not self.closed and self.parser.should_keep_alive()
        if not self.head_done.done():
            self.head_done.set_result(None)
        self._wake()

    def _reads_to_eof(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ProviderError) -> None:
        if self.complete or self.lost is not None:
            return
        self.lost = error
        if not self.head_done.done():
            self.head_done.set_exception(error)
            self.head_done.exception()  # retrieved: a request cancelled meanwhile must not warn
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.lost is None

    def send(self, method: str, route: _Route, headers: bytes, body: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(
            b"".join((method.encode("ascii"), b" ", route.head, headers, b"content-length: ",
                      str(len(body)).encode("ascii"), b"\r\n\r\n", body))
        )  # fmt: skip

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self.chunks:
                data = self.chunks.popleft()
                self.buffered -= len(data)
                if self.paused and self.buffered < _PAUSE_AT // 2 and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            await self.more()

    async def more(self) -> None:
        """Wait for more of the answer (a piece of body, its end, or the connection's loss)."""
        if self.lost is not None:
            raise self.lost
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class _Decoder:
    """Undoes ``Content-Encoding: gzip`` or ``deflate`` (zlib-wrapped or raw, as servers vary)."""

    def __init__(self, encoding: str) -> None:
        self._raw_fallback = encoding == "deflate"
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding == "gzip" else zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data)
        except zlib.error:
            if self._raw_fallback and not self._started:
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                self._raw_fallback = False
                out = self._z.decompress(data)
            else:
                raise
        self._started = True
        return out


class _Response:
    """An open 2xx response; the caller reads it and must call :meth:`close`."""

    __slots__ = ("_conn", "_decoder", "_pool", "_released")

    def __init__(self, conn: _Connection, pool: HttptoolsUpstream, decoder: _Decoder | None) -> None:
        self._conn = conn
        self._pool = pool
        self._decoder = decoder
        self._released = False

    async def read(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            await conn.more()
        data = b"".join(conn.chunks)
        conn.chunks.clear()
        conn.buffered = 0
        if self._decoder is not None:
            data = _decode(self._decoder, data)
        self.close()
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            # Once released, the connection may carry another request: never read from it again.
            while not self._released and (data := await self._conn.next_chunk()) is not None:
                if self._decoder is not None:
                    data = _decode(self._decoder, data)
                    if not data:
                        continue
                yield data
        finally:
            self.close()

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._conn)


def _decode(decoder: _Decoder, data: bytes) -> bytes:
    try:
        return decoder.feed(data)
    except zlib.error as exc:
        raise ProviderError(ErrorKind.CONNECTION, f"undecodable compressed answer: {exc}") from exc


class HttptoolsUpstream:
    """The provider-facing HTTP/1.1 client: keep-alive pools per origin, httptools parsing."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, keepalive_seconds: float = _KEEPALIVE_SECONDS
    ) -> None:
        self._idle: dict[_Origin, collections.deque[_Connection]] = {}
        self._ssl = ssl_context
        self._keepalive = keepalive_seconds
        self._routes: dict[str, _Route] = {}
        self._closed = False

    # -- the UpstreamClient contract --------------------------------------------------------------

    async def open(self, request: UpstreamRequest, adapter: ProviderAdapter) -> _Response:
        """Send ``request``; return the open 2xx response or raise a classified ProviderError."""
        route = self._route(request.url, adapter)
        headers = _header_block(request.headers, adapter)
        conn = await self._connection(route.origin, adapter)
        try:
            conn.send(request.method, route, headers, request.body)
            await conn.head_done
        except BaseException:
            conn.close()  # cancelled or cut before the answer's head: never reused
            raise
        encoding = _header(conn.headers, b"content-encoding")
        decoder = None
        if encoding and encoding not in ("identity", ""):
            if encoding not in ("gzip", "deflate"):
                conn.close()
                raise ProviderError(
                    ErrorKind.CONNECTION, f"unsupported content-encoding {encoding!r}", provider=adapter.name
                )
            decoder = _Decoder(encoding)
        response = _Response(conn, self, decoder)
        if conn.status >= 300:
            try:
                body = await response.read()
            except (ProviderError, TimeoutError):
                body = b""
            finally:
                response.close()
            raise adapter.error(conn.status, _header_dict(conn.headers), body)
        return response

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    # -- pool -------------------------------------------------------------------------------------

    async def _connection(self, origin: _Origin, adapter: ProviderAdapter) -> _Connection:
        idle = self._idle.get(origin)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to be closed by now
                if not conn.closed and now - conn.idle_since < self._keepalive:
                    return conn
                conn.close()
        loop = asyncio.get_running_loop()
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        try:
            _, protocol = await loop.create_connection(
                lambda: _Connection(origin),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        except ssl.SSLError as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"TLS handshake failed: {exc}", provider=adapter.name
            ) from exc
        except OSError as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"cannot connect: {exc}", provider=adapter.name
            ) from exc
        return protocol

    def release(self, conn: _Connection) -> None:
        """Back to the pool when its answer was read whole and it may stay open; else closed."""
        if not conn.reusable or self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.get(conn.origin)
        if idle is None:
            idle = self._idle[conn.origin] = collections.deque()
        idle.append(conn)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _route(self, url: str, adapter: ProviderAdapter) -> _Route:
        route = self._routes.get(url)
        if route is None:
            route = _split(url, adapter)
            if len(self._routes) >= _ROUTES_CACHED:
                self._routes.clear()
            self._routes[url] = route
        return route


def _split(url: str, adapter: ProviderAdapter) -> _Route:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ProviderError(ErrorKind.CONNECTION, f"bad upstream URL: {exc}", provider=adapter.name) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(
            ErrorKind.CONNECTION, f"bad upstream URL scheme or host: {parts.scheme}://", provider=adapter.name
        )
    origin = (parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c in _BAD_HEADER or c == " " for c in target) or not target.isascii():
        raise ProviderError(ErrorKind.CONNECTION, "bad upstream URL path", provider=adapter.name)
    encoded = target.encode("ascii")
    return _Route(origin, encoded, encoded + b" HTTP/1.1\r\nhost: " + _authority(origin) + b"\r\n")


def _header_block(headers: Mapping[str, str], adapter: ProviderAdapter) -> bytes:
    """The request's header lines; a name or value that could split the request is refused."""
    lines: list[str] = []
    for name, value in headers.items():
        if not _BAD_HEADER.isdisjoint(name) or not _BAD_HEADER.isdisjoint(value):
            raise ProviderError(
                ErrorKind.BAD_REQUEST, f"the request header {name!r} has a line break", provider=adapter.name
            )
        if name.lower() not in _OURS:
            lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ProviderError(
            ErrorKind.BAD_REQUEST, "a request header is not Latin-1 text", provider=adapter.name
        ) from exc


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip().lower()
    return ""


def _header_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in headers}

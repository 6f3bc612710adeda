"""One client connection: HTTP/1.1 (and 1.0) on ``asyncio.Protocol``, parsed by httptools.

httptools (llhttp, the parser uvicorn and Node use) does the parsing: request lines, headers,
Content-Length and chunked bodies, and the refusal of malformed or ambiguous input (a request with
both Content-Length and chunked, a bare LF, a bad chunk size). This module does the rest, and only
what the sidecar's fronts need; aiohttp's server did it for ~30 µs more per request:

* requests are answered one at a time, in the order they came (pipelining): each one gets a
  :class:`~.request.Request` once its head is parsed, and the handler runs while the body arrives;
* limits: the request target (414), the header fields (431, counted also while a header line is
  still arriving, since llhttp buffers it), the body (413, ``request.py``), the pipelined requests
  waiting (reading pauses);
* ``Connection: close``, HTTP/1.0 without keep-alive, an answer sent before the body was read, a
  malformed request: the answer says ``connection: close`` and the connection closes after it. When
  the client may still be sending, it closes by a lingering close (FIN, drop what arrives, close),
  so that its kernel does not reset the connection before the client reads the answer;
* an idle keep-alive timeout (75 s, aiohttp's), which also ends a client that stopped reading a
  streamed answer for that long;
* a client that disconnects: bodies being read fail, writes raise ``ConnectionResetError``, and the
  handler is not cancelled (aiohttp's default), so what it was doing, usage records included, ends;
* a graceful stop (``server.py``): an idle connection closes at once, a busy one after its answer.

Neighbours: ``server.py`` (listens, tracks these, stops them), ``request.py``, ``response.py``,
``app.py`` (the handler and the error renderer).
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools

from .errors import (
    HTTPBadRequest,
    HTTPError,
    HTTPHeaderFieldsTooLarge,
    HTTPInternalError,
    HTTPURITooLong,
)
from .headers import Headers
from .request import Request, decode_path
from .response import Response, StreamResponse

if TYPE_CHECKING:
    from .app import Application

__all__ = ["Connections", "HttpProtocol", "Limits"]

log = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection accepts; the body limit is the application's (``client_max_size``)."""

    max_target: int = 16 * 1024  # the request line's target (URL): 414 past it
    max_header_bytes: int = 32 * 1024  # all header names and values together: 431 past it
    max_headers: int = 128  # header fields: 431 past it
    keepalive_seconds: float = 75.0  # an idle connection closes after this (aiohttp's default)
    max_pipelined: int = 16  # requests parsed and waiting: reading pauses at this many
    linger_seconds: float = 2.0  # a lingering close drops what the client still sends this long


class Connections:
    """The open connections of one server, so that a stop can reach them and wait for them."""

    def __init__(self) -> None:
        self.open: set[HttpProtocol] = set()
        self.stopping = False
        self._empty: asyncio.Event | None = None

    def add(self, conn: HttpProtocol) -> None:
        self.open.add(conn)

    def discard(self, conn: HttpProtocol) -> None:
        self.open.discard(conn)
        if not self.open and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        if not self.open:
            return
        self._empty = asyncio.Event()
        await self._empty.wait()


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal is kept on the protocol."""


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int, reason: str | None) -> bytes:
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is None:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Unknown"
            line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")
        return line
    reason = reason.replace("\r", " ").replace("\n", " ")
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1", "replace")


def _encode_head(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        # Non-Latin-1 header values go out as UTF-8 (as aiohttp sent them); bytes that came in as
        # lone surrogates (surrogateescape) go back out as they came.
        return text.encode("utf-8", "surrogateescape")


class HttpProtocol(asyncio.Protocol):
    """A server connection; see the module's docstring for what it does."""

    def __init__(self, app: Application, *, limits: Limits, connections: Connections) -> None:
        self._app = app
        self._limits = limits
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # the head being parsed
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._in_head = False
        self._head_fresh = False  # the head began in the chunk being fed
        self._head_pending = 0  # bytes fed while a head was incomplete (llhttp buffers a partial line)
        self._refusal: HTTPError | None = None
        self._parsing: Request | None = None  # whose body the parser is feeding
        # answering
        self._queue: collections.deque[Request | HTTPError] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._current: Request | None = None
        # state of the connection
        self._closed = False  # lost
        self._closing = False  # close after the answer being written
        self._stopping = False  # the server is stopping
        self._broken = False  # the parser failed or the protocol was upgraded: parse nothing more
        self._discarding = False  # lingering close: drop what arrives
        self._eof = False  # the client sends nothing more
        self._stopped_reading = False  # for good: a refused body, a broken stream
        self._pipeline_paused = False
        self._write_paused = False
        self._paused_at = 0.0
        self._drain_waiter: asyncio.Future[None] | None = None
        self._last_active = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self._connections.add(self)
        self._last_active = self._loop.time()
        self._timer = self._loop.call_later(self._limits.keepalive_seconds, self._on_timer)
        if self._connections.stopping:  # accepted while the server stops
            self._stopping = True
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._last_active = self._loop.time()
        if self._discarding or self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
            return
        except httptools.HttpParserCallbackError as exc:
            refusal = self._refusal
            if refusal is None:
                log.error("HTTP front: a parser callback failed", exc_info=exc.__context__ or exc)
                refusal = HTTPInternalError("internal error in the llmroute sidecar; see its logs")
            self._fail_parsing(refusal)
            return
        except httptools.HttpParserError as exc:
            self._fail_parsing(HTTPBadRequest(f"malformed HTTP request: {_reason(exc)}"))
            return
        if self._in_head:
            # llhttp keeps a header line that has not ended yet in memory: bound it by the bytes
            # fed since the head began (a chunk in which it began is not counted; it is bounded).
            if self._head_fresh:
                self._head_fresh = False
            else:
                self._head_pending += len(data)
                limits = self._limits
                if self._head_pending > limits.max_header_bytes + limits.max_target:
                    self._fail_parsing(HTTPHeaderFieldsTooLarge("the head never ends"))

    def eof_received(self) -> bool | None:
        # The client will send nothing more. A body still arriving never will; a request being
        # answered still gets its answer (keep the transport open for writing), then we close.
        self._closing = True
        self._eof = True
        if self._parsing is not None:  # still listening: it gets a 400 that says why
            self._parsing.fail(
                HTTPBadRequest("the request body is incomplete: the client stopped sending it")
            )
            self._parsing = None
        return self._task is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connections.discard(self)
        gone = ConnectionResetError("the client disconnected")
        if self._parsing is not None:
            self._parsing.fail(gone)
        for item in self._queue:
            if isinstance(item, Request):
                item.fail(gone)
        self._queue.clear()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(gone)
            waiter.exception()  # retrieved: a handler that stopped waiting must not warn

    def pause_writing(self) -> None:
        self._write_paused = True
        self._paused_at = self._loop.time()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_fresh = True
        self._head_pending = 0
        self._url = b""
        self._raw_headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_target:
            raise self._refuse(HTTPURITooLong(self._limits.max_target))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))
        self._header_bytes += len(name) + len(value) + 4
        limits = self._limits
        if self._header_bytes > limits.max_header_bytes:
            raise self._refuse(HTTPHeaderFieldsTooLarge(f"more than {limits.max_header_bytes} bytes"))
        if len(self._raw_headers) > limits.max_headers:
            raise self._refuse(HTTPHeaderFieldsTooLarge(f"more than {limits.max_headers} fields"))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise self._refuse(HTTPBadRequest(f"HTTP/{version} is not supported here; use HTTP/1.1"))
        raw_path, raw_query = _split_target(self._url)
        if raw_path is None:
            raise self._refuse(HTTPBadRequest("malformed request target"))
        request = Request(
            app=self._app,
            channel=self,
            method=parser.get_method().decode("ascii"),
            path=decode_path(raw_path),
            raw_query=raw_query,
            version=version,
            headers=Headers(self._raw_headers),
            keep_alive=parser.should_keep_alive(),
            max_body=self._app.client_max_size,
        )
        self._raw_headers = []
        self._parsing = request
        if request.body_too_large:
            self._stop_reading()  # refused from its Content-Length: nobody will read the body
        self._enqueue(request)

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        if request is not None and not request.feed(body):
            self._stop_reading()

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is not None:
            self._parsing = None
            request.finish()

    # -- parsing helpers ----------------------------------------------------------------------------

    def _refuse(self, error: HTTPError) -> _Refused:
        """Stop the parser (from inside a callback) with ``error`` as the answer."""
        self._refusal = error
        raise _Refused(error.message)

    def _fail_parsing(self, error: HTTPError) -> None:
        """Nothing more is parsed on this connection: answer what came before, then ``error``."""
        self._broken = True
        self._closing = True
        self._stop_reading()
        if self._parsing is not None:  # inside a body: the request is being answered already
            self._parsing.fail(error)
            self._parsing = None
            return
        self._enqueue(error)

    def _upgraded(self) -> None:
        # An Upgrade (or CONNECT) request: what follows is not HTTP. It is answered as a plain
        # request (no route upgrades) and the connection closes after it.
        self._broken = True
        self._closing = True
        self._stop_reading()
        if self._parsing is not None:
            self._parsing.finish()
            self._parsing = None

    def _stop_reading(self) -> None:
        if not self._stopped_reading:
            self._stopped_reading = True
            if self._transport is not None and not self._pipeline_paused and not self._closed:
                self._transport.pause_reading()

    def _enqueue(self, item: Request | HTTPError) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._serve(item))
            return
        self._queue.append(item)
        if len(self._queue) >= self._limits.max_pipelined and not self._pipeline_paused:
            self._pipeline_paused = True
            if self._transport is not None and not self._stopped_reading and not self._closed:
                self._transport.pause_reading()

    # -- the Channel a request and its response use -------------------------------------------------

    def send_continue(self) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(_CONTINUE)

    def want_body(self) -> None:
        # The body of the request being answered comes before any pipelined request, so reading
        # paused for those must not keep it waiting.
        if self._pipeline_paused and not self._closed and self._transport is not None:
            self._pipeline_paused = False
            if not self._stopped_reading:
                self._transport.resume_reading()

    def write(self, data: bytes) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("the client disconnected")
        if not self._write_paused:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def start_response(self, request: Request, response: StreamResponse) -> None:
        if request.response is not None:
            raise RuntimeError("this request's response has started already")
        self._app.prepare_hooks(request, response)
        headers = response.headers
        extra = ""
        if "content-length" not in headers:
            if request.version == "1.1":
                response.chunked = True
                extra = "transfer-encoding: chunked\r\n"
            else:
                self._closing = True  # HTTP/1.0: the body ends where the connection does
        close = self._must_close(request)
        if close:
            extra += "connection: close\r\n"
        elif request.version == "1.0":
            extra += "connection: keep-alive\r\n"
        head = _status_line(response.status, response.reason) + _encode_head(headers.block() + extra + "\r\n")
        self.write(head)
        request.response = response

    def end_response(self, request: Request, response: StreamResponse) -> None:
        if response.chunked:
            self.write(b"0\r\n\r\n")
        self._last_active = self._loop.time()

    # -- answering ----------------------------------------------------------------------------------

    async def _serve(self, item: Request | HTTPError) -> None:
        """Answer ``item`` and whatever is queued behind it, in order; one task per burst."""
        try:
            while True:
                if isinstance(item, HTTPError):
                    self._write_whole(None, self._app.render_error(item))
                    self._close_after()
                    return
                self._current = item
                try:
                    await self._respond(item)
                finally:
                    self._current = None
                if self._closed:
                    return
                if self._closing or self._stopping:
                    self._close_after()
                    return
                if not self._queue:
                    return
                item = self._queue.popleft()
                if self._pipeline_paused and len(self._queue) < self._limits.max_pipelined // 2:
                    self._pipeline_paused = False
                    if not self._stopped_reading and self._transport is not None:
                        self._transport.resume_reading()
        finally:
            self._task = None

    async def _respond(self, request: Request) -> None:
        app = self._app
        try:
            response = await app.handle(request)
        except HTTPError as exc:
            response = app.render_error(exc)
        except ConnectionResetError:
            if self._closed or request.response is not None:
                self._abort()
                return
            log.exception("HTTP front: unhandled error on %s %s", request.method, request.path)
            response = app.render_error(_internal())
        except Exception:
            log.exception("HTTP front: unhandled error on %s %s", request.method, request.path)
            response = app.render_error(_internal())
        started = request.response
        if started is not None:
            if response is not started:
                # An answer after another's head went out cannot be sent: end the connection, so
                # the client sees a cut answer rather than a complete-looking one.
                self._abort()
                return
            if not started.finished and not self._closed:
                try:
                    await started.write_eof()
                except ConnectionResetError:
                    self._abort()
            return
        if self._closed:
            return
        if isinstance(response, Response):
            self._write_whole(request, response)
            return
        try:  # a StreamResponse never prepared: its head and an empty body
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            self._abort()

    def _write_whole(self, request: Request | None, response: Response) -> None:
        """A whole response in one write: head, Content-Length, body."""
        if self._closed or self._transport is None:
            return
        if request is not None:
            try:
                self._app.prepare_hooks(request, response)
            except Exception:
                log.exception("HTTP front: a response hook failed")
            close = self._must_close(request)
            version, head_only = request.version, request.method == "HEAD"
        else:
            close, version, head_only = True, "1.1", False
            self._closing = True
        body = response.body
        status = response.status
        extra = ""
        if status in _NO_BODY or status < 200:
            body = b""
        else:
            extra = f"content-length: {len(body)}\r\n"
        if close:
            extra += "connection: close\r\n"
        elif version == "1.0":
            extra += "connection: keep-alive\r\n"
        head = _status_line(status, response.reason) + _encode_head(response.headers.block() + extra + "\r\n")
        if head_only or not body:
            self._transport.write(head)
        elif len(body) < 16 * 1024:
            self._transport.write(head + body)  # one write, one syscall
        else:
            self._transport.writelines((head, body))
        self._last_active = self._loop.time()

    def _must_close(self, request: Request) -> bool:
        """Whether the connection ends after this answer (and so the answer says so)."""
        if self._closing or self._stopping or not request.keep_alive or not request.body_complete:
            self._closing = True
            return True
        return False

    def _close_after(self) -> None:
        """The last answer is written: close, lingering when the client may still be sending."""
        transport = self._transport
        if transport is None or self._closed:
            return
        parsing_left = self._broken or self._stopped_reading or self._parsing is not None
        current_unread = self._current is not None and not self._current.body_complete
        if (parsing_left or current_unread) and not self._eof and transport.can_write_eof():
            self._discarding = True
            transport.write_eof()
            if self._stopped_reading or self._pipeline_paused:
                transport.resume_reading()
            self._loop.call_later(self._limits.linger_seconds, transport.close)
        else:
            transport.close()

    def _abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.abort()

    # -- time and stopping --------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._transport is None:
            return
        now = self._loop.time()
        timeout = self._limits.keepalive_seconds
        if self._task is not None:
            if self._write_paused and now - self._paused_at >= timeout:
                # The client has not read our answer for that long: it is not coming back.
                self._abort()
                return
            current = self._current
            if current is not None and not current.body_complete and now - self._last_active >= timeout:
                self._abort()  # a body that stopped arriving: its reader gets ConnectionResetError
                return
            wait = timeout - (now - self._paused_at) if self._write_paused else timeout
        else:
            idle = now - self._last_active
            if idle >= timeout:
                self._transport.close()
                return
            wait = timeout - idle
        self._timer = self._loop.call_later(max(wait, 0.01), self._on_timer)

    def shutdown(self) -> None:
        """The server stops: close now when idle, else after the answer being written."""
        self._stopping = True
        if self._task is None and self._transport is not None and not self._closed:
            self._transport.close()

    def abort(self) -> None:
        """The stop's grace is over: cut the connection and cancel its handler."""
        self._abort()
        if self._task is not None:
            self._task.cancel()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task


def _split_target(url: bytes) -> tuple[bytes, bytes] | tuple[None, bytes]:
    """(path, query) of a request target: origin form (``/p?q``), absolute form, or ``*``."""
    if url[:1] == b"/":
        target = url.partition(b"#")[0]
        path, _, query = target.partition(b"?")
        return path, query
    if url == b"*":
        return b"*", b""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return None, b""
    return parsed.path or b"/", parsed.query or b""


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if text.isprintable() else repr(text)


def _internal() -> HTTPInternalError:
    return HTTPInternalError("internal error in the llmroute sidecar; see its logs")

"""One client connection of the sidecar's HTTP/1.1 server (and 1.0), on ``asyncio.Protocol``.

``parsing.py`` turns the bytes into requests; this module answers them, and only as the sidecar's
fronts need (aiohttp's server did it for ~30 µs of CPU more per request):

* one at a time, in the order they came (pipelining); reading pauses while many wait;
* ``Connection: close``, HTTP/1.0 without keep-alive, an answer sent before the body was read, a
  malformed request: the answer says ``connection: close`` and the connection closes after it. When
  the client may still be sending, by a lingering close (FIN, drop what arrives, close), so that
  its kernel does not reset the connection before the client has read the answer;
* writes with flow control (``drain`` waits while the socket's buffer is above its high-water mark);
* an idle keep-alive timeout (75 s, aiohttp's), which also ends a client that stopped reading an
  answer, or sending a body, for that long;
* a client that disconnects: bodies being read fail, writes raise ``ConnectionResetError``, and the
  handler is not cancelled (aiohttp's default), so what it was doing, usage records included, ends;
* a graceful stop (``server.py``): an idle connection closes at once, a busy one after its answer.

Neighbours: ``parsing.py``, ``wire.py`` (the bytes of answers), ``server.py`` (listens, tracks these
in ``connections.py``, stops them), ``app.py`` (the handler and the error renderer).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, cast

from .errors import HTTPBadRequest, HTTPError, HTTPInternalError
from .parsing import RequestReader
from .request import Request
from .response import Response, StreamResponse
from .wire import CONTINUE, LAST_CHUNK, stream_head, whole_head

if TYPE_CHECKING:
    from .app import Application
    from .connections import Connections
    from .limits import Limits

__all__ = ["HttpProtocol"]

log = logging.getLogger(__name__)


class HttpProtocol(asyncio.Protocol):
    """A server connection; see the module's docstring for what it does."""

    def __init__(self, app: Application, *, limits: Limits, connections: Connections) -> None:
        self._app = app
        self._limits = limits
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._reader = RequestReader(
            app, channel=self, limits=limits, deliver=self._enqueue, stop_reading=self._stop_reading
        )
        self._transport: asyncio.Transport | None = None
        # answering
        self._queue: collections.deque[Request | HTTPError] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._current: Request | None = None
        # state of the connection
        self._closed = False  # lost
        self._closing = False  # close after the answer being written
        self._stopping = False  # the server is stopping
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
        reader = self._reader
        if self._discarding or reader.broken:
            return
        reader.feed(data)
        if reader.broken:
            self._closing = True  # answer what came before the bad bytes, then close

    def eof_received(self) -> bool | None:
        # The client will send nothing more. A body still arriving never will; the requests it
        # sent whole still get their answers (the transport stays open for writing), then we close.
        self._eof = True
        # A handler still listening gets a 400 that says why.
        self._reader.body_ends_early(
            HTTPBadRequest("the request body is incomplete: the client stopped sending it")
        )
        return self._task is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connections.discard(self)
        gone = ConnectionResetError("the client disconnected")
        self._reader.body_ends_early(gone)
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

    # -- reading ----------------------------------------------------------------------------------

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
            self._transport.write(CONTINUE)

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
        head, response.chunked, close = stream_head(
            response.status,
            response.reason,
            response.headers,
            close=self._must_close(request),
            version=request.version,
        )
        self._closing = self._closing or close
        self.write(head)
        request.response = response

    def end_response(self, request: Request, response: StreamResponse) -> None:
        if response.chunked:
            self.write(LAST_CHUNK)
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
                    if self._eof:
                        self._close_after()
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
        transport = self._transport
        if self._closed or transport is None:
            return
        if request is not None:
            try:
                self._app.prepare_hooks(request, response)
            except Exception:
                log.exception("HTTP front: a response hook failed")
            head, body = whole_head(response, close=self._must_close(request), version=request.version)
            if request.method == "HEAD":
                body = b""
        else:  # refused before a request existed: the connection ends after this
            self._closing = True
            head, body = whole_head(response, close=True, version="1.1")
        if not body:
            transport.write(head)
        elif len(body) < 16 * 1024:
            transport.write(head + body)  # one write, one syscall
        else:
            transport.writelines((head, body))
        self._last_active = self._loop.time()

    def _must_close(self, request: Request) -> bool:
        """Whether the connection ends after this answer (and so the answer says so)."""
        last = self._eof and not self._queue  # the client has sent all it will
        if self._closing or self._stopping or last or not request.keep_alive or not request.body_complete:
            self._closing = True
            return True
        return False

    def _close_after(self) -> None:
        """The last answer is written: close, lingering when the client may still be sending."""
        transport = self._transport
        if transport is None or self._closed:
            return
        parsing_left = self._reader.broken or self._stopped_reading or self._reader.parsing is not None
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


def _internal() -> HTTPInternalError:
    return HTTPInternalError("internal error in the llmroute sidecar; see its logs")

"""Bytes in, requests out: httptools' callbacks turned into :class:`~.request.Request` objects.

httptools (llhttp, the parser uvicorn and Node use) does the parsing: request lines, headers,
Content-Length and chunked bodies, and the refusal of malformed or ambiguous input (both
Content-Length and chunked, a bare LF, a bad chunk size). This module adds the limits llhttp does
not have: the request target (414), the header fields (431, counted also while a header line is
still arriving, since llhttp keeps it in memory until it ends), and feeds each body into its
request, which holds the body limit (413). A request is delivered as soon as its head is parsed, so
its handler runs while the body arrives; what cannot be parsed is delivered as an
:class:`~.errors.HTTPError` in its place, and nothing after it is parsed.
Neighbours: ``protocol.py`` (owns one reader per connection and answers what it delivers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from .errors import HTTPBadRequest, HTTPError, HTTPHeaderFieldsTooLarge, HTTPInternalError, HTTPURITooLong
from .headers import Headers
from .request import Request, decode_path
from .wire import split_target

if TYPE_CHECKING:
    from .app import Application
    from .limits import Limits
    from .types import Channel

__all__ = ["RequestReader"]

log = logging.getLogger(__name__)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal is kept on the reader."""


class RequestReader:
    """Parses one connection's bytes; ``deliver`` gets each request (or refusal) in order."""

    def __init__(
        self,
        app: Application,
        *,
        channel: Channel,
        limits: Limits,
        deliver: Callable[[Request | HTTPError], None],
        stop_reading: Callable[[], None],
    ) -> None:
        self._app = app
        self._channel = channel
        self._limits = limits
        self._deliver = deliver
        self._stop_reading = stop_reading
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._in_head = False
        self._head_fresh = False  # the head began in the chunk being fed
        self._head_pending = 0  # bytes fed while a head was incomplete
        self._refusal: HTTPError | None = None
        self.parsing: Request | None = None  # whose body is being fed
        self.broken = False  # the parser failed or the protocol was upgraded: nothing more is parsed

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
            return
        except httptools.HttpParserCallbackError as exc:
            refusal = self._refusal
            if refusal is None:
                log.error("HTTP server: a parser callback failed", exc_info=exc.__context__ or exc)
                refusal = HTTPInternalError("internal error in the llmroute sidecar; see its logs")
            self._fail(refusal)
            return
        except httptools.HttpParserError as exc:
            self._fail(HTTPBadRequest(f"malformed HTTP request: {_reason(exc)}"))
            return
        if self._in_head:
            # Bound what llhttp holds of an unfinished header line by the bytes fed since the head
            # began (the chunk in which it began is not counted: one read, bounded by the loop).
            if self._head_fresh:
                self._head_fresh = False
            else:
                self._head_pending += len(data)
                limits = self._limits
                if self._head_pending > limits.max_header_bytes + limits.max_target:
                    self._fail(HTTPHeaderFieldsTooLarge("the head never ends"))

    def body_ends_early(self, error: BaseException) -> None:
        """The client stopped sending (or went away) inside a body: its reader gets ``error``."""
        if self.parsing is not None:
            self.parsing.fail(error)
            self.parsing = None

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
        raw_path, raw_query = split_target(self._url)
        if raw_path is None:
            raise self._refuse(HTTPBadRequest("malformed request target"))
        request = Request(
            app=self._app,
            channel=self._channel,
            method=parser.get_method().decode("ascii"),
            path=decode_path(raw_path),
            raw_query=raw_query,
            version=version,
            headers=Headers(self._raw_headers),
            keep_alive=parser.should_keep_alive(),
            max_body=self._app.client_max_size,
        )
        self._raw_headers = []
        self.parsing = request
        if request.body_too_large:
            self._stop_reading()  # refused from its Content-Length: nobody will read the body
        self._deliver(request)

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is not None and not request.feed(body):
            self._stop_reading()  # past the limit: what follows is never read

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is not None:
            self.parsing = None
            request.finish()

    # -- failures -------------------------------------------------------------------------------------

    def _refuse(self, error: HTTPError) -> _Refused:
        """Stop the parser (from inside a callback) with ``error`` as the answer."""
        self._refusal = error
        raise _Refused(error.message)

    def _fail(self, error: HTTPError) -> None:
        """Nothing more is parsed: what came before is answered, then ``error``."""
        self.broken = True
        self._stop_reading()
        if self.parsing is not None:  # inside a body: its request is being answered already
            self.body_ends_early(error)
            return
        self._deliver(error)

    def _upgraded(self) -> None:
        # An Upgrade (or CONNECT) request: what follows is not HTTP. It is answered as a plain
        # request (no route upgrades) and the connection closes after it.
        self.broken = True
        self._stop_reading()
        if self.parsing is not None:
            self.parsing.finish()
            self.parsing = None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if text.isprintable() else repr(text)

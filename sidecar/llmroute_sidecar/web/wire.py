"""The bytes of HTTP/1.1 answers, and the request target taken apart: pure functions.

``protocol.py`` writes what these return. A whole answer gets a Content-Length (none for 1xx, 204
and 304); a streamed one the chunked transfer encoding, except for an HTTP/1.0 client, which does
not know it and reads to the close instead. ``connection: close`` goes on the answer after which the
connection ends, ``connection: keep-alive`` on an HTTP/1.0 answer when it does not.
Neighbours: ``protocol.py``, ``response.py`` (chunk framing).
"""

from __future__ import annotations

import http
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from .headers import ResponseHeaders
    from .response import Response

__all__ = [
    "CONTINUE",
    "LAST_CHUNK",
    "chunk",
    "split_target",
    "stream_head",
    "whole_head",
]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
_NO_BODY = frozenset({204, 304})
_STATUS_LINES: dict[int, bytes] = {}


def chunk(data: bytes) -> bytes:
    """One chunk of the chunked transfer encoding."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def status_line(status: int, reason: str | None) -> bytes:
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


def _connection(*, close: bool, version: str) -> str:
    if close:
        return "connection: close\r\n"
    return "connection: keep-alive\r\n" if version == "1.0" else ""


def _head(status: int, reason: str | None, headers: ResponseHeaders, extra: str) -> bytes:
    text = headers.block() + extra + "\r\n"
    try:
        encoded = text.encode("latin-1")
    except UnicodeEncodeError:
        # Non-Latin-1 header values go out as UTF-8 (as aiohttp sent them); bytes that came in as
        # lone surrogates (surrogateescape) go back out as they came.
        encoded = text.encode("utf-8", "surrogateescape")
    return status_line(status, reason) + encoded


def whole_head(response: Response, *, close: bool, version: str) -> tuple[bytes, bytes]:
    """(head, body) of a whole answer; the body is empty where the status has none."""
    status = response.status
    if status in _NO_BODY or status < 200:
        return _head(
            status, response.reason, response.headers, _connection(close=close, version=version)
        ), b""
    body = response.body
    extra = f"content-length: {len(body)}\r\n" + _connection(close=close, version=version)
    return _head(status, response.reason, response.headers, extra), body


def stream_head(
    status: int, reason: str | None, headers: ResponseHeaders, *, close: bool, version: str
) -> tuple[bytes, bool, bool]:
    """(head, chunked, close) of a streamed answer: chunked for HTTP/1.1 unless the handler set a
    Content-Length; for HTTP/1.0 the body ends with the connection, which therefore closes."""
    extra = ""
    chunked = False
    length = headers.get("content-length")
    if length is not None:
        extra = f"content-length: {length}\r\n"  # the handler knows it: written as it set it
    elif version == "1.1":
        chunked = True
        extra = "transfer-encoding: chunked\r\n"
    else:
        close = True
    return _head(status, reason, headers, extra + _connection(close=close, version=version)), chunked, close


def split_target(url: bytes) -> tuple[bytes, bytes] | tuple[None, bytes]:
    """(path, query) of a request target: origin form (``/p?q``), absolute form, or ``*``; (None, b"")
    when it is none of them."""
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

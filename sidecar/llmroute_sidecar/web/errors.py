"""HTTP errors of the sidecar's own server: what a handler raises, and what the protocol refuses.

Each carries a status, a sentence for a person, a machine ``code`` (the OpenAI error object's
``code``) and any headers the status needs (``Allow`` for 405). They say nothing about the body's
shape: the application's error renderer (``app.py``) turns them into responses, which is where the
sidecar puts the OpenAI error object. Neighbours: ``router.py`` raises 404 and 405, ``request.py``
413 and 400 while reading a body, ``protocol.py`` 400, 413, 414 and 431 before a handler runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "HTTPBadRequest",
    "HTTPError",
    "HTTPHeaderFieldsTooLarge",
    "HTTPInternalError",
    "HTTPMethodNotAllowed",
    "HTTPNotFound",
    "HTTPRequestEntityTooLarge",
    "HTTPURITooLong",
    "HTTPUnsupportedEncoding",
]


class HTTPError(Exception):
    """An answer other than success, raised from anywhere below the application's renderer."""

    status = 500
    code = "http_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


class HTTPBadRequest(HTTPError):
    status = 400
    code = "invalid_request"


class HTTPNotFound(HTTPError):
    status = 404
    code = "unknown_url"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"no such endpoint: {method} {path}")


class HTTPMethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: Iterable[str]) -> None:
        self.allowed = tuple(sorted(set(allowed)))
        listed = ", ".join(self.allowed)
        super().__init__(f"{method} is not allowed on {path}; use {listed}", headers={"allow": listed})


class HTTPRequestEntityTooLarge(HTTPError):
    status = 413
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the request body exceeds the limit of {limit} bytes")


class HTTPUnsupportedEncoding(HTTPError):
    status = 415
    code = "unsupported_content_encoding"

    def __init__(self, encoding: str) -> None:
        super().__init__(
            f"the request body's content-encoding {encoding!r} is not supported; use gzip or deflate"
        )


class HTTPURITooLong(HTTPError):
    status = 414
    code = "uri_too_long"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request target exceeds the limit of {limit} bytes")


class HTTPHeaderFieldsTooLarge(HTTPError):
    status = 431
    code = "request_header_fields_too_large"

    def __init__(self, what: str) -> None:
        super().__init__(f"the request headers are too large: {what}")


class HTTPInternalError(HTTPError):
    status = 500
    code = "internal_error"

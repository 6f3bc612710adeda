"""The sidecar's own HTTP/1.1 server, on httptools' parser: for the app-facing front and admin.

aiohttp's server cost ~40 µs of CPU per request here and its import ~10 MB of idle RSS; the
sidecar needs a small part of it (measured in one interleaved run against the bare aiohttp floor:
CPU per request at concurrency 64 from 1.57x the floor's to 1.03x, idle RSS 61.7 -> 52.2 MB). This package keeps that part with aiohttp's shapes (``Application``,
``app.router.add_post``, ``AppKey``, middlewares, ``Request``/``Response``/``StreamResponse``), so
the handlers read as before. Modules: ``protocol.py`` (a connection), ``wire.py`` (the bytes of
answers), ``server.py`` (listen, stop), ``connections.py``, ``limits.py``, ``request.py``,
``response.py``, ``headers.py``, ``router.py``, ``app.py``, ``errors.py``, ``multipart.py`` (form
uploads), ``types.py``.
"""

from .app import AppKey, Application, plain_error
from .errors import (
    HTTPBadRequest,
    HTTPError,
    HTTPHeaderFieldsTooLarge,
    HTTPInternalError,
    HTTPMethodNotAllowed,
    HTTPNotFound,
    HTTPRequestEntityTooLarge,
    HTTPUnsupportedEncoding,
    HTTPURITooLong,
)
from .headers import Headers, ResponseHeaders
from .limits import Limits
from .request import Request, RequestKey
from .response import Response, StreamResponse
from .router import Router
from .server import Server
from .types import ErrorRenderer, Handler, Middleware

__all__ = [
    "AppKey",
    "Application",
    "ErrorRenderer",
    "HTTPBadRequest",
    "HTTPError",
    "HTTPHeaderFieldsTooLarge",
    "HTTPInternalError",
    "HTTPMethodNotAllowed",
    "HTTPNotFound",
    "HTTPRequestEntityTooLarge",
    "HTTPURITooLong",
    "HTTPUnsupportedEncoding",
    "Handler",
    "Headers",
    "Limits",
    "Middleware",
    "Request",
    "RequestKey",
    "Response",
    "ResponseHeaders",
    "Router",
    "Server",
    "StreamResponse",
    "plain_error",
]

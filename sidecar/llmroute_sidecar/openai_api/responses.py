"""Errors as HTTP responses: an :class:`ApiError` or a server-level :class:`~..web.HTTPError`
(404, 405, 413, 431, a malformed request) becomes the OpenAI error object with its status.

Both the app-facing front and the admin server render with :func:`render_http_error`, so that
even what the server refuses before a handler runs reads as an OpenAI error to the app's SDK.
Neighbours: ``errors.py`` (the error object), ``http_front.py`` and ``admin.py`` (the callers).
"""

from __future__ import annotations

from .. import web
from .errors import ApiError

__all__ = ["api_error_response", "render_http_error"]


def api_error_response(error: ApiError) -> web.Response:
    return web.Response(
        status=error.status, body=error.body(), content_type="application/json", headers=error.headers
    )


def render_http_error(error: web.HTTPError) -> web.Response:
    return api_error_response(ApiError(error.status, error.message, code=error.code, headers=error.headers))

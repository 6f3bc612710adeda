"""OpenAI-style errors: what the app's SDK expects to parse when something goes wrong.

Every failure the sidecar answers, from garbage bytes to "no backend can serve", becomes an
:class:`ApiError` with the right status and an ``{"error": {message, type, param, code}}`` body, so
the OpenAI SDK raises its own typed exception (``BadRequestError``, ``NotFoundError``, ...).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["ApiError", "bad_request"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error answered to the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.extra = extra or {}  # more fields of the error object, e.g. a budget's name and reset_at
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(
                    self.status, "server_error" if self.status >= 500 else "invalid_request_error"
                ),
                "param": self.param,
                "code": self.code,
                **self.extra,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)

"""Check the request headers the sidecar reads: the x-llmroute-* hints, x-request-id, Idempotency-Key.

The HTTP server decodes header bytes as UTF-8 and keeps bytes that are not UTF-8 as lone surrogates
(``"\\udcff"``). Such a string cannot be encoded again, and these values travel far: the tenant and
user into cache partitions (percent-encoded), budget scopes and metric labels, the request id into
usage records (protobuf, UTF-8 only) and the audit log. So a value that is not text is a 400 here,
before anything reads it. ``http_front.py`` calls :func:`check_headers`; gRPC metadata values are
ASCII by the protocol's rules and need no check.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import bad_request

__all__ = ["check_headers"]

_READ = ("x-request-id", "idempotency-key")


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse a hint header whose value is not UTF-8 text."""
    for name, value in headers.items():
        if value.isascii():  # the common case, and O(1)
            continue
        lowered = name.lower()
        if not (lowered.startswith("x-llmroute-") or lowered in _READ):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request(
                f"the {lowered} header must be UTF-8 text; it holds bytes that are not", code="invalid_header"
            ) from None

"""One error taxonomy for every provider, so routing can act on failures without knowing protocols.

Adapters (``openai.py``, ``anthropic.py``, ...) map their provider's status codes and error bodies onto
:class:`ErrorKind`; the attempt loop in ``llmroute_sidecar.attempts`` reads only ``kind``,
``retryable`` and ``retry_after``; the HTTP front maps the final error onto an OpenAI error object.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorKind", "ProviderError", "kind_for_status"]


class ErrorKind(StrEnum):
    """What went wrong upstream, independent of the provider."""

    RATE_LIMITED = "rate_limited"  # 429: retry later, honour Retry-After
    OVERLOADED = "overloaded"  # 503/529 and provider "overloaded" errors
    SERVER = "server"  # other 5xx
    AUTH = "auth"  # 401/403: a bad key is never retried on the same backend
    BAD_REQUEST = "bad_request"  # 400/422: the request itself is wrong
    NOT_FOUND = "not_found"  # 404: this backend lacks the model or deployment; another may have it
    CONTEXT_TOO_LONG = "context_too_long"  # the prompt does not fit this backend
    TIMEOUT = "timeout"  # no answer in time
    CONNECTION = "connection"  # refused, reset or DNS failure before an answer
    STREAM_CUT = "stream_cut"  # the stream ended without the provider's terminal event
    PROTOCOL = "protocol"  # the provider answered something we cannot parse
    BUDGET = "budget_exceeded"  # not sent: a budget in scope cannot cover this backend's estimated cost


# Kinds worth another attempt on the same backend (subject to the route's retryOn and budget).
_RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)
# Kinds where another backend may well succeed (fallback), even though a retry here would not.
_FALLBACK = _RETRYABLE | {
    ErrorKind.AUTH,
    ErrorKind.CONTEXT_TOO_LONG,
    ErrorKind.STREAM_CUT,
    ErrorKind.PROTOCOL,
    ErrorKind.BUDGET,  # a cheaper (or free) backend may still fit the budget
}


class ProviderError(Exception):
    """A failed upstream call, classified."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.provider = provider

    @property
    def retryable(self) -> bool:
        """Another attempt on the same backend may succeed."""
        return self.kind in _RETRYABLE

    @property
    def try_next_backend(self) -> bool:
        """Another backend may succeed where this one failed."""
        return self.kind in _FALLBACK

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value}, status={self.status}, {self.message!r})"


def kind_for_status(status: int, message: str = "") -> ErrorKind:
    """The usual mapping of an HTTP status (and a hint in the message) onto an :class:`ErrorKind`."""
    lowered = message.lower()
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status in (503, 529) or "overloaded" in lowered:
        return ErrorKind.OVERLOADED
    if status == 408 or status == 504:
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.SERVER
    if status == 404:
        return ErrorKind.NOT_FOUND
    if any(
        hint in lowered
        for hint in (
            "context length",
            "context_length",
            "too many tokens",
            "prompt is too long",
            "maximum context",
        )
    ):
        return ErrorKind.CONTEXT_TOO_LONG
    return ErrorKind.BAD_REQUEST

"""What every fake protocol provides, and the per-server and per-request state they share.

Neighbours: ``app`` builds the aiohttp application around a :class:`ProviderProtocol`; the protocol
modules (``openai_api``, ``azure_api``, ``anthropic_api``, ``gemini_api``, ``bedrock_api``,
``cohere_api``) implement it; ``server`` owns the :class:`FakeState` that tests read.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy, MultiDictProxy

from .faults import FaultPlan, FaultSpec

if TYPE_CHECKING:
    from .batch_jobs import BatchBook

__all__ = [
    "EXCHANGE",
    "STATE",
    "ApiError",
    "Exchange",
    "FakeConfig",
    "FakeState",
    "ProviderProtocol",
    "RecordedRequest",
    "default_message",
    "json_response",
    "retry_after_header",
]


class ApiError(Exception):
    """An error the fake answers in the protocol's own error shape.

    ``code`` overrides the provider-specific error type the status would otherwise map to (OpenAI's
    ``invalid_api_key``, Bedrock's ``InvalidSignatureException``, ...); ``param`` names the offending
    request field where the provider reports one.
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after


@dataclass(frozen=True)
class FakeConfig:
    """What the fake accepts. ``api_key=None`` accepts any non-empty credential."""

    api_key: str | None = None
    #: Bedrock: access key id -> secret. When set, SigV4 signatures are verified, not just present.
    aws_credentials: Mapping[str, str] | None = None
    #: Served by the model-listing endpoints; empty means the protocol's defaults.
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordedRequest:
    """A request as it reached the fake, with the faults it was given."""

    method: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    body: bytes
    faults: FaultSpec
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        """The body parsed as JSON (raises on a body that is not JSON)."""
        return orjson.loads(self.body)


class FakeState:
    """Mutable state of one running fake, shared by its handlers and read by tests."""

    def __init__(self, *, protocol: str, config: FakeConfig, plan: FaultPlan) -> None:
        self.protocol = protocol
        self.config = config
        self.plan = plan
        self.requests: list[RecordedRequest] = []
        from .batch_jobs import BatchBook  # here, not at the top: batch_jobs builds on this module

        #: Files and batch jobs of the batch APIs (``openai_batches``, ``anthropic_batches``).
        self.batches: BatchBook = BatchBook()
        #: Set when the fake stops, so that hanging requests give up their connection.
        self.closing = asyncio.Event()
        self._numbers = itertools.count(1)

    def new_number(self) -> int:
        """The next of a sequence shared by all ids this fake hands out."""
        return next(self._numbers)

    def new_id(self, prefix: str) -> str:
        """A unique id in order of issue, e.g. ``msg_fake00000000000000000042``."""
        return f"{prefix}fake{self.new_number():020d}"

    def id_factory(self, prefix: str) -> Callable[[], str]:
        return lambda: self.new_id(prefix)


@dataclass(frozen=True)
class Exchange:
    """What the middleware hands a protocol handler about the request it is answering."""

    state: FakeState
    record: RecordedRequest
    faults: FaultSpec

    def json_object(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 in the protocol's shape."""
        try:
            body = orjson.loads(self.record.body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body


STATE = web.AppKey("llmroute_fake_state", FakeState)
EXCHANGE = web.RequestKey("llmroute_fake_exchange", Exchange)


class ProviderProtocol(abc.ABC):
    """One provider's wire protocol: its routes, its authentication and its error shape."""

    #: The ``--protocol`` name.
    name: str
    #: Appended to the server's root URL to form the base URL the official SDK takes.
    sdk_path: str = ""
    #: The status of the in-stream error the ``error_event`` knob sends when ``error_status`` is unset.
    stream_error_status: int = 500

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The endpoints, with handlers that read :data:`EXCHANGE` from the request."""

    @abc.abstractmethod
    def authenticate(self, request: web.Request) -> None:
        """Raise :class:`ApiError` when the request's credentials would be refused."""

    @abc.abstractmethod
    def error_response(self, error: ApiError) -> web.Response:
        """The provider's own error response (status, headers and body shape)."""


_DEFAULT_MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    408: "Request timed out.",
    413: "Request too large.",
    429: "Rate limit exceeded, please retry later.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "Service unavailable, please retry later.",
    504: "Gateway timeout.",
}


def default_message(status: int) -> str:
    """A neutral message for an error status, for protocols without a more specific one."""
    return _DEFAULT_MESSAGES.get(status, f"HTTP {status}.")


def retry_after_header(error: ApiError) -> dict[str, str]:
    """``retry-after`` in whole seconds when integral, as providers send it."""
    if error.retry_after is None:
        return {}
    seconds = error.retry_after
    return {"retry-after": str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"}


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )

"""The attempt loop: try candidates in order, retry what is worth retrying, fail over before the
first byte, and never turn a provider fault into a clean answer.

Inputs are an ordered list of backends (``candidates.py`` decides the order) and the route's
resilience policy; the loop owns timeouts (per attempt and total, cancelling the upstream call when
they fire), retries with exponential backoff and full jitter that honour ``Retry-After``, and
fallback to the next backend on errors another backend may not have. Streams fail over only until
the first chunk is ready for the app; after that a fault surfaces as :class:`StreamBroken` for the
HTTP front to turn into an explicit error event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb

from .adapters.base import ChatStreamDecoder
from .adapters.errors import ErrorKind, ProviderError
from .adapters.registry import adapter_for
from .config.snapshot import BackendEntry
from .upstream import OpenResponse, UpstreamClient

__all__ = [
    "AllFailed",
    "ChatOutcome",
    "Policy",
    "StreamBroken",
    "StreamOutcome",
    "open_stream",
    "run_chat",
    "run_embeddings",
]

log = logging.getLogger(__name__)
Json = dict[str, Any]

# retryOn names in LLMRoute.spec.resilience.retries -> the error kinds they cover.
_RETRY_ON = {
    "429": {ErrorKind.RATE_LIMITED},
    "5xx": {ErrorKind.SERVER, ErrorKind.OVERLOADED},
    "connect": {ErrorKind.CONNECTION},
    "reset": {ErrorKind.CONNECTION},
    "timeout": {ErrorKind.TIMEOUT},
}


@dataclass(frozen=True)
class Policy:
    """The resilience settings of one route, in seconds."""

    per_attempt: float = 30.0
    total: float = 60.0
    retries: int = 2
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    retry_on: frozenset[ErrorKind] = frozenset(
        {
            ErrorKind.RATE_LIMITED,
            ErrorKind.SERVER,
            ErrorKind.OVERLOADED,
            ErrorKind.CONNECTION,
            ErrorKind.TIMEOUT,
        }
    )

    @classmethod
    def from_route(cls, route: pb.Route) -> Policy:
        if not route.HasField("resilience"):
            return cls()
        res = route.resilience
        kinds: set[ErrorKind] = set()
        for name in res.retries.retry_on:
            kinds |= _RETRY_ON.get(name, set())
        return cls(
            per_attempt=res.timeout.per_attempt.ToTimedelta().total_seconds() or 30.0,
            total=res.timeout.total.ToTimedelta().total_seconds() or 60.0,
            retries=res.retries.attempts,
            backoff_base=res.retries.backoff.base.ToTimedelta().total_seconds() or 0.2,
            backoff_max=res.retries.backoff.max.ToTimedelta().total_seconds() or 5.0,
            retry_on=frozenset(kinds),
        )

    def backoff(
        self, retry: int, retry_after: float | None, rng: Callable[[float, float], float] = random.uniform
    ) -> float:
        """Seconds before retry number ``retry`` (0-based): full jitter, at least ``retry_after``."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**retry))
        wait = rng(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


@dataclass
class Trace:
    """What happened across attempts, for headers, logs and metrics."""

    attempts: int = 0
    errors: list[tuple[str, ProviderError]] = field(default_factory=list)
    on_attempt: Callable[[BackendEntry, ProviderError | None, float], None] | None = None

    def record(self, backend: BackendEntry, error: ProviderError | None, seconds: float) -> None:
        self.attempts += 1
        if error is not None:
            self.errors.append((backend.name, error))
        if self.on_attempt is not None:
            self.on_attempt(backend, error, seconds)


class AllFailed(Exception):
    """No candidate produced an answer; ``errors`` says what each one did."""

    def __init__(self, errors: Sequence[tuple[str, ProviderError]], reason: str = "") -> None:
        self.errors = list(errors)
        summary = "; ".join(f"{name}: {err.kind.value} ({err.message})" for name, err in self.errors)
        super().__init__(reason or f"no backend could serve the request: {summary}")

    @property
    def final(self) -> ProviderError | None:
        return self.errors[-1][1] if self.errors else None


class StreamBroken(Exception):
    """A stream failed after bytes reached the app: it must end with an error event."""

    def __init__(self, backend: str, error: ProviderError) -> None:
        super().__init__(f"stream from {backend} broke: {error.kind.value}: {error.message}")
        self.backend = backend
        self.error = error


@dataclass
class ChatOutcome:
    backend: BackendEntry
    trace: Trace
    response: Json


@dataclass
class StreamOutcome:
    """A stream whose first chunks are ready; ``rest()`` yields the others."""

    backend: BackendEntry
    trace: Trace
    first: list[Json]
    decoder: ChatStreamDecoder
    _response: OpenResponse
    _chunks: AsyncIterator[bytes]
    _deadline: float

    async def rest(self) -> AsyncIterator[Json]:
        try:
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    raise ProviderError(ErrorKind.TIMEOUT, "the stream exceeded the total timeout")
                try:
                    async with asyncio.timeout(remaining):
                        data = await anext(self._chunks)
                except StopAsyncIteration:
                    break
                for chunk in self.decoder.feed(data):
                    yield chunk
            if not self.decoder.finished:
                raise ProviderError(
                    ErrorKind.STREAM_CUT, "the provider closed the stream before its end event"
                )
        except ProviderError as exc:
            raise StreamBroken(self.backend.name, exc) from exc
        except TimeoutError as exc:
            raise StreamBroken(
                self.backend.name, ProviderError(ErrorKind.TIMEOUT, "the stream exceeded the total timeout")
            ) from exc
        except Exception as exc:  # transport errors mid-stream
            raise StreamBroken(
                self.backend.name, ProviderError(ErrorKind.CONNECTION, f"stream read failed: {exc}")
            ) from exc
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


async def _attempts(
    candidates: Sequence[BackendEntry],
    policy: Policy,
    trace: Trace,
    attempt: Callable[[BackendEntry, float], Any],
) -> tuple[BackendEntry, Any]:
    """Run ``attempt(backend, timeout)`` over candidates with retries; return the first success."""
    deadline = time.monotonic() + policy.total
    for backend in candidates:
        retry = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                trace.errors.append(
                    (backend.name, ProviderError(ErrorKind.TIMEOUT, "the total timeout ran out"))
                )
                raise AllFailed(trace.errors)
            started = time.monotonic()
            try:
                async with asyncio.timeout(min(policy.per_attempt, remaining)):
                    result = await attempt(backend, deadline)
            except TimeoutError:
                error = ProviderError(
                    ErrorKind.TIMEOUT, f"no answer within {min(policy.per_attempt, remaining):.1f}s"
                )
            except ProviderError as exc:
                error = exc
            else:
                trace.record(backend, None, time.monotonic() - started)
                return backend, result
            trace.record(backend, error, time.monotonic() - started)
            log.info("attempt %d on %s failed: %s", trace.attempts, backend.name, error.kind.value)
            if error.kind == ErrorKind.BAD_REQUEST:
                # The request itself is wrong; no other backend will like it better.
                raise AllFailed(trace.errors)
            if error.retryable and error.kind in policy.retry_on and retry < policy.retries:
                wait = policy.backoff(retry, error.retry_after)
                if time.monotonic() + wait < deadline:
                    retry += 1
                    await asyncio.sleep(wait)
                    continue
            if not error.try_next_backend:
                raise AllFailed(trace.errors)
            break  # next backend
    raise AllFailed(trace.errors)


async def run_chat(
    upstream: UpstreamClient, candidates: Sequence[BackendEntry], body: Json, policy: Policy, trace: Trace
) -> ChatOutcome:
    """A non-streaming chat completion through the first backend that answers."""

    async def attempt(backend: BackendEntry, deadline: float) -> Json:
        adapter = adapter_for(backend.provider)
        request = adapter.chat_request(backend.target, body, stream=False)
        response = await upstream.open(request, adapter)
        try:
            raw = await response.read()
        except Exception as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"reading the answer failed: {exc}", provider=adapter.name
            ) from exc
        finally:
            response.close()
        return adapter.parse_chat(raw, model=backend.target.model)

    backend, result = await _attempts(candidates, policy, trace, attempt)
    return ChatOutcome(backend, trace, result)


async def run_embeddings(
    upstream: UpstreamClient, candidates: Sequence[BackendEntry], body: Json, policy: Policy, trace: Trace
) -> ChatOutcome:
    """An embeddings call through the first backend that answers."""

    async def attempt(backend: BackendEntry, deadline: float) -> Json:
        adapter = adapter_for(backend.provider)
        request = adapter.embeddings_request(backend.target, body)
        response = await upstream.open(request, adapter)
        try:
            raw = await response.read()
        finally:
            response.close()
        return adapter.parse_embeddings(raw, model=backend.target.model)

    backend, result = await _attempts(candidates, policy, trace, attempt)
    return ChatOutcome(backend, trace, result)


async def open_stream(
    upstream: UpstreamClient,
    candidates: Sequence[BackendEntry],
    body: Json,
    policy: Policy,
    trace: Trace,
    *,
    include_usage: bool,
) -> StreamOutcome:
    """Open a stream and read up to its first chunk; failover is allowed only until then."""

    async def attempt(backend: BackendEntry, deadline: float) -> StreamOutcome:
        adapter = adapter_for(backend.provider)
        request = adapter.chat_request(backend.target, body, stream=True)
        response = await upstream.open(request, adapter)
        decoder = adapter.chat_stream_decoder(model=backend.target.model, include_usage=include_usage)
        chunks = response.iter_chunks().__aiter__()
        first: list[Json] = []
        try:
            while not first:
                try:
                    data = await anext(chunks)
                except StopAsyncIteration:
                    if decoder.finished:
                        break
                    raise ProviderError(
                        ErrorKind.STREAM_CUT, "the stream ended before any content", provider=adapter.name
                    ) from None
                first = decoder.feed(data)
        except ProviderError:
            response.close()
            raise
        except BaseException as exc:
            response.close()
            if isinstance(exc, Exception) and not isinstance(exc, TimeoutError):
                raise ProviderError(
                    ErrorKind.CONNECTION, f"stream read failed: {exc}", provider=adapter.name
                ) from exc
            raise
        return StreamOutcome(backend, trace, first, decoder, response, chunks, deadline)

    _, outcome = await _attempts(candidates, policy, trace, attempt)
    assert isinstance(outcome, StreamOutcome)
    return outcome

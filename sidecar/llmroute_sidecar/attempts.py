"""The attempt loop: try candidates in order, retry what is worth retrying, fail over before the
first byte, and never turn a provider fault into a clean answer.

Inputs are an ordered list of backends (``routing/planner.py`` decides the order) and the route's
resilience policy; the loop owns timeouts (per attempt and total, cancelling the upstream call when
they fire), retries with exponential backoff and full jitter that honour ``Retry-After``, and
fallback to the next backend on errors another backend may not have. Streams fail over only until
the first chunk is ready for the app; after that a fault surfaces as :class:`StreamBroken` for the
HTTP front to turn into an explicit error event. Before each attempt the loop enters the request's
load gate (``load/``) for a concurrency slot of that backend; a saturated backend is skipped (never
retried), and a stream keeps its slot until it ends. With the request's :class:`RouteHealth`
(``health/``), each attempt also needs its backend's admission (circuit breaker, Retry-After hold),
its outcome and latency feed the backend's health, and retries spend the route's retry budget; a
spent budget falls through to the next backend. With a ``spend`` hook (the request's budgets, see
``budget/``), every attempt, retries and fallbacks included, first reserves its estimated cost on
that backend; a refusal skips the backend without sending anything (:class:`SpendRefused`), and the
winning attempt's reservation is left in ``Trace.reservation`` for the caller to settle.

Hedging (``spec.resilience.hedging``, chat only): when the first candidate has not answered after the
hedge delay (fixed, or a percentile of its recent latency from ``health/``), the next candidate is
tried at the same time; the first success wins and the other call is cancelled. A call cancelled in
flight, or one that also answered, was sent and is billed: it is left in ``Trace.abandoned`` with its
reservation for the caller to settle (``request_policies.py``), never released as if unsent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb

from .adapters.base import ChatStreamDecoder, ProviderAdapter, UpstreamRequest
from .adapters.errors import ErrorKind, ProviderError
from .adapters.registry import adapter_for
from .config.snapshot import BackendEntry
from .health.admission import Refusal, RouteHealth, Ticket
from .load.limiter import Saturated, Slot
from .load.registry import Gate
from .upstream import OpenResponse, UpstreamClient

__all__ = [
    "Abandoned",
    "AllFailed",
    "ChatOutcome",
    "Policy",
    "SpendRefused",
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
    hedge_delay: float | None = None  # seconds; None: no hedging
    hedge_percentile: float = 0.0  # > 0: the delay is this percentile of the backend's latency

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
            hedge_delay=res.hedging.delay.ToTimedelta().total_seconds() if res.HasField("hedging") else None,
            hedge_percentile=res.hedging.percentile if res.HasField("hedging") else 0.0,
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
    reservation: Any = None  # what the winning attempt reserved in its budgets (``spend`` hook)
    hedged: str = ""  # the backend a hedge was sent to, if one was
    hedge_won: bool = False  # that hedge gave the answer
    abandoned: list[Abandoned] = field(default_factory=list)  # sent, lost the race: billed by the caller

    def record(self, backend: BackendEntry, error: ProviderError | None, seconds: float) -> None:
        self.attempts += 1
        if error is not None:
            self.errors.append((backend.name, error))
        if self.on_attempt is not None:
            self.on_attempt(backend, error, seconds)


@dataclass(frozen=True)
class Abandoned:
    """A call that was sent and then lost a hedge race: cancelled in flight, or answered too late."""

    backend: BackendEntry
    reservation: Any  # its budget reservation, to settle with its cost (None without budgets)
    response: Json | None = None  # the answer, when it completed (its usage is then known)


@dataclass
class _Lane:
    """One side of a hedge race: what its attempt reserved, and whether it was cut off in flight."""

    reservation: Any = None
    in_flight: bool = False


class AllFailed(Exception):
    """No candidate produced an answer; ``errors`` says what each one did."""

    def __init__(self, errors: Sequence[tuple[str, ProviderError]], reason: str = "") -> None:
        self.errors = list(errors)
        summary = "; ".join(f"{name}: {err.kind.value} ({err.message})" for name, err in self.errors)
        super().__init__(reason or f"no backend could serve the request: {summary}")

    @property
    def final(self) -> ProviderError | None:
        return self.errors[-1][1] if self.errors else None


class SpendRefused(ProviderError):
    """A budget in scope cannot cover this backend: nothing was sent. ``refusal`` says which."""

    def __init__(self, message: str, refusal: Any) -> None:
        super().__init__(ErrorKind.BUDGET, message)
        self.refusal = refusal


Spend = Callable[[BackendEntry], Awaitable[Any]]  # returns a reservation (``.release()``) or raises


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
    _slot: Slot | None = None  # the backend's concurrency slot, held until the stream ends
    _health: RouteHealth | None = None  # told when the stream breaks after its first chunk

    def hold(self, slot: Slot) -> None:
        self._slot = slot

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
            raise self._broken(exc) from exc
        except TimeoutError as exc:
            raise self._broken(
                ProviderError(ErrorKind.TIMEOUT, "the stream exceeded the total timeout")
            ) from exc
        except Exception as exc:  # transport errors mid-stream
            raise self._broken(ProviderError(ErrorKind.CONNECTION, f"stream read failed: {exc}")) from exc
        finally:
            self._response.close()
            if self._slot is not None:
                self._slot.release()

    def close(self) -> None:
        self._response.close()
        if self._slot is not None:
            self._slot.release()

    def _broken(self, error: ProviderError) -> StreamBroken:
        if self._health is not None:
            self._health.stream_broken(self.backend, error)
        return StreamBroken(self.backend.name, error)


@dataclass(frozen=True, slots=True)
class _MoveOn:
    """A backend is done with for this request; ``reason`` is an error kind or a skip cause."""

    reason: str


async def _attempts(
    candidates: Sequence[BackendEntry],
    policy: Policy,
    trace: Trace,
    attempt: Callable[[BackendEntry, float], Any],
    *,
    gate: Gate | None = None,
    health: RouteHealth | None = None,
    spend: Spend | None = None,
    hedge: bool = False,
) -> tuple[BackendEntry, Any]:
    """Run ``attempt(backend, deadline)`` over candidates with retries; return the first success.

    With ``health``, a backend whose breaker is open or whose provider asked to wait (Retry-After)
    is skipped. When that leaves nothing attempted, the skipped candidates are tried anyway rather
    than failing untried: ejected ones at once, held ones once their Retry-After has passed, if
    that is within the total timeout.
    """
    deadline = time.monotonic() + policy.total
    skipped: list[tuple[BackendEntry, Refusal]] = []
    attempted = False
    if health is not None:
        health.start()

    async def on(backend: BackendEntry, force: bool, lane: _Lane | None = None) -> Any:
        """Attempts (and retries) on one backend: its result, or :class:`_MoveOn`. In a hedge race
        (``lane``), what was reserved is kept in the lane instead of the trace."""
        nonlocal attempted
        retry = 0
        retrying = False  # a retry granted by the retry budget, not sent yet

        def move_on(reason: str) -> _MoveOn:
            # Leaving before sending: a granted retry was not made, so it neither counts nor costs.
            if retrying and health is not None:
                health.retry_abandoned(backend)
            return _MoveOn(reason)

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                trace.errors.append(
                    (backend.name, ProviderError(ErrorKind.TIMEOUT, "the total timeout ran out"))
                )
                move_on("timeout")
                raise AllFailed(trace.errors)
            ticket: Ticket | None = None
            if health is not None:
                admitted = health.admit(backend, force=force)
                if isinstance(admitted, Refusal):
                    if not force:
                        skipped.append((backend, admitted))
                        return move_on(admitted.reason)
                    if time.monotonic() + admitted.wait >= deadline:
                        trace.errors.append((backend.name, _held_error(admitted)))
                        return move_on(admitted.reason)
                    await asyncio.sleep(admitted.wait)  # honour the provider's Retry-After
                    continue
                ticket = admitted
            reservation: Any = None
            if spend is not None:
                try:
                    reservation = await spend(backend)
                except SpendRefused as exc:
                    # Nothing sent: no attempt, no retry, and no health outcome for the backend.
                    if health is not None and ticket is not None:
                        health.release(ticket)
                    trace.errors.append((backend.name, exc))
                    return move_on(ErrorKind.BUDGET.value)
                except BaseException:  # cancelled while the allowance is topped up: nothing sent
                    if health is not None and ticket is not None:
                        health.release(ticket)
                    raise
            slot: Slot | None = None
            if gate is not None:
                try:
                    slot = await gate.enter(backend, min(policy.per_attempt, remaining))
                except Saturated as exc:
                    # Nothing was sent, so no attempt and no retry: the next candidate may have room.
                    if health is not None and ticket is not None:
                        health.release(ticket)
                    if reservation is not None:
                        reservation.release()
                    trace.errors.append((backend.name, exc))
                    log.info("%s", exc)
                    return move_on("saturated")
                except BaseException:  # cancelled while queued (a lost hedge race, a gone app): unsent
                    if health is not None and ticket is not None:
                        health.release(ticket)
                    if reservation is not None:
                        reservation.release()
                    raise
                remaining = deadline - time.monotonic()
            attempted = True
            if retrying:
                retrying = False
                if health is not None:
                    health.retrying(backend)
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
            except BaseException:  # cancelled: no outcome to record, but a probe slot to free
                if health is not None and ticket is not None:
                    health.release(ticket)
                if lane is not None:  # lost a hedge race in flight: sent, so billed by the race's owner
                    lane.reservation, lane.in_flight = reservation, True
                elif reservation is not None:
                    reservation.release()
                raise
            else:
                elapsed = time.monotonic() - started
                trace.record(backend, None, elapsed)
                if health is not None and ticket is not None:
                    health.settle(ticket, None, elapsed)
                if slot is not None and isinstance(result, StreamOutcome):
                    result.hold(slot)  # a stream keeps its slot until it ends
                    slot = None
                if lane is not None:
                    lane.reservation = reservation
                else:
                    trace.reservation = reservation
                return result
            finally:
                if slot is not None:
                    slot.release()
            if reservation is not None:
                reservation.release()  # a failed attempt is not billed
            elapsed = time.monotonic() - started
            trace.record(backend, error, elapsed)
            if health is not None and ticket is not None:
                health.settle(ticket, error, elapsed)
            log.info("attempt %d on %s failed: %s", trace.attempts, backend.name, error.kind.value)
            if error.kind == ErrorKind.BAD_REQUEST:
                # The request itself is wrong; no other backend will like it better.
                raise AllFailed(trace.errors)
            if error.retryable and error.kind in policy.retry_on and retry < policy.retries:
                wait = policy.backoff(retry, error.retry_after)
                # A spent retry budget means: no retry here, the next backend instead.
                if time.monotonic() + wait < deadline and (health is None or health.try_retry(backend)):
                    retry += 1
                    retrying = True
                    try:
                        await asyncio.sleep(wait)
                    except BaseException:  # cancelled while backing off: the retry is never sent
                        move_on("cancelled")
                        raise
                    continue
            if not error.try_next_backend:
                raise AllFailed(trace.errors)
            return _MoveOn(error.kind.value)

    start = 0
    if policy.hedge_delay is not None and hedge and len(candidates) > 1:
        # Defined only here: a route without hedging pays nothing for them.
        async def stop(task: asyncio.Task[Any], backend: BackendEntry, lane: _Lane) -> None:
            """End a lane that lost the race; a call it had sent is billed, not forgotten."""
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            result = None if task.cancelled() or task.exception() is not None else task.result()
            if isinstance(result, StreamOutcome):
                result.close()
                trace.abandoned.append(Abandoned(backend, lane.reservation))
            elif result is not None and not isinstance(result, _MoveOn):
                trace.abandoned.append(Abandoned(backend, lane.reservation, result))  # answered too late
            elif lane.in_flight:
                trace.attempts += 1  # sent and cut off: an attempt, though it has no outcome
                trace.abandoned.append(Abandoned(backend, lane.reservation))

        async def race(
            first: BackendEntry, second: BackendEntry, delay: float
        ) -> tuple[BackendEntry, Any] | int:
            """The first success of ``first``, and of ``second`` once ``delay`` passed without an answer;
            else how many candidates the race used up."""
            lanes = [(first, _Lane()), (second, _Lane())]
            tasks = [asyncio.ensure_future(on(first, False, lanes[0][1]))]
            try:
                await asyncio.wait(tasks, timeout=delay)
                if not tasks[0].done():
                    trace.hedged = second.name
                    log.info(
                        "hedging: %s has not answered in %.3fs, trying %s too", first.name, delay, second.name
                    )
                    tasks.append(asyncio.ensure_future(on(second, False, lanes[1][1])))
                pending = set(tasks)
                failed: AllFailed | None = None
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for index, task in enumerate(tasks):  # the first candidate wins a tie
                        if task not in done:
                            continue
                        try:
                            result = task.result()
                        except AllFailed as exc:  # this lane ends the request, unless the other answers
                            failed = exc
                            continue
                        if isinstance(result, _MoveOn):
                            if len(tasks) == 1 and health is not None:
                                health.fell_back(first, result.reason)
                            continue
                        backend, lane = lanes[index]
                        for other, task_other in enumerate(tasks):
                            if task_other is not task:
                                await stop(task_other, *lanes[other])
                        trace.reservation = lane.reservation
                        trace.hedge_won = index == 1
                        return backend, result
                if failed is not None:
                    raise failed
                return len(tasks)
            finally:
                for index, task in enumerate(tasks):
                    if not task.done():
                        await stop(task, *lanes[index])

        delay = policy.hedge_delay
        if policy.hedge_percentile > 0 and health is not None:
            delay = health.latency_quantile(candidates[0], policy.hedge_percentile / 100) or delay
        raced = await race(candidates[0], candidates[1], delay)
        if not isinstance(raced, int):
            return raced
        start = raced
    for index, backend in enumerate(candidates[start:], start):
        result = await on(backend, False)
        if not isinstance(result, _MoveOn):
            return backend, result
        if health is not None and index + 1 < len(candidates):
            health.fell_back(backend, result.reason)
    if skipped and not attempted:
        log.warning(
            "every candidate (%s) is ejected or held back; trying them anyway",
            ", ".join(b.name for b, _ in skipped),
        )
        for backend, _ in sorted(skipped, key=lambda item: item[1].wait):
            result = await on(backend, True)
            if not isinstance(result, _MoveOn):
                return backend, result
    raise AllFailed(trace.errors)


def _held_error(refusal: Refusal) -> ProviderError:
    return ProviderError(
        ErrorKind.RATE_LIMITED,
        f"the provider asked to wait {refusal.wait:.1f}s more (Retry-After), beyond the total timeout",
        retry_after=refusal.wait,
    )


def _traced(request: UpstreamRequest, headers: Mapping[str, str] | None) -> UpstreamRequest:
    """``request`` with the trace context headers added (not signed by SigV4, which allows that)."""
    if not headers:
        return request
    return dataclasses.replace(request, headers={**request.headers, **headers})


async def _fetch(upstream: UpstreamClient, adapter: ProviderAdapter, request: UpstreamRequest) -> bytes:
    """Send ``request`` and read the whole 2xx body; a failed read is a CONNECTION error."""
    response = await upstream.open(request, adapter)
    try:
        return await response.read()
    except Exception as exc:
        raise ProviderError(
            ErrorKind.CONNECTION, f"reading the answer failed: {exc}", provider=adapter.name
        ) from exc
    finally:
        response.close()


async def run_chat(
    upstream: UpstreamClient,
    candidates: Sequence[BackendEntry],
    body: Json,
    policy: Policy,
    trace: Trace,
    *,
    gate: Gate | None = None,
    health: RouteHealth | None = None,
    spend: Spend | None = None,
    trace_headers: Mapping[str, str] | None = None,
) -> ChatOutcome:
    """A non-streaming chat completion through the first backend that answers. ``trace_headers``
    (W3C ``traceparent``) go with every attempt, so a provider that traces joins the app's trace."""

    async def attempt(backend: BackendEntry, deadline: float) -> Json:
        adapter = adapter_for(backend.provider)
        request = _traced(adapter.chat_request(backend.target, body, stream=False), trace_headers)
        raw = await _fetch(upstream, adapter, request)
        return adapter.parse_chat(raw, model=backend.target.model)

    backend, result = await _attempts(
        candidates, policy, trace, attempt, gate=gate, health=health, spend=spend, hedge=True
    )
    return ChatOutcome(backend, trace, result)


async def run_embeddings(
    upstream: UpstreamClient,
    candidates: Sequence[BackendEntry],
    body: Json,
    policy: Policy,
    trace: Trace,
    *,
    gate: Gate | None = None,
    health: RouteHealth | None = None,
    spend: Spend | None = None,
) -> ChatOutcome:
    """An embeddings call through the first backend that answers."""

    async def attempt(backend: BackendEntry, deadline: float) -> Json:
        adapter = adapter_for(backend.provider)
        raw = await _fetch(upstream, adapter, adapter.embeddings_request(backend.target, body))
        return adapter.parse_embeddings(raw, model=backend.target.model)

    backend, result = await _attempts(
        candidates, policy, trace, attempt, gate=gate, health=health, spend=spend
    )
    return ChatOutcome(backend, trace, result)


async def open_stream(
    upstream: UpstreamClient,
    candidates: Sequence[BackendEntry],
    body: Json,
    policy: Policy,
    trace: Trace,
    *,
    include_usage: bool,
    gate: Gate | None = None,
    health: RouteHealth | None = None,
    spend: Spend | None = None,
    trace_headers: Mapping[str, str] | None = None,
) -> StreamOutcome:
    """Open a stream and read up to its first chunk; failover is allowed only until then."""

    async def attempt(backend: BackendEntry, deadline: float) -> StreamOutcome:
        adapter = adapter_for(backend.provider)
        request = _traced(adapter.chat_request(backend.target, body, stream=True), trace_headers)
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

    _, outcome = await _attempts(
        candidates, policy, trace, attempt, gate=gate, health=health, spend=spend, hedge=True
    )
    assert isinstance(outcome, StreamOutcome)
    outcome._health = health
    return outcome

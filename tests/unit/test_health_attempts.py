"""The attempt loop with health (``attempts.py`` + ``health/``), driven by scripted attempts, no sockets:
skipping ejected backends, the forced last resort, the retry budget, Retry-After holds, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.attempts import AllFailed, Policy, Trace, _attempts
from llmroute_sidecar.config.snapshot import BackendEntry, Snapshot
from llmroute_sidecar.health import HealthBook, HealthListener, RouteHealth, State

from .health_support import FakeClock, breaker, snapshot

FAST = Policy(per_attempt=1.0, total=5.0, retries=2, backoff_base=0.001, backoff_max=0.002)


class Recorder(HealthListener):
    def __init__(self) -> None:
        self.fallbacks: list[tuple[str, str]] = []
        self.retries = 0
        self.exhausted = 0

    def fell_back(self, route: str, backend: str, reason: str) -> None:
        self.fallbacks.append((backend, reason))

    def retried(self, route: str, backend: str) -> None:
        self.retries += 1

    def retry_budget_exhausted(self, route: str, backend: str) -> None:
        self.exhausted += 1


class Script:
    """An attempt function answering from a per-backend script of outcomes (the last one repeats)."""

    def __init__(self, **outcomes: list[ProviderError | None]) -> None:
        self._outcomes = outcomes
        self.calls: list[str] = []

    def _next(self, name: str) -> ProviderError | None:
        queue = self._outcomes[name]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def __call__(self, backend: BackendEntry, deadline: float) -> Any:
        self.calls.append(backend.name)
        error = self._next(backend.name)
        if error is not None:
            raise error
        return {"from": backend.name}


def _setup(
    models: dict[str, list[str]], *, clock: Callable[[], float] = time.monotonic, **kwargs: object
) -> tuple[HealthBook, Snapshot, Recorder]:
    recorder = Recorder()
    book = HealthBook(clock=clock, listener=recorder, budget_min_retries=2)
    snap = snapshot(models, **kwargs)
    book.sync(snap)
    return book, snap, recorder


def _candidates(snap: Snapshot, *names: str) -> list[BackendEntry]:
    by_name = snap.models["chat"].backends_by_name
    return [by_name[n] for n in names]


def _boom(kind: ErrorKind = ErrorKind.SERVER, retry_after: float | None = None) -> ProviderError:
    return ProviderError(kind, kind.value, retry_after=retry_after)


async def _run(
    book: HealthBook, candidates: list[BackendEntry], script: Script, policy: Policy = FAST
) -> tuple[str, Trace]:
    trace = Trace()
    backend, _ = await _attempts(candidates, policy, trace, script, health=RouteHealth(book, "r"))
    return backend.name, trace


async def test_an_ejected_backend_is_skipped_and_the_skip_is_a_fallback() -> None:
    book, snap, recorder = _setup({"chat": ["a", "b"]}, circuit=breaker(consecutive=3))
    script = Script(a=[_boom()], b=[None])
    assert (await _run(book, _candidates(snap, "a", "b"), script))[0] == "b"
    assert script.calls == ["a", "a", "a", "b"] and book.state("r", "a") is State.OPEN
    script.calls.clear()
    name, trace = await _run(book, _candidates(snap, "a", "b"), script)
    assert name == "b" and script.calls == ["b"] and trace.attempts == 1
    assert recorder.fallbacks == [("a", "server"), ("a", "ejected")]


async def test_when_every_candidate_is_ejected_they_are_tried_anyway() -> None:
    book, snap, _ = _setup({"chat": ["a", "b"]}, circuit=breaker(consecutive=1))
    script = Script(a=[_boom(), None], b=[None])
    await _run(book, _candidates(snap, "a", "b"), script)
    assert book.state("r", "a") is State.OPEN
    script.calls.clear()
    # A request whose only candidate is the ejected one (a rule, a capability filter).
    name, _ = await _run(book, _candidates(snap, "a"), script)
    assert name == "a" and script.calls == ["a"]
    assert book.state("r", "a") is State.OPEN, "a forced attempt is not a probe"


async def test_a_spent_retry_budget_falls_back_instead_of_retrying() -> None:
    book, snap, recorder = _setup({"chat": ["a", "b"]}, circuit=breaker(consecutive=0), budget=0.0)
    script = Script(a=[_boom()], b=[None])
    await _run(book, _candidates(snap, "a", "b"), script)
    assert script.calls == ["a", "a", "a", "b"], "the floor of 2 retries is spent"
    script.calls.clear()
    await _run(book, _candidates(snap, "a", "b"), script)
    assert script.calls == ["a", "b"]
    assert recorder.retries == 2 and recorder.exhausted == 1


async def test_a_spent_retry_budget_stops_when_nothing_is_left() -> None:
    book, snap, _ = _setup({"chat": ["a", "b"]}, circuit=breaker(consecutive=0), budget=0.0)
    script = Script(a=[_boom()])
    with pytest.raises(AllFailed):
        await _run(book, _candidates(snap, "a"), script)
    script.calls.clear()
    with pytest.raises(AllFailed):
        await _run(book, _candidates(snap, "a"), script)
    assert script.calls == ["a"]


async def test_auth_errors_go_to_the_next_backend_and_do_not_trip_the_breaker() -> None:
    book, snap, _ = _setup({"chat": ["a", "b"]}, circuit=breaker(consecutive=1))
    script = Script(a=[_boom(ErrorKind.AUTH)], b=[None])
    for _ in range(3):
        await _run(book, _candidates(snap, "a", "b"), script)
    assert script.calls == ["a", "b"] * 3 and book.state("r", "a") is State.CLOSED


async def test_retry_after_is_waited_out_and_other_requests_skip_the_held_backend() -> None:
    book, snap, _ = _setup({"chat": ["a", "b"]})
    limited = _boom(ErrorKind.RATE_LIMITED, retry_after=0.2)
    script = Script(a=[limited, None], b=[None])
    started = time.monotonic()
    policy = Policy(per_attempt=1.0, total=5.0, retries=1, backoff_base=0.001, backoff_max=0.002)
    first = asyncio.create_task(_run(book, _candidates(snap, "a", "b"), script, policy))
    await asyncio.sleep(0.05)
    assert (await _run(book, _candidates(snap, "a", "b"), script, policy))[0] == "b", "a is held"
    assert (await first)[0] == "a"
    assert time.monotonic() - started >= 0.2
    assert script.calls == ["a", "b", "a"]


async def test_a_retry_refused_after_its_backoff_is_neither_counted_nor_charged() -> None:
    book, snap, recorder = _setup({"chat": ["a", "b"]}, budget=0.0)
    script = Script(a=[_boom(ErrorKind.RATE_LIMITED, retry_after=0.1)], b=[None])
    policy = Policy(per_attempt=1.0, total=5.0, retries=1, backoff_base=0.001, backoff_max=0.002)
    run = asyncio.create_task(_run(book, _candidates(snap, "a", "b"), script, policy))
    await asyncio.sleep(0.05)
    # While the first request waits out Retry-After, another 429 extends the hold past its retry.
    book.hold(book.record("r", "a"), 1.0)  # type: ignore[arg-type]
    name, trace = await run
    assert name == "b" and script.calls == ["a", "b"] and trace.attempts == 2
    budget = book.budget("r")
    assert recorder.retries == 0 and budget is not None and budget.usage()[1] == 0


async def test_a_held_only_candidate_is_waited_for_within_the_total_timeout() -> None:
    book, snap, _ = _setup({"chat": ["a", "b"]})
    script = Script(a=[_boom(ErrorKind.RATE_LIMITED, retry_after=0.15), None])
    no_retry = Policy(per_attempt=1.0, total=5.0, retries=0)
    with pytest.raises(AllFailed):
        await _run(book, _candidates(snap, "a"), script, no_retry)
    started = time.monotonic()
    assert (await _run(book, _candidates(snap, "a"), script, no_retry))[0] == "a"
    assert time.monotonic() - started >= 0.1
    # A hold longer than the total timeout fails at once as rate limited, with the wait.
    book.hold(book.record("r", "a"), 10.0)  # type: ignore[arg-type]
    with pytest.raises(AllFailed) as failed:
        await _run(book, _candidates(snap, "a"), script, no_retry)
    final = failed.value.final
    assert final is not None and final.kind is ErrorKind.RATE_LIMITED
    assert final.retry_after is not None and final.retry_after > 9


async def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = FakeClock()
    book, snap, _ = _setup({"chat": ["a", "b"]}, clock=clock, circuit=breaker(consecutive=1))
    await _run(book, _candidates(snap, "a", "b"), Script(a=[_boom()], b=[None]))
    clock.advance(5)
    started = asyncio.Event()

    async def hang(backend: BackendEntry, deadline: float) -> Any:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(
        _attempts(_candidates(snap, "a"), FAST, Trace(), hang, health=RouteHealth(book, "r"))
    )
    await started.wait()
    assert not book.available("r", "a"), "the probe is out"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert book.available("r", "a") and book.state("r", "a") is State.HALF_OPEN

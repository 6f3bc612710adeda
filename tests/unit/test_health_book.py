"""The health book (``health/book.py``, ``outlier.py``, ``admission.py``): the ejection cap, config
swaps, Retry-After holds, latency feeding and metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.config.snapshot import BackendEntry, Snapshot
from llmroute_sidecar.health import (
    HealthBook,
    HealthListener,
    MetricsListener,
    Refusal,
    RouteHealth,
    State,
    Ticket,
    ejection_cap,
)

from .health_support import FakeClock, breaker, snapshot


class Recorder(HealthListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def transition(self, route: str, backend: str, old: State, new: State, reason: str) -> None:
        self.events.append(("transition", backend, new.value))

    def ejection_suppressed(self, route: str, backend: str, reason: str) -> None:
        self.events.append(("suppressed", backend))

    def fell_back(self, route: str, backend: str, reason: str) -> None:
        self.events.append(("fell_back", backend, reason))


def _backend(snap: Snapshot, name: str) -> BackendEntry:
    for entry in snap.models.values():
        if name in entry.backends_by_name:
            return entry.backends_by_name[name]
    raise KeyError(name)


def _fail(
    book: HealthBook, snap: Snapshot, name: str, times: int = 1, kind: ErrorKind = ErrorKind.SERVER
) -> None:
    health = RouteHealth(book, "r")
    for _ in range(times):
        ticket = health.admit(_backend(snap, name))
        assert isinstance(ticket, Ticket)
        health.settle(ticket, ProviderError(kind, "boom"), 0.01)


@pytest.mark.parametrize(
    ("percent", "size", "cap"),
    [
        (50, 1, 0),
        (100, 1, 0),
        (50, 2, 1),
        (50, 3, 1),
        (50, 4, 2),
        (100, 4, 3),
        (0, 5, 0),
        (34, 3, 1),
        (10, 5, 0),
    ],
)
def test_ejection_cap(percent: int, size: int, cap: int) -> None:
    assert ejection_cap(percent, size) == cap


def test_cap_keeps_half_of_two_backends_in() -> None:
    clock, recorder = FakeClock(), Recorder()
    book = HealthBook(clock=clock, listener=recorder)
    snap = snapshot({"chat": ["a", "b"]}, circuit=breaker(consecutive=2))
    book.sync(snap)
    _fail(book, snap, "a", 2)
    assert book.state("r", "a") is State.OPEN and not book.available("r", "a")
    _fail(book, snap, "b", 2)
    assert book.state("r", "b") is State.CLOSED and book.available("r", "b")
    assert ("suppressed", "b") in recorder.events
    # Once a recovers, b may be ejected.
    clock.advance(5)
    health = RouteHealth(book, "r")
    probe = health.admit(_backend(snap, "a"))
    assert isinstance(probe, Ticket) and probe.probe
    health.settle(probe, None, 0.1)
    _fail(book, snap, "b", 2)
    assert book.state("r", "b") is State.OPEN


def test_a_single_backend_model_is_never_ejected() -> None:
    book = HealthBook(clock=FakeClock())
    snap = snapshot({"solo": ["a"]}, circuit=breaker(consecutive=1, max_ejected_percent=100))
    book.sync(snap)
    _fail(book, snap, "a", 5)
    assert book.state("r", "a") is State.CLOSED


def test_a_backend_shared_by_two_models_respects_both_caps() -> None:
    book = HealthBook(clock=FakeClock())
    snap = snapshot({"big": ["a", "b", "c", "d"], "small": ["a", "b"]}, circuit=breaker(consecutive=1))
    book.sync(snap)
    _fail(book, snap, "a")
    _fail(book, snap, "b")  # big allows 2 out, but small only 1 of {a, b}
    _fail(book, snap, "c")
    assert [book.state("r", n) for n in "abcd"] == [State.OPEN, State.CLOSED, State.OPEN, State.CLOSED]


def test_sync_keeps_unchanged_backends_and_drops_the_others() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    book = HealthBook(clock=clock, listener=MetricsListener(registry))
    first = snapshot({"chat": ["a", "b", "c", "d"]}, circuit=breaker(consecutive=1))
    book.sync(first)
    _fail(book, first, "a")
    _fail(book, first, "b")
    assert (
        registry.get_sample_value(
            "llmroute_circuit_breaker_state", {"route": "r", "backend": "a", "state": "open"}
        )
        == 1
    )
    # a keeps its endpoint, b moves, d disappears.
    second = snapshot(
        {"chat": ["a", "b", "c"]},
        circuit=breaker(consecutive=1),
        endpoints={"b": "http://elsewhere.invalid/v1"},
        version="v2",
    )
    book.sync(second)
    assert book.state("r", "a") is State.OPEN, "same name and endpoint: state kept"
    assert book.state("r", "b") is State.CLOSED, "new endpoint: a fresh start"
    assert book.state("r", "d") is None
    assert (
        registry.get_sample_value(
            "llmroute_circuit_breaker_state", {"route": "r", "backend": "d", "state": "closed"}
        )
        is None
    )


def test_sync_reinstates_ejections_above_a_shrunken_cap() -> None:
    clock = FakeClock()
    book = HealthBook(clock=clock)
    first = snapshot({"chat": ["a", "b", "c", "d"]}, circuit=breaker(consecutive=1))
    book.sync(first)
    _fail(book, first, "a")
    clock.advance(1)
    _fail(book, first, "b")
    book.sync(snapshot({"chat": ["a", "b", "c"]}, circuit=breaker(consecutive=1), version="v2"))
    assert book.state("r", "a") is State.OPEN
    assert book.state("r", "b") is State.CLOSED, "the latest ejection goes back first"


def test_retry_after_holds_the_backend_back() -> None:
    clock = FakeClock()
    book = HealthBook(clock=clock)
    snap = snapshot({"chat": ["a", "b"]}, circuit=breaker(consecutive=1))
    book.sync(snap)
    health = RouteHealth(book, "r")
    ticket = health.admit(_backend(snap, "a"))
    assert isinstance(ticket, Ticket)
    health.settle(ticket, ProviderError(ErrorKind.RATE_LIMITED, "slow down", retry_after=2.0), 0.01)
    assert book.state("r", "a") is State.CLOSED, "a 429 is not a health failure"
    assert not book.available("r", "a")
    refusal = health.admit(_backend(snap, "a"), force=True)
    assert isinstance(refusal, Refusal) and refusal.reason == "held"
    assert refusal.wait == pytest.approx(2.0)
    clock.advance(2.0)
    assert book.available("r", "a")


def test_neutral_failures_free_a_probe_slot_without_deciding() -> None:
    clock = FakeClock()
    book = HealthBook(clock=clock)
    snap = snapshot({"chat": ["a", "b"]}, circuit=breaker(consecutive=1))
    book.sync(snap)
    _fail(book, snap, "a")
    clock.advance(5)
    health = RouteHealth(book, "r")
    probe = health.admit(_backend(snap, "a"))
    assert isinstance(probe, Ticket) and probe.probe
    assert isinstance(health.admit(_backend(snap, "a")), Refusal)
    health.settle(probe, ProviderError(ErrorKind.BAD_REQUEST, "bad"), 0.01)
    assert book.state("r", "a") is State.HALF_OPEN and book.available("r", "a")
    forced = health.admit(_backend(snap, "a"), force=True)
    assert isinstance(forced, Ticket)


def test_latency_is_fed_by_answers_and_timeouts_per_kind() -> None:
    clock = FakeClock()
    book = HealthBook(clock=clock)
    snap = snapshot({"chat": ["a", "b"]})
    book.sync(snap)
    assert book.latency("r", "a") is None
    plain, stream = RouteHealth(book, "r"), RouteHealth(book, "r", stream=True)
    for health, seconds in ((plain, 2.0), (stream, 0.3)):
        ticket = health.admit(_backend(snap, "a"))
        assert isinstance(ticket, Ticket)
        health.settle(ticket, None, seconds)
    ticket = plain.admit(_backend(snap, "a"))
    assert isinstance(ticket, Ticket)
    plain.settle(ticket, ProviderError(ErrorKind.SERVER, "fast failure"), 0.001)
    assert book.latency("r", "a") == pytest.approx(2.0), "a fast failure must not look fast"
    assert book.latency("r", "a", stream=True) == pytest.approx(0.3)
    assert book.backend_latency(_backend(snap, "a"), True) == pytest.approx(0.3)
    clock.advance(10)
    ticket = plain.admit(_backend(snap, "a"))
    assert isinstance(ticket, Ticket)
    plain.settle(ticket, ProviderError(ErrorKind.TIMEOUT, "slow"), 30.0)
    latency = book.latency("r", "a")
    assert latency is not None and latency > 20.0


def test_stream_breaks_after_the_first_chunk_count() -> None:
    book = HealthBook(clock=FakeClock())
    snap = snapshot({"chat": ["a", "b"]}, circuit=breaker(consecutive=2))
    book.sync(snap)
    health = RouteHealth(book, "r", stream=True)
    for _ in range(2):
        health.stream_broken(_backend(snap, "a"), ProviderError(ErrorKind.STREAM_CUT, "cut"))
    assert book.state("r", "a") is State.OPEN
    assert book.states() == {"r": {"a": "open", "b": "closed"}}


def test_unknown_backends_are_available_and_untracked() -> None:
    book = HealthBook(clock=FakeClock())
    assert book.available("nowhere", "x") and book.latency("nowhere", "x") is None

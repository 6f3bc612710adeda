"""Property: over random breaker configs, model layouts, fault sequences and config swaps, the
number of ejected backends of a model never exceeds its cap (floor of percent x count, never all)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.config.snapshot import Snapshot
from llmroute_sidecar.health import HealthBook, RouteHealth, State, Ticket, ejection_cap

from .health_support import FakeClock, breaker, snapshot

NAMES = ["b0", "b1", "b2", "b3", "b4", "b5"]
# Mostly failures that count, so that breakers keep trying to open.
OUTCOMES = [
    None,
    ErrorKind.SERVER,
    ErrorKind.SERVER,
    ErrorKind.OVERLOADED,
    ErrorKind.TIMEOUT,
    ErrorKind.CONNECTION,
    ErrorKind.RATE_LIMITED,
    ErrorKind.AUTH,
]


@dataclass(frozen=True)
class Step:
    backend: int
    outcome: ErrorKind | None
    advance: float
    force: bool


groups = st.one_of(
    st.lists(st.sampled_from(NAMES), min_size=2, max_size=6, unique=True),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True),
)
layouts = st.lists(groups, min_size=1, max_size=3)
steps = st.builds(
    Step,
    backend=st.integers(0, len(NAMES) - 1),
    outcome=st.sampled_from(OUTCOMES),
    advance=st.sampled_from([0.0, 0.0, 0.5, 2.0, 6.0]),
    force=st.booleans(),
)
circuits = st.builds(
    breaker,
    consecutive=st.integers(0, 2),
    rate=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    min_requests=st.integers(1, 5),
    window=st.sampled_from([1.0, 10.0]),
    cooldown=st.sampled_from([1.0, 5.0]),
    max_ejected_percent=st.one_of(st.sampled_from([0, 34, 50, 67, 100]), st.integers(0, 100)),
)


def _snapshot(layout: list[list[str]], circuit: object, version: int) -> Snapshot:
    models = {f"m{i}": backends for i, backends in enumerate(layout)}
    return snapshot(models, circuit=circuit, version=f"v{version}")


def _check(book: HealthBook, snap: Snapshot, percent: int) -> None:
    for entry in snap.models.values():
        names = {b.name for b in entry.backends}
        out = [n for n in names if book.state("r", n) in (State.OPEN, State.HALF_OPEN)]
        assert len(out) <= ejection_cap(percent, len(names)), (entry.name, sorted(names), out)
        assert len(out) < len(names)


@settings(max_examples=300, deadline=None)
@given(
    layout=layouts,
    circuit=circuits,
    script=st.lists(st.one_of(steps, steps, steps, layouts), min_size=10, max_size=120),
)
def test_ejections_never_exceed_the_cap(
    layout: list[list[str]], circuit: object, script: list[Step | list[list[str]]]
) -> None:
    clock = FakeClock()
    book = HealthBook(clock=clock)
    snap = _snapshot(layout, circuit, 0)
    book.sync(snap)
    percent = circuit.max_ejected_percent  # type: ignore[attr-defined]
    for index, step in enumerate(script):
        if isinstance(step, list):  # a config swap to another layout of the same backends
            snap = _snapshot(step, circuit, index + 1)
            book.sync(snap)
            _check(book, snap, percent)
            continue
        clock.advance(step.advance)
        name = NAMES[step.backend]
        backend = next(
            (e.backends_by_name[name] for e in snap.models.values() if name in e.backends_by_name), None
        )
        if backend is None:
            continue
        health = RouteHealth(book, "r")
        ticket = health.admit(backend, force=step.force)
        if isinstance(ticket, Ticket):
            error = None if step.outcome is None else ProviderError(step.outcome, "x", retry_after=0.5)
            health.settle(ticket, error, 0.01)
        _check(book, snap, percent)

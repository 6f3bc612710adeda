"""The circuit breaker alone (``health/breaker.py``): every transition, with a hand-moved clock."""

from __future__ import annotations

import pytest

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.adapters.errors import ErrorKind
from llmroute_sidecar.health import Breaker, BreakerConfig, State, counts_against_health

from .health_support import FakeClock, breaker


def _breaker(clock: FakeClock, **overrides: object) -> tuple[Breaker, list[tuple[State, State, str]]]:
    values: dict[str, object] = {
        "consecutive_failures": 3,
        "failure_rate": 0.0,
        "min_requests": 10,
        "window": 10.0,
        "cooldown": 5.0,
        "max_cooldown": 40.0,
    }
    values.update(overrides)
    seen: list[tuple[State, State, str]] = []
    cb = Breaker(
        BreakerConfig(**values),  # type: ignore[arg-type]
        clock=clock,
        name="r/a",
        on_transition=lambda old, new, why: seen.append((old, new, why)),
    )
    return cb, seen


def _state(cb: Breaker) -> State:
    """The state, read through a function so that mypy does not narrow it across transitions."""
    return cb.state


def _fail(cb: Breaker, times: int = 1) -> None:
    for _ in range(times):
        permit = cb.acquire()
        assert permit is not None
        cb.failure(permit, "server")


def _ok(cb: Breaker, times: int = 1) -> None:
    for _ in range(times):
        permit = cb.acquire()
        assert permit is not None
        cb.success(permit)


def test_consecutive_failures_open_the_breaker() -> None:
    clock = FakeClock()
    cb, seen = _breaker(clock)
    _fail(cb, 2)
    assert _state(cb) is State.CLOSED and cb.allows()
    _fail(cb)
    assert _state(cb) is State.OPEN and not cb.allows() and cb.acquire() is None
    assert seen[0][:2] == (State.CLOSED, State.OPEN)
    assert "3 failures in a row" in seen[0][2] and "server" in seen[0][2]


def test_a_success_resets_the_run_of_failures() -> None:
    cb, _ = _breaker(FakeClock())
    for _ in range(5):
        _fail(cb, 2)
        _ok(cb)
    assert _state(cb) is State.CLOSED


def test_failure_rate_waits_for_min_requests() -> None:
    clock = FakeClock()
    cb, seen = _breaker(clock, consecutive_failures=0, failure_rate=0.5, min_requests=10)
    for _ in range(4):
        _fail(cb)
        _ok(cb)
    _fail(cb)  # 5 failures of 9: rate above 0.5, but fewer than min_requests outcomes
    assert _state(cb) is State.CLOSED
    _ok(cb)  # 5 of 10 = 0.5 but the judgement happens on failures
    assert _state(cb) is State.CLOSED
    _fail(cb)  # 6 of 11
    assert _state(cb) is State.OPEN
    assert "failure rate 6/11" in seen[-1][2]


def test_failure_rate_forgets_outcomes_older_than_the_window() -> None:
    clock = FakeClock()
    cb, _ = _breaker(clock, consecutive_failures=0, failure_rate=0.5, min_requests=4, window=10.0)
    _fail(cb, 3)
    clock.advance(11)  # those failures slid out of the window
    _ok(cb, 3)
    _fail(cb)  # 1 of 4
    assert _state(cb) is State.CLOSED


def test_cooldown_then_half_open_with_one_probe_at_a_time() -> None:
    clock = FakeClock()
    cb, seen = _breaker(clock)
    _fail(cb, 3)
    clock.advance(4.9)
    assert _state(cb) is State.OPEN and not cb.allows()
    clock.advance(0.1)
    assert cb.allows()
    assert _state(cb) is State.HALF_OPEN
    probe = cb.acquire()
    assert probe is not None and probe.probe
    assert cb.acquire() is None and not cb.allows(), "a single probe at a time"
    cb.release(probe)  # cancelled without an outcome
    assert cb.allows()
    assert [new for _, new, _ in seen] == [State.OPEN, State.HALF_OPEN]


def test_probe_success_closes() -> None:
    clock = FakeClock()
    cb, seen = _breaker(clock)
    _fail(cb, 3)
    clock.advance(5)
    probe = cb.acquire()
    assert probe is not None
    cb.success(probe)
    assert _state(cb) is State.CLOSED
    assert seen[-1][1] is State.CLOSED and "probe succeeded" in seen[-1][2]
    _fail(cb, 2)  # counts start afresh after closing
    assert _state(cb) is State.CLOSED


def test_probe_failure_reopens_with_a_longer_cooldown_up_to_the_maximum() -> None:
    clock = FakeClock()
    cb, _ = _breaker(clock, cooldown=5.0, max_cooldown=12.0)
    _fail(cb, 3)
    cooldowns = [cb.cooldown]
    for _ in range(3):
        clock.advance(cb.cooldown)
        probe = cb.acquire()
        assert probe is not None and probe.probe
        cb.failure(probe, "connection")
        assert _state(cb) is State.OPEN
        cooldowns.append(cb.cooldown)
    assert cooldowns == [5.0, 10.0, 12.0, 12.0]
    clock.advance(12)
    probe = cb.acquire()
    assert probe is not None
    cb.success(probe)
    _fail(cb, 3)
    assert cb.cooldown == 5.0, "closing resets the backoff"


def test_outcomes_of_attempts_started_before_a_transition_are_ignored() -> None:
    clock = FakeClock()
    cb, _ = _breaker(clock)
    early = cb.acquire()
    assert early is not None
    _fail(cb, 3)
    clock.advance(5)
    assert _state(cb) is State.HALF_OPEN
    cb.success(early)  # not the probe: says nothing about now
    assert _state(cb) is State.HALF_OPEN
    cb.failure(early)
    assert _state(cb) is State.HALF_OPEN


def test_a_vetoed_opening_keeps_the_breaker_closed_and_starts_afresh() -> None:
    suppressed: list[str] = []
    cb = Breaker(
        BreakerConfig(consecutive_failures=2, failure_rate=0.0),
        clock=FakeClock(),
        may_open=lambda: False,
        on_suppressed=suppressed.append,
    )
    _fail(cb, 2)
    assert _state(cb) is State.CLOSED and len(suppressed) == 1
    _fail(cb)
    assert len(suppressed) == 1, "the run of failures restarted"
    _fail(cb)
    assert len(suppressed) == 2


def test_failures_outside_attempts_count_while_closed() -> None:
    cb, _ = _breaker(FakeClock())
    for _ in range(3):
        cb.note_failure("stream_cut")
    assert _state(cb) is State.OPEN


def test_reconfigure_keeps_state_and_turning_off_closes() -> None:
    cb, _ = _breaker(FakeClock())
    _fail(cb, 2)
    cb.reconfigure(BreakerConfig(consecutive_failures=3, failure_rate=0.0, window=10.0))
    _fail(cb)
    assert _state(cb) is State.OPEN
    cb.reconfigure(BreakerConfig.off())
    assert _state(cb) is State.CLOSED


@pytest.mark.parametrize(
    ("kind", "counts"),
    [
        (ErrorKind.SERVER, True),
        (ErrorKind.OVERLOADED, True),
        (ErrorKind.TIMEOUT, True),
        (ErrorKind.CONNECTION, True),
        (ErrorKind.STREAM_CUT, True),
        (ErrorKind.PROTOCOL, True),
        (ErrorKind.RATE_LIMITED, False),
        (ErrorKind.AUTH, False),
        (ErrorKind.BAD_REQUEST, False),
        (ErrorKind.NOT_FOUND, False),
        (ErrorKind.CONTEXT_TOO_LONG, False),
    ],
)
def test_which_failures_count_against_health(kind: ErrorKind, counts: bool) -> None:
    assert counts_against_health(kind) is counts


def test_config_from_route() -> None:
    assert not BreakerConfig.from_route(pb.Route(name="r")).enabled, "no resilience: never ejects"
    route = pb.Route(name="r", resilience=pb.Resilience(circuit_breaker=breaker(consecutive=7, rate=0.4)))
    cfg = BreakerConfig.from_route(route)
    assert (cfg.consecutive_failures, cfg.failure_rate, cfg.window, cfg.cooldown) == (7, 0.4, 10.0, 5.0)
    assert cfg.max_ejected_percent == 50 and cfg.min_requests == 10 and cfg.max_cooldown == 300.0

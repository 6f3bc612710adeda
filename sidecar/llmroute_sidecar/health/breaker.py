"""The circuit breaker of one backend: CLOSED, OPEN, HALF_OPEN.

- CLOSED: traffic flows. The breaker opens after ``consecutive_failures`` failures in a row, or when
  the failure rate over the sliding ``window`` reaches ``failure_rate`` once ``min_requests``
  outcomes were seen in it. Either trigger is off when its setting is 0.
- OPEN: the backend is ejected for ``cooldown``; every re-opening without a successful probe in
  between doubles it, up to ``max_cooldown``.
- HALF_OPEN: one probe at a time is let through. Its success closes the breaker; its failure opens
  it again.

Which failures count (:func:`counts_against_health`): server errors, overload, timeouts, connection
failures, cut streams and unparseable answers — signs that the backend itself is unwell. A 429 does
not count: the provider is up and protecting itself, and it says for how long with Retry-After,
which ``book.py`` honours by holding the backend back for exactly that long instead of ejecting it
for a whole cooldown. Auth errors, 400s, 404s and context overflows do not count either: they are
about the key, the deployment or the request, and ejecting the backend would not fix them.

Opening can be vetoed by ``may_open`` (``outlier.py``'s ejection cap, asked through ``book.py``);
a vetoed opening is reported through ``on_suppressed`` and starts the counts afresh. Every transition
is logged and reported through ``on_transition``. Pure logic with an injectable clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from llmroute_proto.v1 import config_pb2 as pb

from ..adapters.errors import ErrorKind
from .window import Clock, SlidingCounts

__all__ = ["Breaker", "BreakerConfig", "Permit", "State", "counts_against_health"]

log = logging.getLogger(__name__)

_UNHEALTHY = frozenset(
    {
        ErrorKind.SERVER,
        ErrorKind.OVERLOADED,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.STREAM_CUT,
        ErrorKind.PROTOCOL,
    }
)
_OK, _FAILED = 0, 1
# A probe that never reports back (it should, through try/finally) frees its slot after this long.
_PROBE_LEASE_S = 300.0


def counts_against_health(kind: ErrorKind) -> bool:
    """Whether a failure of this kind is evidence that the backend is unwell."""
    return kind in _UNHEALTHY


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """A route's ``resilience.circuitBreaker``, in seconds. The defaults are the CRD's."""

    consecutive_failures: int = 5
    failure_rate: float = 0.5
    min_requests: int = 10
    window: float = 30.0
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    max_ejected_percent: int = 50

    @property
    def enabled(self) -> bool:
        return self.consecutive_failures > 0 or self.failure_rate > 0

    @classmethod
    def off(cls) -> BreakerConfig:
        return cls(consecutive_failures=0, failure_rate=0.0)

    @classmethod
    def from_route(cls, route: pb.Route) -> BreakerConfig:
        """The route's breaker; a route without one (a hand-written config) never ejects."""
        if not (route.HasField("resilience") and route.resilience.HasField("circuit_breaker")):
            return cls.off()
        cb = route.resilience.circuit_breaker
        cooldown = cb.cooldown.ToTimedelta().total_seconds() or 30.0
        return cls(
            consecutive_failures=cb.consecutive_failures,
            failure_rate=cb.failure_rate,
            min_requests=cb.min_requests or 10,
            window=cb.window.ToTimedelta().total_seconds() or 30.0,
            cooldown=cooldown,
            max_cooldown=max(cooldown, 300.0),
            max_ejected_percent=cb.max_ejected_percent,
        )


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to send one attempt; ``probe`` marks the single trial of a half-open breaker."""

    probe: bool
    generation: int


Transition = Callable[[State, State, str], None]


class Breaker:
    """One backend's breaker. Not thread-safe: the sidecar runs it on its single event loop."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Clock = time.monotonic,
        name: str = "",
        may_open: Callable[[], bool] | None = None,
        on_transition: Transition | None = None,
        on_suppressed: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._may_open = may_open
        self._on_transition = on_transition
        self._on_suppressed = on_suppressed
        self._state = State.CLOSED
        self._generation = 0
        self._permit = Permit(False, 0)  # the (shared) permit of this generation's normal attempts
        self._consecutive = 0
        self._counts = SlidingCounts(config.window, clock=clock)
        self._opened_at = 0.0
        self._cooldown = config.cooldown
        self._openings = 0  # openings since the breaker was last closed, for the cooldown backoff
        self._probe_since: float | None = None

    # -- reading ------------------------------------------------------------------------------

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def state(self) -> State:
        self._tick()
        return self._state

    @property
    def ejected(self) -> bool:
        """OPEN or HALF_OPEN: the backend is out of normal rotation (what the ejection cap counts)."""
        return self._state is not State.CLOSED

    @property
    def opened_at(self) -> float:
        return self._opened_at

    @property
    def cooldown(self) -> float:
        """The cooldown of the current (or last) opening."""
        return self._cooldown

    def allows(self) -> bool:
        """Whether an attempt would be let through now (no side effect but the cooldown clock)."""
        if self._state is State.CLOSED:  # the hot path: no clock read
            return True
        self._tick()  # OPEN may turn HALF_OPEN, never CLOSED
        return self._state is State.HALF_OPEN and self._probe_since is None

    # -- using --------------------------------------------------------------------------------

    def acquire(self) -> Permit | None:
        """A permit for one attempt, or None while OPEN or while the half-open probe is out."""
        if self._state is State.CLOSED:
            return self._permit
        self._tick()
        if self._state is State.HALF_OPEN and self._probe_since is None:
            self._probe_since = self._clock()
            return Permit(True, self._generation)
        return None

    def release(self, permit: Permit) -> None:
        """The attempt ended without an outcome (cancelled): free the probe slot."""
        if permit.probe and permit.generation == self._generation:
            self._probe_since = None

    def success(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return  # started before the last transition: stale evidence
        if permit.probe:
            self._probe_since = None
            self._close("the half-open probe succeeded")
        elif self._state is State.CLOSED:
            self._consecutive = 0
            if self._config.failure_rate > 0:
                self._counts.add(_OK)

    def failure(self, permit: Permit, reason: str = "") -> None:
        if permit.generation != self._generation:
            return
        if permit.probe:
            self._probe_since = None
            self._open(f"the half-open probe failed ({reason})" if reason else "the half-open probe failed")
            return
        if self._state is not State.CLOSED:
            return
        self._consecutive += 1
        if self._config.failure_rate > 0:
            self._counts.add(_FAILED)
        why = self._tripped()
        if why is None:
            return
        if reason:
            why = f"{why}, last: {reason}"
        if self._may_open is not None and not self._may_open():
            self._consecutive = 0
            self._counts.clear()
            if self._on_suppressed is not None:
                self._on_suppressed(why)
            return
        self._open(why)

    def note_failure(self, reason: str = "") -> None:
        """A failure outside an attempt (a stream cut after its first chunk); counts while CLOSED."""
        self.failure(self._permit, reason)

    def reconfigure(self, config: BreakerConfig) -> None:
        """Take a new config (a config swap), keeping the state; a new window restarts the counts."""
        if config.window != self._config.window:
            self._counts = SlidingCounts(config.window, clock=self._clock)
        self._config = config
        if not config.enabled and self._state is not State.CLOSED:
            self._close("the circuit breaker was turned off")

    def reinstate(self, reason: str) -> None:
        """Close the breaker whatever its state (the ejection cap shrank under it)."""
        if self._state is not State.CLOSED:
            self._close(reason)

    # -- transitions --------------------------------------------------------------------------

    def _tripped(self) -> str | None:
        cfg = self._config
        if cfg.consecutive_failures and self._consecutive >= cfg.consecutive_failures:
            return f"{self._consecutive} failures in a row"
        if cfg.failure_rate > 0:
            ok, failed = self._counts.totals()
            seen = ok + failed
            if seen >= cfg.min_requests and failed >= cfg.failure_rate * seen:
                return f"failure rate {failed}/{seen} over {cfg.window:g}s"
        return None

    def _tick(self) -> None:
        if self._state is State.OPEN and self._clock() >= self._opened_at + self._cooldown:
            self._move(State.HALF_OPEN, f"the {self._cooldown:g}s cooldown is over")
        elif (
            self._state is State.HALF_OPEN
            and self._probe_since is not None
            and self._clock() - self._probe_since > _PROBE_LEASE_S
        ):
            self._probe_since = None

    def _open(self, reason: str) -> None:
        cfg = self._config
        self._cooldown = min(cfg.cooldown * (2**self._openings), cfg.max_cooldown)
        self._openings += 1
        self._opened_at = self._clock()
        self._move(State.OPEN, f"{reason}; ejected for {self._cooldown:g}s")

    def _close(self, reason: str) -> None:
        self._openings = 0
        self._consecutive = 0
        self._counts.clear()
        self._probe_since = None
        self._move(State.CLOSED, reason)

    def _move(self, new: State, reason: str) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._permit = Permit(False, self._generation)
        level = logging.WARNING if new is State.OPEN else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s: %s", self.name, old.value, new.value, reason)
        if self._on_transition is not None:
            self._on_transition(old, new, reason)

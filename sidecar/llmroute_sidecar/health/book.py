"""The sidecar's health book: one record per (route, backend) — breaker, Retry-After hold, latency —
and one retry budget per route.

Readers:
- the planner (``routing/``) asks :meth:`HealthBook.available` and :meth:`HealthBook.latency` to
  order candidates;
- the attempt loop (``attempts.py``) goes through ``admission.py``'s :class:`RouteHealth`, which
  admits attempts, settles their outcomes and spends the retry budget.

:meth:`HealthBook.sync` follows config swaps (``runtime.py`` calls it from the store's swap hook):
records of backends that disappear, or whose provider, endpoint or model changed, are dropped; the
others keep their state and take the route's new breaker settings. Breakers consult
``outlier.py``'s :class:`EjectionGroups` before opening, so at most ``maxEjectedPercent`` of a
model's backends are out at once. Everything runs on the sidecar's event loop; no locks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from llmroute_proto.v1 import config_pb2 as pb

from ..config.snapshot import BackendEntry, Snapshot
from .breaker import Breaker, BreakerConfig, State
from .latency import LatencyEstimate
from .outlier import EjectionGroups
from .report import HealthListener
from .retry_budget import RetryBudget
from .window import Clock

__all__ = ["BackendHealth", "HealthBook"]

log = logging.getLogger(__name__)

# The longest Retry-After honoured as a hold on the backend (a provider may ask for hours).
_MAX_HOLD_S = 300.0


@dataclass(frozen=True)
class _Identity:
    """What makes a backend "the same" across config swaps: where requests go and what they ask."""

    provider: str
    endpoint: str
    model: str

    @classmethod
    def of(cls, backend: BackendEntry) -> _Identity:
        return cls(backend.provider, backend.target.endpoint, backend.target.model)


class BackendHealth:
    """The health record of one backend of one route."""

    __slots__ = ("breaker", "held_until", "identity", "name", "route", "total", "ttft")

    def __init__(self, route: str, name: str, identity: _Identity, breaker: Breaker, clock: Clock) -> None:
        self.route = route
        self.name = name
        self.identity = identity
        self.breaker = breaker
        self.held_until = 0.0  # a provider's Retry-After: no traffic before this time
        self.total = LatencyEstimate(clock=clock)  # non-streaming: time to the whole answer
        self.ttft = LatencyEstimate(clock=clock)  # streaming: time to the first chunk

    def latency(self, stream: bool) -> LatencyEstimate:
        return self.ttft if stream else self.total


class HealthBook:
    """Health of every backend the sidecar routes to; one per sidecar."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        listener: HealthListener | None = None,
        budget_window: float = 10.0,
        budget_min_retries: int = 10,
    ) -> None:
        self.clock = clock
        self.listener = listener or HealthListener()
        self._budget_window = budget_window
        self._budget_min_retries = budget_min_retries
        self._backends: dict[tuple[str, str], BackendHealth] = {}
        self._groups: dict[str, EjectionGroups] = {}
        self._budgets: dict[str, RetryBudget] = {}

    # -- the planner's questions ----------------------------------------------------------------

    def available(self, route: str, backend: str) -> bool:
        """Whether ``backend`` may take a request now: its breaker is closed (or has a free
        half-open probe slot) and no Retry-After holds it. Unknown backends are available."""
        record = self._backends.get((route, backend))
        if record is None:
            return True
        if record.held_until and record.held_until > self.clock():
            return False
        return record.breaker.allows()

    def latency(self, route: str, backend: str, *, stream: bool = False) -> float | None:
        """The decaying latency estimate in seconds (time to first token when ``stream``, total
        time otherwise); None when unknown or stale."""
        record = self._backends.get((route, backend))
        return None if record is None else record.latency(stream).value()

    def backend_available(self, backend: BackendEntry) -> bool:
        """:meth:`available` in the shape the planner takes (``routing.Availability``)."""
        return self.available(backend.route, backend.name)

    def backend_latency(self, backend: BackendEntry, stream: bool) -> float | None:
        """:meth:`latency` in the shape the planner takes (``routing.LatencyEstimate``)."""
        return self.latency(backend.route, backend.name, stream=stream)

    def latency_quantile(self, route: str, backend: str, q: float, *, stream: bool = False) -> float | None:
        record = self._backends.get((route, backend))
        return None if record is None else record.latency(stream).quantile(q)

    def state(self, route: str, backend: str) -> State | None:
        record = self._backends.get((route, backend))
        return None if record is None else record.breaker.state

    def states(self) -> dict[str, dict[str, str]]:
        """Breaker states by route and backend (for debugging and the admin server)."""
        out: dict[str, dict[str, str]] = {}
        for (route, name), record in sorted(self._backends.items()):
            out.setdefault(route, {})[name] = record.breaker.state.value
        return out

    # -- the attempt loop's records (through admission.RouteHealth) ----------------------------

    def record(self, route: str, backend: str) -> BackendHealth | None:
        return self._backends.get((route, backend))

    def budget(self, route: str) -> RetryBudget | None:
        return self._budgets.get(route)

    def hold(self, record: BackendHealth, seconds: float) -> None:
        """Honour a provider's Retry-After: no new traffic to ``record``'s backend for ``seconds``."""
        now = self.clock()
        until = now + min(seconds, _MAX_HOLD_S)
        if until <= record.held_until:
            return
        if record.held_until <= now:
            log.info("backend %s/%s: held back %.2gs by Retry-After", record.route, record.name, seconds)
            self.listener.throttled(record.route, record.name, seconds)
        record.held_until = until

    # -- config swaps ---------------------------------------------------------------------------

    def sync(self, snapshot: Snapshot) -> None:
        """Follow a new config: drop vanished or changed backends, keep and reconfigure the rest."""
        wanted: dict[tuple[str, str], BackendEntry] = {}
        configs: dict[str, BreakerConfig] = {}
        fractions: dict[str, float | None] = {}
        groups: dict[str, list[frozenset[str]]] = {}
        for entry in snapshot.models.values():
            route = entry.route.name
            if route not in configs:
                configs[route] = BreakerConfig.from_route(entry.route)
                fractions[route] = _budget_fraction(entry.route)
                for backend in entry.backends_by_name.values():
                    wanted[(route, backend.name)] = backend
            groups.setdefault(route, []).append(frozenset(b.name for b in entry.backends))

        for key, record in list(self._backends.items()):
            kept = wanted.get(key)
            if kept is None or _Identity.of(kept) != record.identity:
                del self._backends[key]
                self.listener.forgotten(record.route, record.name, record.breaker.state)
        for (route, name), backend in wanted.items():
            existing = self._backends.get((route, name))
            if existing is None:
                self._backends[(route, name)] = self._new_record(route, backend, configs[route])
                self.listener.tracked(route, name)
            else:
                existing.breaker.reconfigure(configs[route])

        self._groups = {
            route: EjectionGroups(sets, configs[route].max_ejected_percent) for route, sets in groups.items()
        }
        budgets: dict[str, RetryBudget] = {}
        for route, fraction in fractions.items():
            budget = self._budgets.get(route) or RetryBudget(
                fraction, window=self._budget_window, min_retries=self._budget_min_retries, clock=self.clock
            )
            budget.fraction = fraction
            budgets[route] = budget
        self._budgets = budgets
        self._enforce_caps()

    def _new_record(self, route: str, backend: BackendEntry, config: BreakerConfig) -> BackendHealth:
        name = backend.name
        listener = self.listener

        def on_transition(old: State, new: State, reason: str) -> None:
            listener.transition(route, name, old, new, reason)

        def on_suppressed(reason: str) -> None:
            log.warning(
                "circuit breaker %s/%s: not ejected (%s): maxEjectedPercent of the model's backends "
                "are already out",
                route,
                name,
                reason,
            )
            listener.ejection_suppressed(route, name, reason)

        breaker = Breaker(
            config,
            clock=self.clock,
            name=f"{route}/{name}",
            may_open=lambda: self._may_eject(route, name),
            on_transition=on_transition,
            on_suppressed=on_suppressed,
        )
        return BackendHealth(route, name, _Identity.of(backend), breaker, self.clock)

    def _ejected(self, route: str) -> _Ejected:
        return _Ejected(self._backends, route)

    def _may_eject(self, route: str, backend: str) -> bool:
        groups = self._groups.get(route)
        return groups is None or groups.may_eject(backend, self._ejected(route))

    def _enforce_caps(self) -> None:
        for route, groups in self._groups.items():
            ejected = self._ejected(route)
            for name in groups.excess(ejected, ejected.opened_at):
                self._backends[(route, name)].breaker.reinstate(
                    f"maxEjectedPercent {groups.percent} allows fewer ejections under the new config"
                )


class _Ejected:
    """``name -> bool`` over one route's breakers, as ``outlier.py`` takes it."""

    __slots__ = ("_backends", "_route")

    def __init__(self, backends: dict[tuple[str, str], BackendHealth], route: str) -> None:
        self._backends = backends
        self._route = route

    def __call__(self, name: str) -> bool:
        record = self._backends.get((self._route, name))
        return record is not None and record.breaker.ejected

    def opened_at(self, name: str) -> float:
        record = self._backends.get((self._route, name))
        return 0.0 if record is None else record.breaker.opened_at


def _budget_fraction(route: pb.Route) -> float | None:
    """``resilience.retries.budget_fraction``; None (no budget) when the config does not set it."""
    if not route.HasField("resilience"):
        return None
    retries = route.resilience.retries
    return retries.budget_fraction if retries.HasField("budget_fraction") else None

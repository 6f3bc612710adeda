"""Latency probes: how the ``latency`` strategy keeps measuring backends it has no estimate for.

The latency strategy orders by the health book's decaying estimates (``health/latency.py``), and
those only come from answered requests. A backend without an estimate (new, back after a config
swap that changed it, or whose last sample is older than the estimate's ``stale_after``, five
minutes) would otherwise sort behind every measured one and never be measured again: a backend
that was slow once would stay "slow" forever, and a new one would only ever see fallbacks.

So an unmeasured backend is *probed*: one request puts it first, the others stay in the strategy's
order behind it (a failed probe falls over to the fastest backend). :class:`LatencyProbes` bounds
the cost per backend and per sidecar, whatever the request rate: at most one probe every
``interval`` seconds (10 by default). Once the probe answers, the backend has a sample and is
ordered by it; once that sample goes stale, it is probed again, so a once-slow backend is
re-measured every few minutes and wins traffic back when it got faster.

:func:`probe` only looks at the leading group ``placement.py`` left (the healthy backends in the
sidecar's region when ``preferLocal``): a probe of a backend that would not get traffic anyway,
or that the health tracker holds back, would only waste the slot. Neighbours: ``planner.py`` calls
:func:`probe` after placement; the router service owns one :class:`LatencyProbes` per sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config.snapshot import BackendEntry
from .strategies import LatencyEstimate

__all__ = ["DEFAULT_PROBE_INTERVAL_S", "LatencyProbes", "probe"]

DEFAULT_PROBE_INTERVAL_S = 10.0

# The slots of backends that left the config are dropped once the table grows past this; a
# sidecar routes to tens of backends, so the sweep is rare and the table stays small.
_SWEEP_AT = 256


class LatencyProbes:
    """Probe slots per (route, backend): a backend may be probed once per ``interval`` seconds.

    One per sidecar, on the event loop (no locks). ``clock`` is injectable for tests.
    """

    __slots__ = ("_clock", "_last", "interval")

    def __init__(
        self, *, interval: float = DEFAULT_PROBE_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def claim(self, backend: BackendEntry) -> bool:
        """Take ``backend``'s probe slot if it is free (no probe in the last ``interval``)."""
        now = self._clock()
        key = (backend.route, backend.name)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if last is None and len(self._last) >= _SWEEP_AT:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        self._last[key] = now
        return True


def probe(
    ordered: list[BackendEntry],
    lead: int,
    latency: LatencyEstimate,
    probes: LatencyProbes,
    *,
    stream: bool,
) -> tuple[list[BackendEntry], BackendEntry | None]:
    """``ordered`` with one unmeasured backend of its first ``lead`` moved to the front, and that
    backend; ``ordered`` itself and None when no probe is due.

    When the first backend has no estimate, nothing in the group has one (measured backends sort
    first): this request measures it anyway, so no slot is spent.
    """
    if lead < 2 or latency(ordered[0], stream) is None:
        return ordered, None
    for i in range(1, lead):
        backend = ordered[i]
        if latency(backend, stream) is None and probes.claim(backend):
            return [backend, *ordered[:i], *ordered[i + 1 :]], backend
    return ordered, None

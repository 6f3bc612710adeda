"""Prometheus series of the load layer: concurrency, queueing, rejections and coalescing.

``metrics.py`` owns the sidecar's registry and builds one :class:`LoadMetrics` on it;
``registry.py`` registers its limiters here (:meth:`LoadMetrics.track`) and hands each
:class:`~.limiter.BackendLimiter` a :class:`BackendObserver`; ``service.py`` counts coalesced
requests. Gauges (in flight, queue depth, limit) are read from the limiters when Prometheus scrapes,
so the request path pays nothing for them; the hot path only observes real queue waits and
rejections. Labels stay bounded: the backend name (from config) and the priority class
(``premium``/``standard``); never users, tenants or idempotency keys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..prom import Counter, Histogram
from .limiter import BackendLimiter, Priority

__all__ = ["BackendObserver", "LoadMetrics"]

# Queue waits are short by design (a full queue refuses at once), so the buckets start small.
_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

LimiterSource = Callable[[], Iterable[BackendLimiter]]


class LoadMetrics:
    """The load layer's metric families, registered on the sidecar's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._sources: list[LimiterSource] = []
        r.register(_LimiterGauges(self._sources))
        self.queue_wait = Histogram(
            "llmroute_backend_queue_wait_seconds",
            "Time requests spent queued for a backend's concurrency slot (requests that found a "
            "free slot did not queue and are not counted).",
            ["backend", "priority"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "llmroute_backend_queue_rejections",
            "Requests turned away by a saturated backend, by reason "
            "(queue_full, queue_timeout, displaced by a premium request).",
            ["backend", "priority", "reason"],
            registry=r,
        )
        self.coalesced = Counter(
            "llmroute_coalesced_requests",
            "Requests that joined an identical in-flight request (same Idempotency-Key) "
            "instead of calling upstream themselves.",
            registry=r,
        )

    def track(self, source: LimiterSource) -> None:
        """Report the limiters ``source()`` yields in the gauges, at every scrape."""
        self._sources.append(source)

    def observer(self, backend: str) -> BackendObserver:
        return BackendObserver(self, backend)


class BackendObserver:
    """One backend's metric children, resolved once: the hot path never looks labels up."""

    __slots__ = ("_metrics", "_wait", "backend")

    def __init__(self, metrics: LoadMetrics, backend: str) -> None:
        self._metrics = metrics
        self.backend = backend
        self._wait = {p: metrics.queue_wait.labels(backend, p.label) for p in Priority}

    def waited(self, priority: Priority, seconds: float) -> None:
        self._wait[priority].observe(seconds)

    def rejected(self, priority: Priority, reason: str) -> None:
        self._metrics.rejections.labels(self.backend, priority.label, reason).inc()


class _LimiterGauges(Collector):
    """In flight, queue depth and limit per backend, summed over routes that share a backend name."""

    def __init__(self, sources: list[LimiterSource]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "llmroute_backend_in_flight",
            "Upstream requests holding a concurrency slot of a backend (streams until they end).",
            labels=["backend"],
        )
        depth = GaugeMetricFamily(
            "llmroute_backend_queue_depth",
            "Requests waiting for a concurrency slot of a backend, by priority.",
            labels=["backend", "priority"],
        )
        limit = GaugeMetricFamily(
            "llmroute_backend_max_concurrency",
            "The backend's maxConcurrency on this sidecar (0: unlimited).",
            labels=["backend"],
        )
        flying: defaultdict[str, int] = defaultdict(int)
        queued: defaultdict[tuple[str, str], int] = defaultdict(int)
        limits: defaultdict[str, int] = defaultdict(int)
        for source in self._sources:
            for limiter in source():
                flying[limiter.name] += limiter.in_flight
                limits[limiter.name] += limiter.limit
                for priority in Priority:
                    queued[limiter.name, priority.label] += limiter.queued_for(priority)
        for name, count in sorted(flying.items()):
            in_flight.add_metric([name], count)
            limit.add_metric([name], limits[name])
        for (name, label), count in sorted(queued.items()):
            depth.add_metric([name, label], count)
        yield in_flight
        yield depth
        yield limit

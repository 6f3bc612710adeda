"""The sidecar's limiters, one per backend, kept in step with the running config.

:class:`LoadLimits` lives as long as the :class:`~llmroute_sidecar.service.RouterService` and hears
every config swap (``apply``): a changed ``maxConcurrency`` reconfigures the existing limiter, so
slots already out stay counted and the new limit applies to new acquisitions; a backend that left
the config is forgotten once idle. A request gets a :class:`Gate` for its priority and tenant (whose
turn it waits for in a queue, see ``limiter.py``) and passes it to the attempt loop (``attempts.py``), which enters the gate before each upstream attempt.
Neighbours: ``limiter.py`` (one backend's slots and queue), ``metrics.py`` (the observers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.snapshot import BackendEntry, Snapshot
from .limiter import BackendLimiter, Priority, Slot, priority_for
from .metrics import LoadMetrics

__all__ = ["Gate", "LoadLimits", "LoadSettings"]

_Key = tuple[str, str]  # (route, backend): backend names are unique within a route only


@dataclass(frozen=True)
class LoadSettings:
    """How queues are sized, per sidecar.

    ``queue_factor``: a backend queues up to ``ceil(maxConcurrency * queue_factor)`` requests
    (0: no queue, refuse as soon as every slot is taken). ``max_wait``: an optional cap in seconds
    on time spent queueing, on top of the per-attempt and total timeouts that always bound it.
    """

    queue_factor: float = 2.0
    max_wait: float | None = None

    def __post_init__(self) -> None:
        if not self.queue_factor >= 0:
            raise ValueError(f"queue_factor must be 0 or more, not {self.queue_factor}")
        if self.max_wait is not None and not self.max_wait > 0:
            raise ValueError(f"max_wait must be more than 0 seconds, not {self.max_wait}")

    def queue_size(self, limit: int) -> int:
        return math.ceil(limit * self.queue_factor) if limit > 0 else 0


class LoadLimits:
    """Limiters by backend, created on first use and reconfigured on config swaps."""

    def __init__(self, *, settings: LoadSettings | None = None, metrics: LoadMetrics | None = None) -> None:
        self.settings = settings or LoadSettings()
        self._metrics = metrics
        self._limiters: dict[_Key, BackendLimiter] = {}
        self._gates = {p: Gate(self, p) for p in Priority}
        if metrics is not None:
            metrics.track(lambda: list(self._limiters.values()))

    def limiter(self, backend: BackendEntry) -> BackendLimiter:
        key = (backend.route, backend.name)
        found = self._limiters.get(key)
        if found is None:
            found = self._limiters[key] = self._new(backend)
        return found

    def _new(self, backend: BackendEntry) -> BackendLimiter:
        limit = backend.max_concurrency
        observer = self._metrics.observer(backend.name) if self._metrics is not None else None
        return BackendLimiter(backend.name, limit, self.settings.queue_size(limit), observer=observer)

    def apply(self, snapshot: Snapshot) -> None:
        """Bring limits in line with ``snapshot`` (a ``ConfigStore.on_swap`` listener)."""
        seen: set[_Key] = set()
        for entry in snapshot.models.values():
            for backend in (*entry.backends, *entry.backends_by_name.values()):
                key = (backend.route, backend.name)
                if key in seen:
                    continue
                seen.add(key)
                found = self._limiters.get(key)
                if found is None:
                    self._limiters[key] = self._new(backend)
                elif found.limit != backend.max_concurrency:
                    limit = backend.max_concurrency
                    found.configure(limit, self.settings.queue_size(limit))
        for key in [k for k, lim in self._limiters.items() if k not in seen and lim.idle]:
            del self._limiters[key]

    def gate(self, tier: str, tenant: str = "") -> Gate:
        """The admission gate of one request, by its ``x-llmroute-tier`` and its tenant (queued
        requests of different tenants are served in turn; ``""`` is one shared tenant)."""
        if tenant:
            return Gate(self, priority_for(tier), tenant)
        return self._gates[priority_for(tier)]

    def __len__(self) -> int:
        return len(self._limiters)


@dataclass(frozen=True)
class Gate:
    """What the attempt loop enters before each upstream attempt: a slot of that backend, waited
    for at most ``wait`` seconds (the caller passes what its timeouts leave), queued in
    ``tenant``'s turn."""

    limits: LoadLimits
    priority: Priority = Priority.STANDARD
    tenant: str = ""

    async def enter(self, backend: BackendEntry, wait: float) -> Slot:
        limiter = self.limits.limiter(backend)
        slot = limiter.try_acquire(self.priority)
        if slot is not None:
            return slot
        cap = self.limits.settings.max_wait
        return await limiter.acquire(
            self.priority, wait=wait if cap is None else min(wait, cap), tenant=self.tenant
        )

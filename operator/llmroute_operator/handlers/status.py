"""The status writer: one loop per kind that patches ``status`` only when it changed.

Routes and budgets are marked dirty when something they depend on changes (the watch, a Secret, a
NACK or ACK reported by the hub, a new budget report); every ``resync_seconds`` all of them are
re-checked anyway, which is the periodic refresh of the sync counts. For each dirty object the writer
asks its :class:`StatusSource` for the desired status, compares it with what the object has (or what
this writer last wrote), and sends a merge patch to the status subresource only when a field differs,
with bounded concurrency. Condition transitions become Events through the source's ``events``.

Only the leader writes (the Lease of ``leadership.py`` decides), so two replicas never both write
status; a replica that does not lead computes nothing here until it leads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..conditions import Transition, transitions
from ..kube import KubeClient, KubeError, NotFoundError
from ..metrics import OperatorMetrics

__all__ = ["EventSpec", "Observed", "StatusSource", "StatusWriter", "budget_events", "route_events"]

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class Observed:
    uid: str
    status: Mapping[str, Any]
    involved: Mapping[str, Any]


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


class StatusSource(Protocol):
    def keys(self) -> Sequence[Key]: ...
    def observed(self, namespace: str, name: str) -> Observed | None: ...
    def desired(self, namespace: str, name: str, previous: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def events(self, changes: Sequence[Transition]) -> list[EventSpec]: ...


def _changes(old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, Any]]) -> list[Transition]:
    """Status flips, plus reason changes of a condition that stays False (a NACK after syncing)."""
    found = transitions(old, new)
    flipped = {t.type for t in found}
    before = {str(c.get("type")): c for c in old or []}
    for c in new:
        kind = str(c.get("type"))
        prior = before.get(kind)
        if kind not in flipped and prior is not None and prior.get("reason") != c.get("reason"):
            found.append(
                Transition(
                    kind,
                    str(prior.get("status")),
                    str(c.get("status")),
                    str(c.get("reason")),
                    str(c.get("message")),
                )
            )
    return found


def route_events(changes: Sequence[Transition]) -> list[EventSpec]:
    out = []
    for t in changes:
        if t.type == "Accepted":
            if t.new == "True":
                out.append(EventSpec("Normal", "Accepted", t.message))
            elif t.new == "False":
                out.append(EventSpec("Warning", t.reason, t.message))
        elif t.type == "Programmed":
            if t.new == "True" and t.reason == "Programmed":
                out.append(EventSpec("Normal", "Programmed", t.message))
            elif t.new == "False" and t.reason == "Rejected":
                out.append(EventSpec("Warning", "Rejected", t.message))
    return out


def budget_events(changes: Sequence[Transition]) -> list[EventSpec]:
    out = []
    for t in changes:
        if t.type == "Accepted" and t.new == "False":
            out.append(EventSpec("Warning", t.reason, t.message))
        elif t.type == "Accepted" and t.new == "True" and t.old == "False":
            out.append(EventSpec("Normal", "Accepted", t.message))
    return out


def _differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    return any(current.get(k) != v for k, v in desired.items())


class StatusWriter:
    """Writes the status of one kind (``plural``) for the keys its source knows."""

    def __init__(
        self,
        *,
        kind: str,
        plural: str,
        source: StatusSource,
        kube: KubeClient,
        metrics: OperatorMetrics,
        is_leader: Callable[[], bool],
        resync_seconds: float = 2.0,
        batch_seconds: float = 0.05,
        concurrency: int = 16,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._kind, self._plural = kind, plural
        self._source, self._kube, self._metrics = source, kube, metrics
        self._is_leader = is_leader
        self._resync, self._batch = resync_seconds, batch_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._dirty: set[Key] = set()
        self._written: dict[Key, tuple[str, dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._events: set[asyncio.Task[None]] = set()
        self.writes = 0

    def mark(self, namespace: str, name: str) -> None:
        self._dirty.add((namespace, name))
        self._wake.set()

    def mark_all(self) -> None:
        self._dirty.update(self._source.keys())
        self._wake.set()

    async def run(self) -> None:
        """Write dirty statuses as they come, and everything every ``resync_seconds``."""
        last_full = 0.0
        while True:
            timeout = max(0.0, last_full + self._resync - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                await asyncio.sleep(self._batch)  # let a burst of marks gather
            except TimeoutError:
                pass
            self._wake.clear()
            if time.monotonic() - last_full >= self._resync:
                self._dirty.update(self._source.keys())
                last_full = time.monotonic()
            if not self._is_leader():
                self._dirty.clear()
                continue
            await self.flush()

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if dirty:
            await asyncio.gather(*(self._write(key) for key in sorted(dirty)))

    async def _write(self, key: Key) -> None:
        observed = self._source.observed(*key)
        if observed is None:
            self._written.pop(key, None)
            return
        cached = self._written.get(key)
        current = cached[1] if cached is not None and cached[0] == observed.uid else dict(observed.status)
        desired = self._source.desired(*key, current)
        if desired is None or not _differs(current, desired):
            return
        async with self._limit:
            started = time.perf_counter()
            try:
                await self._kube.patch_status(self._plural, key[0], key[1], desired)
            except NotFoundError:
                self._written.pop(key, None)
                return
            except KubeError as exc:
                self._metrics.status_written(self._kind, "error", time.perf_counter() - started)
                log.warning("%s %s/%s: status write failed (will retry): %s", self._kind, *key, exc)
                self._dirty.add(key)
                return
            self._metrics.status_written(self._kind, "ok", time.perf_counter() - started)
        self.writes += 1
        self._written[key] = (observed.uid, {**current, **desired})
        for event in self._source.events(
            _changes(current.get("conditions"), desired.get("conditions") or [])
        ):
            task = asyncio.get_running_loop().create_task(
                self._kube.create_event(
                    observed.involved, type_=event.type, reason=event.reason, message=event.message
                )
            )
            self._events.add(task)
            task.add_done_callback(self._events.discard)

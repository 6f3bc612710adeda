"""Route sync counts across replicas: what the other replicas' sidecars run, added to the leader's.

Every replica serves its own sidecars (``hub.py`` counts them per route); only the leader writes
``LLMRoute.status.sidecars`` and ``Programmed``. So a replica that does not lead sends the leader its
counts (:class:`SyncReporter`, the ``llmroute.v1.Peers`` client, through ``forward.py``'s channel),
and the leader keeps them (:class:`PeerSyncBook`) until they expire, and adds them to its own
(:class:`MergedSync`, what the route status writer reads). :func:`merge` is the pure rule.

A replica that dies stops reporting: its report expires after its ttl (the sidecars it served
reconnect elsewhere meanwhile, so for up to that long they may be counted twice). A replica that
stops cleanly withdraws its report at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmroute_proto.v1 import peers_pb2 as ppb
from llmroute_proto.v1 import peers_pb2_grpc as ppb_grpc

from ..contracts import RouteSync, RouteSyncSource
from ..index import ClusterIndex

__all__ = ["MergedSync", "PeerSyncBook", "SyncReporter", "merge", "report_of", "states_of"]

log = logging.getLogger(__name__)
Key = tuple[str, str]
REPORT_TTL = 10  # seconds the leader counts a report
HEARTBEAT = 3.0  # a replica re-sends its report at least this often


def merge(parts: Iterable[RouteSync]) -> RouteSync:
    """One route's counts over several replicas: sums, the version most sidecars run, all errors."""
    matched = synced = rejected = 0
    versions: Counter[str] = Counter()
    errors: dict[str, None] = {}
    for part in parts:
        matched += part.matched
        synced += part.synced
        rejected += part.rejected
        if part.version:
            versions[part.version] += max(1, part.matched)
        errors.update(dict.fromkeys(part.errors))
    version = min(versions, key=lambda v: (-versions[v], v)) if versions else ""
    return RouteSync(matched=matched, synced=synced, rejected=rejected, version=version, errors=tuple(errors))


def states_of(source: RouteSyncSource, index: ClusterIndex) -> list[ppb.RouteSyncState]:
    """Every indexed route that selects at least one of ``source``'s sidecars."""
    out = []
    for namespace in index.namespaces():
        for route in index.view(namespace).routes:
            name = str(route.metadata.get("name"))
            sync = source.route_sync(namespace, name)
            if sync.matched:
                out.append(
                    ppb.RouteSyncState(
                        namespace=namespace,
                        name=name,
                        matched=sync.matched,
                        synced=sync.synced,
                        rejected=sync.rejected,
                        version=sync.version,
                        errors=list(sync.errors),
                    )
                )
    return out


def report_of(state: ppb.RouteSyncState) -> RouteSync:
    return RouteSync(
        matched=state.matched,
        synced=state.synced,
        rejected=state.rejected,
        version=state.version,
        errors=tuple(state.errors),
    )


@dataclass
class _Report:
    expires: float
    routes: dict[Key, RouteSync] = field(default_factory=dict)


class PeerSyncBook:
    """The leader's copy of the other replicas' reports."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reports: dict[str, _Report] = {}
        self._listeners: list[Callable[[str, str], None]] = []

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """``listener(namespace, route)`` when a route's peer counts changed."""
        self._listeners.append(listener)

    def _notify(self, keys: Iterable[Key]) -> None:
        for namespace, name in sorted(set(keys)):
            for listener in self._listeners:
                try:
                    listener(namespace, name)
                except Exception:
                    log.exception("peer sync listener failed for %s/%s", namespace, name)

    def accept(self, report: ppb.SyncReport) -> None:
        routes = {(s.namespace, s.name): report_of(s) for s in report.routes}
        before = self._reports.pop(report.replica, None)
        if report.ttl_seconds:
            ttl = min(report.ttl_seconds, 60)
            self._reports[report.replica] = _Report(expires=self._clock() + ttl, routes=routes)
        old = before.routes if before is not None else {}
        self._notify(k for k in {*old, *routes} if old.get(k) != routes.get(k) or not report.ttl_seconds)

    def expire(self) -> None:
        now = self._clock()
        gone = [replica for replica, report in self._reports.items() if report.expires <= now]
        for replica in gone:
            log.info("replica %s stopped reporting; its sidecars are no longer counted", replica)
            self._notify(self._reports.pop(replica).routes)

    def clear(self) -> None:
        keys = [k for report in self._reports.values() for k in report.routes]
        self._reports.clear()
        self._notify(keys)

    def replicas(self) -> int:
        return len(self._reports)

    def route_sync(self, namespace: str, name: str) -> list[RouteSync]:
        now = self._clock()
        return [
            r.routes[(namespace, name)]
            for r in self._reports.values()
            if r.expires > now and (namespace, name) in r.routes
        ]


class MergedSync:
    """``RouteSyncSource`` for the leader's status writer: its own hub plus the peers' reports."""

    def __init__(self, *, local: RouteSyncSource, peers: PeerSyncBook) -> None:
        self._local = local
        self._peers = peers

    def route_sync(self, namespace: str, name: str) -> RouteSync:
        return merge([self._local.route_sync(namespace, name), *self._peers.route_sync(namespace, name)])


class _Leader(Protocol):
    identity: str
    leader: bool
    term: int

    async def wait_change(self, term: int) -> int: ...


class _Channels(Protocol):
    def channel(self) -> Any: ...


class SyncReporter:
    """A non-leading replica's side: send the leader this replica's counts when they change."""

    def __init__(
        self,
        *,
        hub: RouteSyncSource,
        index: ClusterIndex,
        leadership: _Leader,
        link: _Channels,
        token_file: Path | None,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self._hub = hub
        self._index = index
        self._leadership = leadership
        self._link = link
        self._token_file = token_file
        self._heartbeat = heartbeat
        self._dirty = asyncio.Event()
        self._warned = False
        self.sent = 0

    def mark(self, *_: object) -> None:
        """Something changed (hub route-sync listener signature)."""
        self._dirty.set()

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        if self._token_file is None:
            if not self._warned:
                log.warning(
                    "no --peer-token-file: the leader's route status will not count the sidecars "
                    "connected to this replica"
                )
                self._warned = True
            return None
        token = self._token_file.read_text().strip()
        return (("authorization", f"Bearer {token}"),)

    async def send(self, ttl: int = REPORT_TTL) -> bool:
        """One report to the current leader; False when there is none to send to, or it failed."""
        if self._leadership.leader:
            return False
        try:
            channel = self._link.channel()
            metadata = self._metadata()
        except (LookupError, OSError) as exc:
            log.debug("no sync report sent: %s", exc)
            return False
        if channel is None or metadata is None:
            return False
        report = ppb.SyncReport(
            replica=self._leadership.identity,
            routes=states_of(self._hub, self._index) if ttl else [],
            ttl_seconds=ttl,
        )
        try:
            await ppb_grpc.PeersStub(channel).ReportSync(report, metadata=metadata, timeout=3.0)
        except Exception as exc:
            log.info("sync report to the leader failed: %s", exc)
            return False
        self.sent += 1
        return True

    async def run(self) -> None:
        while True:
            term = self._leadership.term
            with_change = asyncio.ensure_future(self._leadership.wait_change(term))
            dirty = asyncio.ensure_future(self._dirty.wait())
            try:
                await asyncio.wait({with_change, dirty}, timeout=self._heartbeat)
            finally:
                with_change.cancel()
                dirty.cancel()
            self._dirty.clear()
            await asyncio.sleep(0.2)  # coalesce a burst of changes into one report
            await self.send()

    async def withdraw(self) -> None:
        """Stopping: tell the leader to stop counting this replica's sidecars now."""
        await self.send(ttl=0)

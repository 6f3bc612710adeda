"""Which replica leads: the one kopf's peering lets run. Only the leader writes status.

kopf peering is priority-based: every operator records itself (identity, priority, lifetime, last
seen) in a ``ClusterKopfPeering`` (cluster-wide operator) or a ``KopfPeering`` per watched namespace,
and pauses its watches while a live peer has a higher priority, or the same one. So each replica gets
a distinct priority from its start time (:func:`start_priority`): the oldest replica leads, a replica
started by a rollout waits as a standby until the old one exits (a clean exit removes its entry at
once; a crashed one expires after the peering lifetime, 60 s). :class:`Leadership` reads the same
peering objects and applies kopf's rule, so the status writers and the budget persistence, which run
outside kopf, stop exactly when kopf's handlers pause. ``--standalone`` (and ``--dev``) skip peering:
the single replica always leads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from .kube import KubeClient, KubeError, NotFoundError
from .metrics import OperatorMetrics
from .settings import OperatorSettings

__all__ = ["Leadership", "is_leader", "peering_paths", "start_priority"]

log = logging.getLogger(__name__)

_EPOCH_MS = 4_102_444_800_000  # 2100-01-01: keeps priorities positive for a while


def start_priority(now: float | None = None) -> int:
    """Earlier start, higher priority; three random digits break ties between simultaneous starts."""
    started_ms = int((time.time() if now is None else now) * 1000)
    return (_EPOCH_MS - started_ms) * 1000 + random.randrange(1000)


def peering_paths(settings: OperatorSettings) -> list[tuple[str, dict[str, Any]]]:
    """``(path of the peering object, the object to create when absent)`` for these settings."""
    name = settings.peering
    if not settings.namespaces:
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        return [(f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}", body)]
    out = []
    for namespace in settings.namespaces:
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": namespace},
        }
        out.append((f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{name}", body))
    return out


def _parse_time(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def is_leader(
    peers: Mapping[str, Any], *, identity: str, priority: int, now: dt.datetime | None = None
) -> bool:
    """kopf's rule on one peering object's ``status``: present, and no live peer of equal or higher priority."""
    now = now or dt.datetime.now(dt.UTC)
    if identity not in peers:
        return False  # kopf has not announced us yet: it starts paused
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        seen = _parse_time(str(info.get("lastseen") or ""))
        lifetime = dt.timedelta(seconds=int(info.get("lifetime") or 60))
        if seen is not None and seen + lifetime <= now:
            continue  # dead
        if int(info.get("priority") or 0) >= priority:
            return False
    return True


class Leadership:
    """``leader`` is True while this replica may write status."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        kube: KubeClient,
        identity: str,
        priority: int,
        metrics: OperatorMetrics,
        interval: float = 2.0,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self.identity = identity
        self.priority = priority
        self._metrics = metrics
        self._interval = interval
        self.standalone = settings.standalone
        self.leader = self.standalone
        metrics.leader.set(1 if self.leader else 0)

    def __call__(self) -> bool:
        return self.leader

    async def ensure_peering_objects(self) -> None:
        """Create the peering objects kopf needs (kopf only patches them); the CRDs must exist."""
        if self.standalone:
            return
        for path, body in peering_paths(self._settings):
            try:
                await self._kube.get(path)
            except NotFoundError:
                collection = path.rsplit("/", 1)[0]
                try:
                    await self._kube.create(collection, body)
                    log.info("created the peering object %s", path)
                except KubeError as exc:
                    if exc.status == 404:
                        log.error(
                            "the kopf peering CRDs are missing (apply crds/kopf-peering.yaml) or use --standalone"
                        )
                    elif exc.status != 409:
                        raise

    async def check(self) -> bool:
        if self.standalone:
            return True
        leading = True
        for path, _ in peering_paths(self._settings):
            try:
                peers = (await self._kube.get(path)).get("status") or {}
            except KubeError as exc:
                log.debug("peering object %s unreadable: %s", path, exc)
                return False
            leading = leading and is_leader(peers, identity=self.identity, priority=self.priority)
        return leading

    async def run(self) -> None:
        while True:
            try:
                leading = await self.check()
            except Exception as exc:  # keep the last verdict through API hiccups
                log.warning("leadership check failed: %s", exc)
                leading = self.leader
            if leading != self.leader:
                log.info("this replica %s", "now leads" if leading else "is a standby")
                self.leader = leading
                self._metrics.leader.set(1 if leading else 0)
            await asyncio.sleep(self._interval)

"""Which replica leads: the holder of a ``coordination.k8s.io/v1`` Lease. Only the leader writes.

Every replica serves sidecars (config from its own watches, admission webhooks); the leader alone
writes status, aggregates usage and grants allowance, and the other replicas forward those calls to
it (``configserver/forward.py``). So leadership is not kopf's business any more: kopf runs standalone
on every replica (its handlers only fill the index), and this module runs the election client-go's
``leaderelection`` package runs, on a Lease in the operator's namespace:

- the holder renews ``spec.renewTime`` every ``retry`` seconds; it steps down when it has not
  renewed for ``renew_deadline`` seconds, or when it reads another holder;
- a candidate takes the Lease when its holder is empty (released) or has not renewed it for
  ``leaseDurationSeconds`` *as observed on the candidate's own clock* (the time it last saw the
  record change), so clock skew between nodes does not matter;
- every write carries the ``resourceVersion`` it read, so two candidates never both win;
- a replica that stops cleanly releases the Lease (empty holder) after its last write, and the next
  replica takes over within one ``retry`` period instead of a full lease duration.

The leader also writes the address its peers dial into the annotation ``llmroute.io/peer-address``.
:func:`decide` is the pure rule; :class:`Leadership` does the I/O. ``--standalone`` (and ``--dev``)
skip the election: the single replica always leads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .kube import KubeClient, KubeError, NotFoundError
from .metrics import OperatorMetrics
from .settings import OperatorSettings

__all__ = ["Action", "Leadership", "LeaseRecord", "decide", "lease_body", "parse_lease"]

log = logging.getLogger(__name__)

ADDRESS_ANNOTATION = "llmroute.io/peer-address"


class Action(Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours
    ACQUIRE = "acquire"  # released or expired: take it
    FOLLOW = "follow"  # someone else holds it


@dataclass(frozen=True)
class LeaseRecord:
    """What matters of the Lease object."""

    holder: str = ""
    address: str = ""
    duration: float = 15.0
    renew_time: str = ""
    acquire_time: str = ""
    transitions: int = 0
    resource_version: str = ""

    def observed_key(self) -> tuple[str, str]:
        """Changes whenever the holder renews (the candidates' clock starts again)."""
        return self.holder, self.renew_time


def parse_lease(obj: dict[str, Any]) -> LeaseRecord:
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        address=str(annotations.get(ADDRESS_ANNOTATION) or ""),
        duration=float(duration) if isinstance(duration, int | float) and duration > 0 else 15.0,
        renew_time=str(spec.get("renewTime") or ""),
        acquire_time=str(spec.get("acquireTime") or ""),
        transitions=transitions if isinstance(transitions, int) else 0,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def decide(record: LeaseRecord | None, *, identity: str, observed_age: float) -> Action:
    """The election rule. ``observed_age``: seconds since this replica saw the record last change."""
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        return Action.RENEW
    if not record.holder or observed_age > record.duration:
        return Action.ACQUIRE
    return Action.FOLLOW


def _micro_time(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    *,
    name: str,
    namespace: str,
    holder: str,
    address: str,
    duration: float,
    now: dt.datetime,
    previous: LeaseRecord | None,
) -> dict[str, Any]:
    """The Lease to write: ``holder`` renewing (same holder) or taking over (a new one, or none)."""
    taking = previous is None or previous.holder != holder
    transitions = 0 if previous is None else previous.transitions + (1 if taking and holder else 0)
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "annotations": {ADDRESS_ANNOTATION: address},
    }
    if previous is not None and previous.resource_version:
        meta["resourceVersion"] = previous.resource_version
    spec: dict[str, Any] = {
        "holderIdentity": holder,
        "leaseDurationSeconds": max(1, round(duration)),
        "renewTime": _micro_time(now),
        "leaseTransitions": transitions,
    }
    acquired = _micro_time(now) if taking or previous is None else previous.acquire_time
    if acquired:
        spec["acquireTime"] = acquired
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


Listener = Callable[[bool], Awaitable[None]]


class Leadership:
    """``leader`` is True while this replica may write; ``leader_address`` is where peers reach it."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        kube: KubeClient,
        identity: str,
        address: str,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self.identity = identity
        self.address = address
        self._metrics = metrics
        self._clock = clock
        self.standalone = settings.standalone
        self.leader = self.standalone
        self.leader_identity = identity if self.standalone else ""
        self.leader_address = address if self.standalone else ""
        self.term = 0  # bumps whenever the leader (or its address) changes
        self._changed = asyncio.Event()
        self._observed: tuple[tuple[str, str], float] | None = None
        self._last_renew = 0.0
        self._record: LeaseRecord | None = None
        self._listeners: list[Listener] = []
        self._released = False
        metrics.leader.set(1 if self.leader else 0)

    def __call__(self) -> bool:
        return self.leader

    @property
    def path(self) -> str:
        ns, name = self._settings.lease_namespace, self._settings.lease_name
        return f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"

    def on_change(self, listener: Listener) -> None:
        """``await listener(leading)`` when this replica starts (True) or stops (False) leading."""
        self._listeners.append(listener)

    async def wait_change(self, term: int) -> int:
        """Return once ``self.term`` differs from ``term``."""
        while self.term == term:
            await self._changed.wait()
        return self.term

    def _bump(self) -> None:
        self.term += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _set_leader(self, leading: bool) -> None:
        if leading == self.leader:
            return
        log.info("this replica %s", "now leads" if leading else "no longer leads")
        self.leader = leading
        self._metrics.leader.set(1 if leading else 0)
        for listener in self._listeners:
            try:
                await listener(leading)
            except Exception:
                log.exception("leadership listener failed")

    def _follow(self, record: LeaseRecord | None) -> None:
        holder = record.holder if record is not None else ""
        address = record.address if record is not None else ""
        if (holder, address) != (self.leader_identity, self.leader_address):
            self.leader_identity, self.leader_address = holder, address
            if not holder:
                log.info("no replica leads right now")
            elif holder != self.identity:
                log.info("replica %s leads (peers reach it at %s)", holder, address or "?")
            self._bump()

    async def step(self) -> None:
        """One round of the election (``run`` calls it every ``retry`` seconds)."""
        now = self._clock()
        try:
            record: LeaseRecord | None = parse_lease(await self._kube.get(self.path))
        except NotFoundError:
            record = None
        except KubeError as exc:
            log.warning("reading the leader Lease failed: %s", exc)
            await self._check_deadline(now)
            return
        if record is not None:
            key = record.observed_key()
            if self._observed is None or self._observed[0] != key:
                self._observed = (key, now)
        age = now - self._observed[1] if self._observed is not None else 0.0
        action = decide(record, identity=self.identity, observed_age=age)
        if action is Action.FOLLOW:
            self._record = record
            await self._set_leader(False)
            self._follow(record)
            return
        wall = dt.datetime.now(dt.UTC)
        body = lease_body(
            name=self._settings.lease_name,
            namespace=self._settings.lease_namespace,
            holder=self.identity,
            address=self.address,
            duration=self._settings.lease_duration,
            now=wall,
            previous=record,
        )
        try:
            if record is None:
                written = await self._kube.create(self.path.rsplit("/", 1)[0], body)
            else:
                written = await self._kube.replace(self.path, body)
        except KubeError as exc:
            if exc.status != 409:  # 409: another replica wrote first; read again next round
                log.warning("writing the leader Lease failed: %s", exc)
            await self._check_deadline(now)
            return
        self._record = parse_lease(written)
        self._observed = (self._record.observed_key(), now)
        self._last_renew = now
        if action is not Action.RENEW:
            log.info("acquired the leader Lease %s", self.path)
        self._follow(self._record)
        await self._set_leader(True)

    async def _check_deadline(self, now: float) -> None:
        if self.leader and not self.standalone and now - self._last_renew > self._settings.renew_deadline:
            log.warning("could not renew the leader Lease for %.0fs: stepping down", now - self._last_renew)
            await self._set_leader(False)
            self._follow(None)

    async def run(self) -> None:
        if self.standalone:
            return
        while not self._released:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader election round failed")
            await asyncio.sleep(self._settings.lease_retry)

    async def release(self) -> None:
        """Stop leading and empty the holder, so a peer takes over at once (a clean shutdown)."""
        self._released = True
        if self.standalone or not self.leader or self._record is None:
            return
        await self._set_leader(False)
        self._follow(None)  # ends the usage streams served here: sidecars take them elsewhere
        body = lease_body(
            name=self._settings.lease_name,
            namespace=self._settings.lease_namespace,
            holder="",
            address="",
            duration=1,
            now=dt.datetime.now(dt.UTC),
            previous=self._record,
        )
        try:
            await self._kube.replace(self.path, body)
            log.info("released the leader Lease")
        except KubeError as exc:
            log.warning("releasing the leader Lease failed (a peer takes over when it expires): %s", exc)

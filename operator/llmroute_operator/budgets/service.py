"""The budget service: usage in, spend, state and allowances out. The part with a clock and the index.

- Budgets come from the :class:`~llmroute_operator.index.ClusterIndex` (fed by the kopf handlers with
  their stored ``status``). The first time a budget is seen, its ledger is seeded from
  ``status.spent`` if ``status.periodStart`` is the current period's start, so an operator restart
  never loses or resets spend.
- Usage batches (from the config server's UsageReporting stream) are de-duplicated by
  (verified caller, sidecar id, sequence) and then by request id, attributed to every budget whose
  scope matches, and acknowledged once persisted (``persist``; see the package docstring). Each
  budget's status also records, per sidecar, the last batch its spend includes (``countedUsage``,
  written with the spend), so a batch re-sent after a crash between that write and the
  acknowledgement is recognised by the next leader and not counted twice.
- Budget state (Normal / SoftLimited / Exhausted) and the period are written back into the index as a
  status overlay, so the compiler pushes the downgrade to sidecars; :meth:`budget_report` tells the
  status writer what ``LLMBudget.status`` should say.
- Allowance leases (``leases.py``) per budget, scoped to the caller's namespace.
- Only the leading replica counts (``leadership.py``). A replica that stops leading calls
  :meth:`deactivate`: it forgets ledgers, leases and batch logs, since the next leader starts from
  the status the last one wrote. One that starts leading calls :meth:`activate` with budgets it has just
  listed from the API server (fresher than its watch may be), so the spend written last is the spend
  it continues from. Before a clean stop, :meth:`close_intake` refuses new batches, so every batch is
  either counted, written and acknowledged here, or refused and sent again to the next leader.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from llmroute_proto.api.budget import LLMBudget, LLMBudgetSpec, LLMBudgetStatus
from llmroute_proto.periods import period_window
from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import config_pb2 as pb
from llmroute_proto.v1 import usage_pb2 as upb

from ..configserver.auth import Identity
from ..contracts import BudgetReport
from ..index import ClusterIndex
from ..settings import OperatorSettings
from .leases import Lease, LeaseBook
from .ledger import BatchLog, BudgetLedger, CountedBatches, Limits, from_micro, to_micro

__all__ = ["BudgetError", "BudgetObserver", "BudgetService", "UsageConsumer"]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, budget name)
Persist = Callable[[str, str, BudgetReport], Awaitable[None]]
_STATES = {
    "Normal": pb.BUDGET_STATE_NORMAL,
    "SoftLimited": pb.BUDGET_STATE_SOFT_LIMITED,
    "Exhausted": pb.BUDGET_STATE_EXHAUSTED,
}
_FOREVER = 1 << 62


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


class BudgetError(Exception):
    """A refused allowance call; ``code`` names a ``grpc.StatusCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BudgetObserver(Protocol):
    """Metrics hooks (``llmroute_operator.metrics`` implements them)."""

    def budget_spent(self, namespace: str, name: str, usd: float) -> None: ...
    def budget_state(self, namespace: str, name: str, state: str) -> None: ...
    def budget_alert(self, namespace: str, name: str, percent: int) -> None: ...
    def budget_limits(
        self, namespace: str, name: str, *, hard: float, soft: float | None, forecast: float
    ) -> None: ...
    def budgets_forgotten(self) -> None: ...


class _NoObserver:
    def budget_spent(self, namespace: str, name: str, usd: float) -> None:
        pass

    def budget_state(self, namespace: str, name: str, state: str) -> None:
        pass

    def budget_alert(self, namespace: str, name: str, percent: int) -> None:
        pass

    def budget_limits(
        self, namespace: str, name: str, *, hard: float, soft: float | None, forecast: float
    ) -> None:
        pass

    def budgets_forgotten(self) -> None:
        pass


@dataclass
class _Budget:
    key: Key
    spec: LLMBudgetSpec
    ledger: BudgetLedger
    leases: LeaseBook
    persisted_revision: int = -1
    persisted_alerted: int = 0
    counted: CountedBatches = field(default_factory=CountedBatches)  # stored with the spend
    overlaid: tuple[str, datetime, datetime] | None = None  # (state, period start, end) put in the index


@dataclass
class _Idempotent:
    answers: OrderedDict[tuple[str, str], apb.LeaseGrant] = field(default_factory=OrderedDict)

    def get(self, owner: str, request_id: str) -> apb.LeaseGrant | None:
        return self.answers.get((owner, request_id)) if request_id else None

    def put(self, owner: str, request_id: str, grant: apb.LeaseGrant) -> apb.LeaseGrant:
        if request_id:
            self.answers[(owner, request_id)] = grant
            while len(self.answers) > 10_000:
                self.answers.popitem(last=False)
        return grant


def _owner(identity: Identity, sidecar_id: str) -> str:
    return f"{identity.namespace}/{identity.pod_uid}/{sidecar_id}"


def _instance(identity: Identity, sidecar_id: str) -> str:
    """The sidecar instance as ``status.countedUsage`` names it (the budget fixes the namespace)."""
    return f"{identity.pod_uid}/{sidecar_id}"


class UsageConsumer(Protocol):
    """Something else counted from usage records (``experiments/``), under the same once-only rules:
    it gets each batch's fresh records once, and the batch's acknowledgement waits for its writes."""

    def count(
        self, namespace: str, instance: str, sequence: int, records: Sequence[upb.UsageRecord], now: datetime
    ) -> Mapping[Key, int]:
        """Count; return the keys, with the revision holding these counts, the ack must wait for."""
        ...

    def persisted(self, key: Key) -> int | None:
        """The last written revision of one of its keys; None when the key is not its own."""
        ...

    def reset(self) -> None:
        """Forget what was counted (this replica stopped leading)."""
        ...


class BudgetService:
    """Implements ``contracts.BudgetStatusSource``; the config server calls the usage and lease methods."""

    def __init__(
        self,
        *,
        index: ClusterIndex,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = _utcnow,
        persist: Persist | None = None,
        observer: BudgetObserver | None = None,
        lease_ttl: timedelta = timedelta(seconds=20),
        lease_grace: timedelta = timedelta(seconds=5),
        persist_interval: float = 0.25,
        tick_seconds: float = 1.0,
        warmup_seconds: float = 15.0,
        request_id_memory: int = 200_000,
        active: bool = True,
    ) -> None:
        self._index = index
        self._settings = settings
        self._clock = clock
        self._persist = persist
        self._observer: BudgetObserver = observer or _NoObserver()
        self._lease_ttl, self._lease_grace = lease_ttl, lease_grace
        # Leases live in memory only. After a (re)start, leases a previous operator granted may still
        # be live in sidecars; granting that money again before they expired would hand it out twice.
        # So status records the outstanding allowance, and a restarted operator keeps that much
        # reserved for one lease lifetime (see _track), instead of refusing every lease meanwhile.
        self._started_at: datetime | None = None
        self._persist_interval = persist_interval
        self._tick_seconds = tick_seconds
        self._warmup = warmup_seconds
        self._budgets: dict[Key, _Budget] = {}
        self._logs: OrderedDict[str, BatchLog] = OrderedDict()
        self._request_ids: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._request_id_memory = request_id_memory
        self._idempotent = _Idempotent()
        self._listeners: list[Callable[[str, str], None]] = []
        self._consumers: list[UsageConsumer] = []
        self._ready = asyncio.Event()
        self._active = asyncio.Event()  # this replica leads: it counts and grants
        if active:
            self._active.set()
        self._intake_open = True
        self._acked = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._syncing = False
        self.duplicates = 0  # batches and records ignored as already counted
        self.late_records = 0  # records of a period that already ended
        self.recounts_refused = 0  # (batch, budget) pairs a stored status already counted

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._started_at = self._clock()
        self._index.subscribe(self._on_index)
        for namespace in self._index.namespaces():
            self._sync(namespace)
        self._tasks = [asyncio.create_task(self._ticker())]
        if self._persist is not None:
            self._tasks.append(asyncio.create_task(self._persister()))
        if self._warmup >= 0:
            self._loop.call_later(self._warmup, self._warm_timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._persist is not None:  # graceful shutdown: write what was counted
            try:
                await asyncio.wait_for(self.persist_now(), timeout=5.0)
            except Exception as exc:
                log.warning("final budget status write failed: %s", exc)

    def mark_ready(self) -> None:
        """The index holds every budget (with its stored status): usage may be counted now."""
        if not self._ready.is_set():
            for namespace in self._index.namespaces():
                self._sync(namespace)
            self._ready.set()

    def _warm_timeout(self) -> None:
        if not self._ready.is_set():
            log.warning(
                "budget service not marked ready after %.0fs; counting with what is indexed", self._warmup
            )
            self.mark_ready()

    @property
    def active(self) -> bool:
        return self._active.is_set()

    def activate(self, fresh: Mapping[Key, LLMBudget]) -> None:
        """Start counting (this replica now leads), seeded from ``fresh`` (listed from the API server)."""
        if self._active.is_set():
            return
        self._budgets.clear()
        self._active.set()
        self._started_at = self._clock()
        for namespace in sorted({*self._index.namespaces(), *(k[0] for k in fresh)}):
            self._sync(namespace, fresh)
        for tracked in self._budgets.values():
            self._changed(tracked)
        log.info("counting spend for %d budgets", len(self._budgets))

    def deactivate(self) -> None:
        """Stop counting (another replica leads): forget what the next leader reads from status."""
        if not self._active.is_set():
            return
        self._active.clear()
        self._budgets.clear()
        self._logs.clear()
        self._request_ids.clear()
        self._idempotent = _Idempotent()
        for consumer in self._consumers:
            consumer.reset()
        self._observer.budgets_forgotten()
        self._notify_acks()

    def close_intake(self) -> None:
        """Refuse new usage batches and leases (a clean stop): they go to the next leader instead."""
        self._intake_open = False

    def on_report(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(namespace, name)`` when a budget's report changed."""
        self._listeners.append(listener)

    # -- the index ---------------------------------------------------------------------------------

    def _on_index(self, namespace: str) -> None:
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._sync(namespace)
        else:
            self._loop.call_soon_threadsafe(self._sync, namespace)

    def _sync(self, namespace: str, fresh: Mapping[Key, LLMBudget] | None = None) -> None:
        """Track the namespace's budgets: new ones seeded, changed specs applied, deleted ones dropped.

        ``fresh``: budgets just listed from the API server, whose status seeds new ledgers instead of
        the index's copy (which the watch may not have updated with the last leader's final write).
        """
        if self._syncing or not self._active.is_set():
            return  # our own overlay write echoing back through the index
        self._syncing = True
        try:
            now = self._clock()
            present: set[Key] = set()
            for budget in self._index.view(namespace).budgets:
                key = (namespace, str(budget.metadata.get("name")))
                present.add(key)
                listed = fresh.get(key) if fresh is not None else None
                if listed is not None and key not in self._budgets:
                    budget = budget.model_copy(update={"status": listed.status})
                try:
                    tracked = self._track(key, budget, now)
                except ValueError as exc:
                    log.error("budget %s/%s cannot be tracked: %s", *key, exc)
                    continue
                self._overlay(tracked, budget)
            for key in [k for k in self._budgets if k[0] == namespace and k not in present]:
                del self._budgets[key]
        finally:
            self._syncing = False

    def _track(self, key: Key, budget: LLMBudget, now: datetime) -> _Budget:
        spec = budget.spec
        window = period_window(spec.period.type, spec.period.timezone, now)
        limits = Limits(
            hard=to_micro(spec.limits.hard),
            soft=to_micro(spec.limits.soft) if spec.limits.soft is not None else None,
            alerts=tuple(spec.alerts),
        )
        tracked = self._budgets.get(key)
        if tracked is None:
            ledger = BudgetLedger(window=window, limits=limits)
            _seed(ledger, budget.status)
            tracked = _Budget(key, spec, ledger, LeaseBook(ttl=self._lease_ttl, grace=self._lease_grace))
            tracked.counted = _counted(budget.status)
            previous = _outstanding(budget.status, ledger)
            if previous > 0:
                # Leases of the previous run: reserved until they have certainly expired.
                tracked.leases.leases["previous-run"] = Lease(
                    id="previous-run", owner="", granted=previous, expires_at=now + self._lease_ttl
                )
                log.info(
                    "budget %s/%s: %s of allowance leased by a previous run stays reserved for %.0fs",
                    *key,
                    from_micro(previous),
                    (self._lease_ttl + self._lease_grace).total_seconds(),
                )
            tracked.persisted_alerted = ledger.alerted_percent
            self._budgets[key] = tracked
            log.info(
                "budget %s/%s: %s spent since %s", *key, from_micro(ledger.spent), _rfc3339(window.start)
            )
        elif spec != tracked.spec:
            tracked.spec = spec
            tracked.ledger.limits = limits
            tracked.ledger.revision += 1
            if window != tracked.ledger.window:
                tracked.ledger.roll(window)
            self._changed(tracked)
        return tracked

    def _overlay(self, tracked: _Budget, budget: LLMBudget) -> None:
        """Make the index's copy carry our state and period, for the compiler."""
        ledger = tracked.ledger
        status = budget.status or LLMBudgetStatus()
        tracked.overlaid = (ledger.state, ledger.window.start, ledger.window.end)
        if (status.state, status.period_start, status.reset_at) == tracked.overlaid:
            return
        update = {"state": ledger.state, "period_start": ledger.window.start, "reset_at": ledger.window.end}
        self._index.put_budget(
            tracked.key[0],
            tracked.key[1],
            budget.model_copy(update={"status": status.model_copy(update=update)}),
        )

    def _changed(self, tracked: _Budget) -> None:
        """Spend or state moved: refresh the overlay, metrics and listeners."""
        ns, name = tracked.key
        ledger = tracked.ledger
        if tracked.overlaid != (ledger.state, ledger.window.start, ledger.window.end):
            current = next((b for b in self._index.view(ns).budgets if b.metadata.get("name") == name), None)
            if current is not None:
                self._overlay(tracked, current)
        self._observer.budget_spent(ns, name, tracked.ledger.spent / 1_000_000)
        self._observer.budget_state(ns, name, tracked.ledger.state)
        limits = tracked.ledger.limits
        self._observer.budget_limits(
            ns,
            name,
            hard=limits.hard / 1_000_000,
            soft=limits.soft / 1_000_000 if limits.soft is not None else None,
            forecast=tracked.ledger.forecast(self._clock()) / 1_000_000,
        )
        if self._persist is None:
            tracked.persisted_revision = tracked.ledger.revision
        for listener in self._listeners:
            try:
                listener(ns, name)
            except Exception:
                log.exception("budget report listener failed for %s/%s", ns, name)

    # -- usage -------------------------------------------------------------------------------------

    async def report_usage(self, identity: Identity, batch: upb.UsageBatch) -> None:
        """Count a batch once; its acknowledgement follows when its spend is persisted."""
        await self._ready.wait()
        await self._active.wait()
        if not self._intake_open:
            raise BudgetError("UNAVAILABLE", "the operator is stopping; send this batch again")
        owner = _owner(identity, batch.sidecar_id)
        batches = self._logs.get(owner)
        if batches is None:
            batches = self._logs[owner] = BatchLog()
            while len(self._logs) > 100_000:
                self._logs.popitem(last=False)
        self._logs.move_to_end(owner)
        if batches.duplicate(batch.sequence):
            self.duplicates += 1
            self._notify_acks()
            return
        now = self._clock()
        self._roll(now)
        instance = _instance(identity, batch.sidecar_id)
        scoped = []
        for tracked in self._budgets.values():
            if tracked.key[0] != identity.namespace:
                continue
            if tracked.counted.includes(instance, batch.sequence):
                # Counted and written by an earlier leader that did not live to acknowledge it.
                self.recounts_refused += 1
                continue
            scoped.append(tracked)
        touched: dict[Key, _Budget] = {}
        fresh: list[upb.UsageRecord] = []
        for record in batch.records:
            if self._seen_request(identity.namespace, record.request_id):
                self.duplicates += 1
                continue
            fresh.append(record)
            started = record.started_at.ToDatetime(tzinfo=UTC) if record.HasField("started_at") else now
            for tracked in scoped:
                if not _in_scope(tracked.spec, record):
                    continue
                if started < tracked.ledger.window.start:
                    self.late_records += 1
                    continue
                tracked.ledger.add(record.cost_micro_usd)
                tracked.leases.observe(owner, record.cost_micro_usd)
                touched[tracked.key] = tracked
        for tracked in touched.values():
            tracked.counted.record(instance, batch.sequence, now)
        waits = {key: t.ledger.revision for key, t in touched.items()}
        for consumer in self._consumers:
            waits.update(consumer.count(identity.namespace, instance, batch.sequence, fresh, now))
        batches.accept(batch.sequence, waits)
        for tracked in touched.values():
            self._changed(tracked)
        self._advance()

    def _seen_request(self, namespace: str, request_id: str) -> bool:
        if not request_id:
            return False
        key = (namespace, request_id)
        if key in self._request_ids:
            return True
        self._request_ids[key] = None
        while len(self._request_ids) > self._request_id_memory:
            self._request_ids.popitem(last=False)
        return False

    def _persisted(self, key: Key) -> int:
        tracked = self._budgets.get(key)
        if tracked is not None:
            return tracked.persisted_revision
        for consumer in self._consumers:
            if (revision := consumer.persisted(key)) is not None:
                return revision
        return _FOREVER

    def add_consumer(self, consumer: UsageConsumer) -> None:
        """Have ``consumer`` count every fresh usage record too (see :class:`UsageConsumer`)."""
        self._consumers.append(consumer)

    def consumer_wrote(self) -> None:
        """A consumer's write landed: acknowledge the batches that waited for it."""
        self._advance()

    def _advance(self) -> None:
        moved = False
        for batches in self._logs.values():
            if batches.pending:
                moved = batches.advance(self._persisted) or moved
        if moved:
            self._notify_acks()

    def _notify_acks(self) -> None:
        self._acked.set()
        self._acked = asyncio.Event()

    def acked_sequence(self, identity: Identity, sidecar_id: str) -> int:
        batches = self._logs.get(_owner(identity, sidecar_id))
        return max(0, batches.watermark) if batches is not None else 0

    async def wait_acked(self, identity: Identity, sidecar_id: str, *, above: int) -> int:
        while (acked := self.acked_sequence(identity, sidecar_id)) <= above:
            await self._acked.wait()
        return acked

    # -- persistence -------------------------------------------------------------------------------

    async def persist_now(self) -> None:
        """Write every budget whose report changed since it was last written."""
        if self._persist is None:
            return
        failed: Exception | None = None
        for tracked in list(self._budgets.values()):
            ledger = tracked.ledger
            if tracked.persisted_revision == ledger.revision:
                continue
            revision, report = ledger.revision, self._report(tracked)
            try:
                await self._persist(tracked.key[0], tracked.key[1], report)
            except Exception as exc:  # one refused object must not hold the other budgets' writes back
                failed = failed or exc
                continue
            tracked.persisted_revision = revision
            tracked.persisted_alerted = max(tracked.persisted_alerted, report.alerted_percent)
            ledger.alerted_percent = max(ledger.alerted_percent, report.alerted_percent)
            for percent in report.new_alerts:
                self._observer.budget_alert(*tracked.key, percent)
        self._advance()
        if failed is not None:
            raise failed

    async def _persister(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._persist_interval)
            try:
                await self.persist_now()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage at warning level (e.g. the API server is unreachable).
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "writing budget status failed (will retry): %s",
                    exc,
                )
                failing = True
                await asyncio.sleep(1.0)

    # -- time --------------------------------------------------------------------------------------

    def _roll(self, now: datetime) -> None:
        for tracked in self._budgets.values():
            if now >= tracked.ledger.window.end:
                spec = tracked.spec
                tracked.ledger.roll(period_window(spec.period.type, spec.period.timezone, now))
                tracked.persisted_alerted = 0
                log.info(
                    "budget %s/%s: new period from %s", *tracked.key, _rfc3339(tracked.ledger.window.start)
                )
                self._changed(tracked)

    def tick(self) -> None:
        """Roll periods that ended and reclaim expired leases (the ticker calls this every second)."""
        now = self._clock()
        self._roll(now)
        for tracked in self._budgets.values():
            tracked.leases.expire(now)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_seconds)
            try:
                self.tick()
            except Exception:
                log.exception("budget tick failed")

    # -- reports -----------------------------------------------------------------------------------

    def budget_report(self, namespace: str, name: str) -> BudgetReport | None:
        tracked = self._budgets.get((namespace, name))
        return self._report(tracked) if tracked is not None else None

    def _report(self, tracked: _Budget) -> BudgetReport:
        ledger = tracked.ledger
        now = self._clock()
        crossed = ledger.crossed()
        alerted = max((*crossed, ledger.alerted_percent))
        tracked.counted.prune(now)
        return BudgetReport(
            spent=from_micro(ledger.spent),
            remaining=from_micro(ledger.remaining),
            forecast=from_micro(ledger.forecast(now)),
            state=ledger.state,
            period_start=_rfc3339(ledger.window.start),
            reset_at=_rfc3339(ledger.window.end),
            alerted_percent=alerted,
            new_alerts=tuple(p for p in crossed if p > tracked.persisted_alerted),
            extra={
                "outstandingAllowance": from_micro(tracked.leases.outstanding),
                "countedUsage": [
                    {"sidecar": sidecar, "sequence": sequence, "at": _rfc3339(at)}
                    for sidecar, (sequence, at) in sorted(tracked.counted.last.items())
                ],
            },
        )

    # -- allowances --------------------------------------------------------------------------------

    def _budget_for(self, identity: Identity, name: str) -> _Budget:
        self._check_serving()
        tracked = self._budgets.get((identity.namespace, name))
        if tracked is None:
            raise BudgetError("NOT_FOUND", f"no LLMBudget {name!r} in namespace {identity.namespace}")
        self._roll(self._clock())
        return tracked

    def _grant(self, tracked: _Budget, lease: Lease | None) -> apb.LeaseGrant:
        grant = apb.LeaseGrant(budget=tracked.key[1], state=_STATES[tracked.ledger.state])
        if lease is not None:
            stamp = Timestamp()
            stamp.FromDatetime(lease.expires_at)
            grant.lease_id, grant.granted_micro_usd = lease.id, lease.granted
            grant.expires_at.CopyFrom(stamp)
        return grant

    def _check_serving(self) -> None:
        if not self._ready.is_set():
            raise BudgetError("UNAVAILABLE", "the operator is starting; retry shortly")
        if not self._active.is_set():
            raise BudgetError("UNAVAILABLE", "this replica does not lead; retry")
        if not self._intake_open:
            raise BudgetError("UNAVAILABLE", "the operator is stopping; retry")

    def lease(self, identity: Identity, request: apb.LeaseRequest) -> apb.LeaseGrant:
        owner = _owner(identity, request.sidecar_id)
        if (answer := self._idempotent.get(owner, request.request_id)) is not None:
            return answer
        tracked = self._budget_for(identity, request.budget)
        now = self._clock()
        tracked.leases.expire(now)
        lease = tracked.leases.grant(owner, request.requested_micro_usd, tracked.ledger.remaining, now)
        if lease is not None:
            tracked.ledger.revision += 1  # status records the outstanding allowance (restart safety)
        return self._idempotent.put(owner, request.request_id, self._grant(tracked, lease))

    def renew(self, identity: Identity, request: apb.RenewRequest) -> apb.LeaseGrant:
        self._check_serving()
        owner = _owner(identity, request.sidecar_id)
        if (answer := self._idempotent.get(owner, request.request_id)) is not None:
            return answer
        for tracked in self._budgets.values():
            if tracked.key[0] != identity.namespace:
                continue
            lease = tracked.leases.get(request.lease_id, owner)
            if lease is None:
                continue
            now = self._clock()
            tracked.leases.expire(now)
            if lease.id not in tracked.leases.leases:
                break
            before = lease.granted
            tracked.leases.renew(
                lease, request.spent_micro_usd, request.requested_micro_usd, tracked.ledger.remaining, now
            )
            if lease.granted != before:
                tracked.ledger.revision += 1
            return self._idempotent.put(owner, request.request_id, self._grant(tracked, lease))
        raise BudgetError("NOT_FOUND", f"lease {request.lease_id!r} is unknown or expired; open a new one")

    def return_lease(self, identity: Identity, request: apb.ReturnRequest) -> apb.ReturnResponse:
        self._check_serving()
        owner = _owner(identity, request.sidecar_id)
        for tracked in self._budgets.values():
            lease = (
                tracked.leases.get(request.lease_id, owner) if tracked.key[0] == identity.namespace else None
            )
            if lease is not None:
                returned = tracked.leases.release(lease, request.spent_micro_usd, self._clock())
                return apb.ReturnResponse(returned_micro_usd=returned)
        return apb.ReturnResponse(returned_micro_usd=0)

    def outstanding(self, namespace: str, name: str) -> int:
        """Micro-USD that leases of a budget hold back from new grants (tests, metrics)."""
        tracked = self._budgets.get((namespace, name))
        return tracked.leases.outstanding if tracked is not None else 0


def _seed(ledger: BudgetLedger, status: LLMBudgetStatus | None) -> None:
    """Continue from the stored status when it describes the current period."""
    if status is None or status.period_start is None or status.spent is None:
        return
    if status.period_start != ledger.window.start:
        return  # an earlier period (or a changed one): spend starts over
    ledger.spent = to_micro(status.spent)
    ledger.alerted_percent = status.alerted_percent or 0


def _counted(status: LLMBudgetStatus | None) -> CountedBatches:
    """The stored sequence marks, whatever the period: a batch counted then is accounted for."""
    counted = CountedBatches()
    for entry in (status.counted_usage if status is not None else None) or ():
        counted.record(entry.sidecar, entry.sequence, entry.at)
    return counted


def _outstanding(status: LLMBudgetStatus | None, ledger: BudgetLedger) -> int:
    """Allowance the stored status says was leased out, if it is of the current period."""
    if status is None or status.outstanding_allowance is None or status.period_start != ledger.window.start:
        return 0
    return to_micro(status.outstanding_allowance)


def _in_scope(spec: LLMBudgetSpec, record: upb.UsageRecord) -> bool:
    scope = spec.scope
    if scope.routes is not None:
        return record.route in scope.routes
    if scope.tenant is not None:
        return record.tenant == scope.tenant
    if scope.user is not None:
        return record.WhichOneof("user") == "user_raw" and record.user_raw == scope.user
    return bool(scope.namespace)

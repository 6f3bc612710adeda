"""The budget service with an injected clock: seeding from status, exactly-once spend, acks after
persistence, state pushed through the index, period rollover, leases scoped to the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from llmroute_operator.budgets import BudgetService
from llmroute_operator.budgets.ledger import COUNTED_LIMIT, CountedBatches
from llmroute_operator.budgets.service import BudgetError
from llmroute_operator.conditions import report_fields
from llmroute_operator.configserver.auth import Identity
from llmroute_operator.contracts import BudgetReport
from llmroute_operator.index import ClusterIndex
from llmroute_operator.settings import OperatorSettings
from llmroute_proto.api.budget import LLMBudgetStatus
from llmroute_proto.api.loader import load_text
from llmroute_proto.compiler import compile_config
from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import config_pb2 as pb
from llmroute_proto.v1 import usage_pb2 as upb

NS = "team-a"
NOW = datetime(2026, 3, 11, 12, tzinfo=UTC)  # March in Berlin starts 2026-02-28T23:00Z
MARCH_START = "2026-02-28T23:00:00Z"
ALICE = Identity(namespace=NS, service_account="app", pod_name="a", pod_uid="uid-a")
BOB = Identity(namespace=NS, service_account="app", pod_name="b", pod_uid="uid-b")
MALLORY = Identity(namespace="team-b", service_account="app", pod_name="m", pod_uid="uid-m")

BUDGETS = f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: chat, namespace: {NS}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: monthly, timezone: Europe/Berlin}}
  limits: {{soft: "8", hard: "10"}}
  onSoftLimit: {{downgradeTo: small}}
  alerts: [50, 100]
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: acme, namespace: {NS}}}
spec:
  scope: {{tenant: acme}}
  period: {{type: daily, timezone: UTC}}
  limits: {{hard: "100"}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Store:
    """What LLMBudget.status would hold; ``hold`` makes writes wait (an unreachable API server)."""

    def __init__(self) -> None:
        self.reports: dict[str, BudgetReport] = {}
        self.failing = False

    async def persist(self, namespace: str, name: str, report: BudgetReport) -> None:
        if self.failing:
            raise ConnectionError("API server unreachable")
        self.reports[name] = report


def put_budgets(index: ClusterIndex, statuses: dict[str, dict[str, object]] | None = None) -> None:
    for budget in load_text(BUDGETS).budgets:
        name = str(budget.metadata["name"])
        if statuses and name in statuses:
            budget = budget.model_copy(update={"status": LLMBudgetStatus.model_validate(statuses[name])})
        index.put_budget(NS, name, budget)


@pytest.fixture
async def service() -> AsyncIterator[tuple[BudgetService, ClusterIndex, Clock, Store]]:
    index, clock, store = ClusterIndex(), Clock(), Store()
    put_budgets(index)
    svc = BudgetService(
        index=index, settings=OperatorSettings(), clock=clock, persist=store.persist, warmup_seconds=-1
    )
    await svc.start()
    svc.mark_ready()
    yield svc, index, clock, store
    await svc.stop()


def batch(seq: int, *records: tuple[str, str, int], sidecar: str = "s1") -> upb.UsageBatch:
    return upb.UsageBatch(
        sidecar_id=sidecar,
        sequence=seq,
        records=[
            upb.UsageRecord(request_id=rid, route=route, cost_micro_usd=cost) for rid, route, cost in records
        ],
    )


async def test_spend_counts_once_even_when_resent(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, _, _, store = service
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 1_500_000), ("r2", "other", 9_000_000)))
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 1_500_000)))  # resent after a lost ack
    await svc.report_usage(ALICE, batch(2, ("r1", "chat", 1_500_000)))  # a new batch, a known request
    report = svc.budget_report(NS, "chat")
    assert report is not None and report.spent == "1.5" and report.remaining == "8.5"
    assert svc.duplicates == 2
    # Acknowledged only once written.
    assert svc.acked_sequence(ALICE, "s1") == 0
    await svc.persist_now()
    assert store.reports["chat"].spent == "1.5"
    assert svc.acked_sequence(ALICE, "s1") == 2


async def test_sequences_are_per_caller(service: tuple[BudgetService, ClusterIndex, Clock, Store]) -> None:
    """Another pod reusing a sidecar id and sequence is not mistaken for a resend."""
    svc, _, _, _ = service
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 1_000_000)))
    await svc.report_usage(BOB, batch(1, ("r2", "chat", 1_000_000)))
    assert svc.budget_report(NS, "chat").spent == "2"  # type: ignore[union-attr]


async def test_other_namespaces_usage_never_counts(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, _, _, _ = service
    await svc.report_usage(MALLORY, batch(1, ("r1", "chat", 5_000_000)))
    assert svc.budget_report(NS, "chat").spent == "0"  # type: ignore[union-attr]


async def test_tenant_scope(service: tuple[BudgetService, ClusterIndex, Clock, Store]) -> None:
    svc, _, _, _ = service
    record = upb.UsageRecord(request_id="t1", route="x", tenant="acme", cost_micro_usd=3_000_000)
    other = upb.UsageRecord(request_id="t2", route="x", tenant="other", cost_micro_usd=3_000_000)
    await svc.report_usage(ALICE, upb.UsageBatch(sidecar_id="s", sequence=1, records=[record, other]))
    assert svc.budget_report(NS, "acme").spent == "3"  # type: ignore[union-attr]


async def test_acks_wait_while_the_status_cannot_be_written(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, _, _, store = service
    store.failing = True
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 1_000_000)))
    await svc.report_usage(ALICE, batch(2))  # touches no budget, but comes after 1
    with pytest.raises(ConnectionError):
        await svc.persist_now()
    assert svc.acked_sequence(ALICE, "s1") == 0
    store.failing = False
    await svc.persist_now()
    assert svc.acked_sequence(ALICE, "s1") == 2


async def test_soft_limit_state_reaches_the_compiler_through_the_index(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, index, _, _ = service
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 8_000_000)))
    budget = next(b for b in index.view(NS).budgets if b.metadata["name"] == "chat")
    assert budget.status is not None and budget.status.state == "SoftLimited"
    assert budget.status.period_start == datetime(2026, 2, 28, 23, tzinfo=UTC)
    route = load_text(
        f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {NS}}}
spec:
  models: [{{name: chat, backends: [a]}}]
  backends: [{{name: a, provider: openai-compatible, model: m, endpoint: "http://x", region: r}}]
"""
    ).routes
    config = compile_config(namespace=NS, routes=route, secrets=[], budgets=index.view(NS).budgets).config
    compiled = next(b for b in config.budgets if b.name == "chat")
    assert compiled.state == pb.BUDGET_STATE_SOFT_LIMITED and compiled.downgrade_tier == pb.TIER_SMALL
    await svc.report_usage(ALICE, batch(2, ("r2", "chat", 2_000_000)))
    report = svc.budget_report(NS, "chat")
    assert report is not None and report.state == "Exhausted" and report.remaining == "0"


async def test_alerts_are_new_until_persisted(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, _, _, store = service
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 6_000_000)))
    assert svc.budget_report(NS, "chat").new_alerts == (50,)  # type: ignore[union-attr]
    await svc.persist_now()
    assert store.reports["chat"].alerted_percent == 50 and store.reports["chat"].new_alerts == (50,)
    assert svc.budget_report(NS, "chat").new_alerts == ()  # type: ignore[union-attr]


async def test_restart_continues_from_the_stored_status() -> None:
    index, clock = ClusterIndex(), Clock()
    put_budgets(
        index,
        {
            "chat": {"spent": "7.25", "periodStart": MARCH_START, "alertedPercent": 50},
            "acme": {"spent": "42", "periodStart": "2026-03-10T00:00:00Z"},  # yesterday: a past period
        },
    )
    svc = BudgetService(index=index, settings=OperatorSettings(), clock=clock, warmup_seconds=-1)
    await svc.start()
    svc.mark_ready()
    try:
        chat = svc.budget_report(NS, "chat")
        assert (
            chat is not None and chat.spent == "7.25" and chat.alerted_percent == 50 and chat.new_alerts == ()
        )
        assert svc.budget_report(NS, "acme").spent == "0"  # type: ignore[union-attr]
        # Index updates from our own status writes do not seed again (no double counting).
        put_budgets(index, {"chat": {"spent": "7.25", "periodStart": MARCH_START}})
        await svc.report_usage(ALICE, batch(1, ("r1", "chat", 250_000)))
        put_budgets(index, {"chat": {"spent": "7.5", "periodStart": MARCH_START}})
        assert svc.budget_report(NS, "chat").spent == "7.5"  # type: ignore[union-attr]
    finally:
        await svc.stop()


async def test_period_rollover_resets_spend(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, _, clock, _ = service
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 9_000_000)))
    clock.now = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)  # 00:30 on April 1st in Berlin (CEST)
    svc.tick()
    report = svc.budget_report(NS, "chat")
    assert report is not None and report.spent == "0" and report.state == "Normal"
    assert report.period_start == "2026-03-31T22:00:00Z" and report.reset_at == "2026-04-30T22:00:00Z"
    # A late record from March does not count in April.
    late = upb.UsageRecord(request_id="late", route="chat", cost_micro_usd=1_000_000)
    late.started_at.FromDatetime(datetime(2026, 3, 31, 21, tzinfo=UTC))
    await svc.report_usage(ALICE, upb.UsageBatch(sidecar_id="s1", sequence=2, records=[late]))
    assert svc.budget_report(NS, "chat").spent == "0" and svc.late_records == 1  # type: ignore[union-attr]


async def test_leases_are_scoped_idempotent_and_bounded(
    service: tuple[BudgetService, ClusterIndex, Clock, Store],
) -> None:
    svc, _, clock, _ = service
    await svc.report_usage(ALICE, batch(1, ("r1", "chat", 4_000_000)))  # 6 USD left
    first = svc.lease(
        ALICE,
        apb.LeaseRequest(sidecar_id="s1", budget="chat", requested_micro_usd=5_000_000, request_id="q1"),
    )
    assert first.granted_micro_usd == 5_000_000 and first.lease_id
    assert (
        svc.lease(
            ALICE,
            apb.LeaseRequest(sidecar_id="s1", budget="chat", requested_micro_usd=5_000_000, request_id="q1"),
        )
        == first
    )
    second = svc.lease(BOB, apb.LeaseRequest(sidecar_id="s2", budget="chat", requested_micro_usd=5_000_000))
    assert second.granted_micro_usd == 1_000_000
    assert svc.outstanding(NS, "chat") == 6_000_000
    nothing = svc.lease(BOB, apb.LeaseRequest(sidecar_id="s2", budget="chat", requested_micro_usd=1))
    assert nothing.granted_micro_usd == 0 and not nothing.lease_id
    with pytest.raises(BudgetError) as caught:
        svc.lease(MALLORY, apb.LeaseRequest(sidecar_id="m", budget="chat", requested_micro_usd=1))
    assert caught.value.code == "NOT_FOUND"
    with pytest.raises(BudgetError):  # someone else's lease id is unknown to Bob
        svc.renew(BOB, apb.RenewRequest(sidecar_id="s2", lease_id=first.lease_id))
    renewed = svc.renew(
        ALICE, apb.RenewRequest(sidecar_id="s1", lease_id=first.lease_id, spent_micro_usd=1_000_000)
    )
    assert renewed.granted_micro_usd == 5_000_000
    back = svc.return_lease(
        ALICE, apb.ReturnRequest(sidecar_id="s1", lease_id=first.lease_id, spent_micro_usd=2_000_000)
    )
    assert back.returned_micro_usd == 3_000_000
    assert (
        svc.return_lease(
            ALICE, apb.ReturnRequest(sidecar_id="s1", lease_id=first.lease_id)
        ).returned_micro_usd
        == 0
    )
    clock.now += timedelta(minutes=5)
    svc.tick()
    assert svc.outstanding(NS, "chat") == 0


async def test_user_budgets_count_that_users_records_only() -> None:
    index, clock = ClusterIndex(), Clock()
    for budget in load_text(
        f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: trial, namespace: {NS}}}
spec:
  scope: {{user: u-42}}
  period: {{type: daily, timezone: UTC}}
  limits: {{hard: "5"}}
"""
    ).budgets:
        index.put_budget(NS, "trial", budget)
    svc = BudgetService(index=index, settings=OperatorSettings(), clock=clock, warmup_seconds=-1)
    await svc.start()
    svc.mark_ready()
    try:
        records = [
            upb.UsageRecord(request_id="a", route="chat", cost_micro_usd=1_000_000, user_raw="u-42"),
            upb.UsageRecord(request_id="b", route="chat", cost_micro_usd=2_000_000, user_raw="u-7"),
            upb.UsageRecord(request_id="c", route="chat", cost_micro_usd=4_000_000),
        ]
        await svc.report_usage(ALICE, upb.UsageBatch(sidecar_id="s1", sequence=1, records=records))
        assert svc.budget_report(NS, "trial").spent == "1"  # type: ignore[union-attr]
    finally:
        await svc.stop()


async def test_a_restarted_operator_keeps_the_recorded_outstanding_allowance_reserved() -> None:
    index, clock = ClusterIndex(), Clock()
    put_budgets(
        index,
        {"chat": {"spent": "2", "periodStart": MARCH_START, "outstandingAllowance": "7.5"}},
    )
    svc = BudgetService(index=index, settings=OperatorSettings(), clock=clock, warmup_seconds=-1)
    await svc.start()
    svc.mark_ready()
    try:
        # 10 - 2 spent - 7.5 that leases of the previous run may still hold = 0.5 to grant now.
        grant = svc.lease(
            ALICE, apb.LeaseRequest(sidecar_id="s1", budget="chat", requested_micro_usd=5_000_000)
        )
        assert grant.granted_micro_usd == 500_000
        clock.now += timedelta(seconds=26)  # those leases have certainly expired
        svc.tick()
        later = svc.lease(
            ALICE, apb.LeaseRequest(sidecar_id="s2", budget="chat", requested_micro_usd=5_000_000)
        )
        assert later.granted_micro_usd == 5_000_000
    finally:
        await svc.stop()


class PartialStore(Store):
    """A store where some budgets' writes fail: the API server answered for one object, not another."""

    def __init__(self, failing_names: set[str]) -> None:
        super().__init__()
        self.failing_names = failing_names

    async def persist(self, namespace: str, name: str, report: BudgetReport) -> None:
        if name in self.failing_names:
            raise ConnectionError("API server unreachable")
        await super().persist(namespace, name, report)


def _stored(store: Store) -> dict[str, dict[str, object]]:
    """What the API server holds after the writes: the status fields the persist callback patched."""
    return {name: report_fields(report) for name, report in store.reports.items()}


def tenant_batch(seq: int, *records: tuple[str, str, str, int], sidecar: str = "s1") -> upb.UsageBatch:
    return upb.UsageBatch(
        sidecar_id=sidecar,
        sequence=seq,
        records=[
            upb.UsageRecord(request_id=rid, route=route, tenant=tenant, cost_micro_usd=cost)
            for rid, route, tenant, cost in records
        ],
    )


async def test_a_batch_written_but_not_acknowledged_before_a_crash_is_not_counted_again() -> None:
    # The first leader counts batches 1 and 2 and writes both budgets' status; the chat write lands,
    # the acme write fails; then it dies before acknowledging anything. The sidecar sends 1 and 2
    # again to the next leader, which must count them exactly where they are not yet written.
    index, clock, store = ClusterIndex(), Clock(), PartialStore({"acme"})
    put_budgets(index)
    first = BudgetService(index=index, settings=OperatorSettings(), clock=clock, persist=store.persist,
                          warmup_seconds=-1)  # fmt: skip
    await first.start()
    first.mark_ready()
    sent = [
        tenant_batch(1, ("r1", "chat", "acme", 1_000_000)),
        tenant_batch(2, ("r2", "chat", "other", 2_000_000), ("r3", "other", "acme", 4_000_000)),
    ]
    for b in sent:
        await first.report_usage(ALICE, b)
    with pytest.raises(ConnectionError):
        await first.persist_now()
    assert first.acked_sequence(ALICE, "s1") == 0  # acme is not written: nothing acknowledged
    assert _stored(store)["chat"]["spent"] == "3"
    assert _stored(store)["chat"]["countedUsage"] == [
        {"sidecar": "uid-a/s1", "sequence": 2, "at": "2026-03-11T12:00:00Z"}
    ]
    # It crashed: its loops stop, and no final write happens (stop() would make one).
    for task in first._tasks:
        task.cancel()
    await asyncio.gather(*first._tasks, return_exceptions=True)

    fresh_index = ClusterIndex()
    put_budgets(fresh_index, _stored(store))
    clock.now += timedelta(seconds=20)
    second = BudgetService(index=fresh_index, settings=OperatorSettings(), clock=clock,
                           persist=Store().persist, warmup_seconds=-1)  # fmt: skip
    await second.start()
    second.mark_ready()
    try:
        for b in [*sent, tenant_batch(3, ("r4", "chat", "x", 500_000))]:
            await second.report_usage(ALICE, b)
        assert second.budget_report(NS, "chat").spent == "3.5"  # type: ignore[union-attr]
        assert second.budget_report(NS, "acme").spent == "5"  # type: ignore[union-attr]
        assert second.recounts_refused == 2  # batches 1 and 2, for chat only
        await second.persist_now()
        assert second.acked_sequence(ALICE, "s1") == 3
        # Another sidecar instance (a restarted sidecar: a new id) has its own sequence space.
        await second.report_usage(ALICE, tenant_batch(1, ("r5", "chat", "x", 250_000), sidecar="s1-new"))
        assert second.budget_report(NS, "chat").spent == "3.75"  # type: ignore[union-attr]
    finally:
        await second.stop()


def test_counted_batches_keep_the_highest_sequence_and_forget_idle_sidecars() -> None:
    counted = CountedBatches()
    counted.record("p/s", 5, NOW)
    counted.record("p/s", 3, NOW + timedelta(minutes=1))  # an older batch never lowers the mark
    assert counted.includes("p/s", 5) and counted.includes("p/s", 1) and not counted.includes("p/s", 6)
    assert not counted.includes("p/other", 1)
    counted.record("p/quiet", 1, NOW - timedelta(hours=2))
    counted.prune(NOW)
    assert set(counted.last) == {"p/s"}
    for i in range(COUNTED_LIMIT + 5):
        counted.record(f"p/{i}", 1, NOW + timedelta(milliseconds=i))
    counted.prune(NOW + timedelta(seconds=30))
    assert (
        len(counted.last) == COUNTED_LIMIT
        and "p/s" not in counted.last
        and f"p/{COUNTED_LIMIT + 4}" in counted.last
    )

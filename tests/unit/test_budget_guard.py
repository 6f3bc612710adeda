"""The sidecar's budget guard: scope, wallets, reservations, failure modes, downgrades (budget/)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.budget import (
    BudgetGuard,
    BudgetRefusal,
    Grant,
    LeaseGone,
    LocalSource,
    Reservation,
    Unreachable,
    Wallet,
    in_scope,
)


def budget(
    name: str = "team",
    *,
    hard: int = 10_000,
    soft: int = 0,
    spent: int = 0,
    routes: tuple[str, ...] = ("chat",),
    tenants: tuple[str, ...] = (),
    users: tuple[str, ...] = (),
    mode: int = pb.BUDGET_FAILURE_MODE_CLOSED,
    state: int = pb.BUDGET_STATE_NORMAL,
    downgrade_tier: int = 0,
) -> pb.Budget:
    out = pb.Budget(
        name=name,
        state=state,
        scope=pb.BudgetScope(routes=routes, tenants=tenants, users=users),
        requires_allowance=True,
        failure_mode=mode,
        hard_limit_micro_usd=hard,
        soft_limit_micro_usd=soft,
        spent_micro_usd=spent,
        period="daily",
        timezone="UTC",
    )
    if downgrade_tier:
        out.downgrade_tier = downgrade_tier
    return out


def config(*budgets: pb.Budget) -> pb.RouterConfig:
    return pb.RouterConfig(budgets=list(budgets))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    """An operator that grants what it is asked, up to ``left``, or is unreachable."""

    def __init__(self, left: int = 1_000_000, *, ttl: float = 20.0) -> None:
        self.left = left
        self.ttl = ttl
        self.down = False
        self.forget = False
        self.leases = 0
        self.granted: dict[str, int] = {}

    async def lease(self, budget: pb.Budget, amount: int) -> Grant:
        if self.down:
            raise Unreachable("operator down")
        self.leases += 1
        take = min(amount, self.left)
        self.left -= take
        lease_id = f"l{self.leases}" if take else ""
        self.granted[lease_id] = take
        return Grant(lease_id, take, self.ttl if take else math.inf, pb.BUDGET_STATE_NORMAL)

    async def renew(self, budget: pb.Budget, lease_id: str, spent: int, amount: int) -> Grant:
        if self.down:
            raise Unreachable("operator down")
        if self.forget:
            raise LeaseGone(lease_id)
        take = min(amount, self.left)
        self.left -= take
        self.granted[lease_id] += take
        return Grant(lease_id, self.granted[lease_id], self.ttl, pb.BUDGET_STATE_NORMAL)

    async def give_back(self, budget: pb.Budget, lease_id: str, spent: int) -> None:
        return None

    def observe(self, budget: pb.Budget, micro: int) -> None:
        return None

    def current_state(self, budget: pb.Budget) -> int | None:
        return None

    def reset_at(self, budget: pb.Budget) -> datetime | None:
        return None


def test_scope_needs_every_set_field() -> None:
    scope = pb.BudgetScope(routes=["chat"], tenants=["acme"])
    assert in_scope(scope, route="chat", tenant="acme", user="")
    assert not in_scope(scope, route="chat", tenant="other", user="")
    assert not in_scope(scope, route="code", tenant="acme", user="")
    assert in_scope(pb.BudgetScope(namespace=True), route="any", tenant="", user="")
    assert in_scope(pb.BudgetScope(users=["u1"]), route="any", tenant="", user="u1")
    assert not in_scope(pb.BudgetScope(users=["u1"]), route="any", tenant="", user="u2")
    assert not in_scope(pb.BudgetScope(), route="any", tenant="", user="")


def test_wallet_reserves_only_what_it_holds_and_settles_the_difference() -> None:
    wallet = Wallet("team")
    wallet.apply(Grant("l1", 1_000, 20.0, pb.BUDGET_STATE_NORMAL), now=0.0)
    assert wallet.try_reserve(600, 1.0)
    assert not wallet.try_reserve(600, 1.0)  # 400 left unreserved
    wallet.settle(600, 250, 2.0)  # actual cost below the estimate: 350 comes back
    assert wallet.available(2.0) == 750
    wallet.release(0)
    assert wallet.try_reserve(750, 2.0)
    assert wallet.available(25.0) == 0  # expired: nothing may be spent from it


def test_wallet_asks_ahead_of_need() -> None:
    wallet = Wallet("team", floor=1_000)
    assert wallet.wants_topup(0.0)  # no lease yet
    wallet.apply(Grant("l1", 1_000, 20.0, pb.BUDGET_STATE_NORMAL), now=0.0)
    assert not wallet.wants_topup(1.0)
    assert wallet.try_reserve(700, 1.0)
    assert wallet.wants_topup(1.0)  # less than half the target left
    wallet.release(700)
    assert wallet.wants_topup(10.5)  # past half of the lease's lifetime: renew


async def test_local_source_enforces_the_hard_limit_and_free_backends_pass() -> None:
    guard = BudgetGuard(source=LocalSource())
    guard.sync(config(budget(hard=10_000)))
    charge = guard.charge(route="chat", tenant="", user="")
    assert charge is not None and charge.names == ("team",)
    spent = 0
    while True:
        result = await charge.reserve(3_000)
        if isinstance(result, BudgetRefusal):
            break
        result.settle(3_000)
        spent += 3_000
    assert spent == 9_000  # a fourth 3,000 would pass the 10,000 limit
    assert result.budget == "team" and result.reset_at.endswith("T00:00:00Z")
    free = await charge.reserve(0)
    assert isinstance(free, Reservation)  # priced 0: no allowance needed
    last = await charge.reserve(1_000)  # what is left still buys a small request
    assert isinstance(last, Reservation)
    last.settle(1_000)
    refusal = await charge.reserve(1)
    assert isinstance(refusal, BudgetRefusal) and "hard limit" in refusal.reason


async def test_local_source_soft_limit_downgrades() -> None:
    guard = BudgetGuard(source=LocalSource())
    guard.sync(config(budget(hard=10_000, soft=5_000, downgrade_tier=pb.TIER_SMALL)))
    charge = guard.charge(route="chat", tenant="", user="")
    assert charge is not None and charge.downgrade is None
    reservation = await charge.reserve(5_000)
    assert isinstance(reservation, Reservation)
    reservation.settle(5_000)
    later = guard.charge(route="chat", tenant="", user="")
    assert later is not None and later.downgrade is not None
    assert later.downgrade.target == "small" and later.downgrade.budget == "team"


async def test_local_source_rolls_over_at_the_period_end() -> None:
    now = [datetime(2026, 5, 1, 23, 0, tzinfo=UTC)]
    source = LocalSource(clock=lambda: now[0])
    seeded = budget(hard=10_000, spent=9_999)
    end = Timestamp()
    end.FromDatetime(datetime(2026, 5, 2, tzinfo=UTC))
    seeded.period_end.CopyFrom(end)
    guard = BudgetGuard(source=source)
    guard.sync(config(seeded))
    charge = guard.charge(route="chat", tenant="", user="")
    assert charge is not None
    assert isinstance(await charge.reserve(5), BudgetRefusal)  # status said 9,999 spent
    now[0] += timedelta(hours=2)  # the next day
    assert isinstance(await charge.reserve(5_000), Reservation)


async def test_every_budget_in_scope_must_cover_the_request() -> None:
    guard = BudgetGuard(source=LocalSource())
    guard.sync(config(budget("team", hard=10_000), budget("acme", hard=100, routes=(), tenants=("acme",))))
    charge = guard.charge(route="chat", tenant="acme", user="")
    assert charge is not None and set(charge.names) == {"team", "acme"}
    refusal = await charge.reserve(500)
    assert isinstance(refusal, BudgetRefusal) and refusal.budget == "acme"
    # Nothing stays reserved in the budget that did have room.
    assert guard.wallets["team"].reserved == 0
    assert guard.charge(route="chat", tenant="other", user="") is not None  # still "team"
    assert guard.charge(route="code", tenant="other", user="") is None


@pytest.mark.parametrize(
    ("mode", "admitted"), [(pb.BUDGET_FAILURE_MODE_CLOSED, False), (pb.BUDGET_FAILURE_MODE_OPEN, True)]
)
async def test_operator_unreachable_spends_what_is_held_then_follows_failure_mode(
    mode: int, admitted: bool
) -> None:
    clock, source, events = Clock(), FakeSource(), []
    guard = BudgetGuard(source=source, clock=clock, listener=lambda e, b: events.append(e))
    guard.sync(config(budget(hard=1_000_000, mode=mode)))
    charge = guard.charge(route="chat", tenant="", user="")
    assert charge is not None
    first = await charge.reserve(2_000)  # leases on first use (the urgent path)
    assert isinstance(first, Reservation)
    first.settle(2_000)
    source.down = True
    held = guard.wallets["team"].available(clock.now)
    assert held > 0
    spent = await charge.reserve(held)  # what it holds is still spendable
    assert isinstance(spent, Reservation)
    spent.settle(held)
    result = await charge.reserve(1_000)
    assert isinstance(result, Reservation) is admitted
    assert ("fail_open" in events) is admitted
    if not admitted:
        assert isinstance(result, BudgetRefusal) and "cannot reach the operator" in result.reason


async def test_a_forgotten_lease_is_spent_out_while_no_new_one_can_be_had() -> None:
    clock, source = Clock(), FakeSource()
    guard = BudgetGuard(source=source, clock=clock)
    guard.sync(config(budget(hard=1_000_000)))
    charge = guard.charge(route="chat", tenant="", user="")
    assert charge is not None
    reservation = await charge.reserve(1_000)
    assert isinstance(reservation, Reservation)
    reservation.settle(1_000)
    wallet = guard.wallets["team"]
    before = wallet.available(clock.now)
    source.forget, source.down = True, False

    async def lease_refused(budget: pb.Budget, amount: int) -> Grant:
        raise Unreachable("the operator restarted and is not granting yet")

    source.lease = lease_refused  # type: ignore[method-assign]
    await guard._topup(guard.budgets["team"], wallet)
    assert wallet.orphaned and wallet.available(clock.now) == before  # the old lease still counts
    again = await charge.reserve(1_000)
    assert isinstance(again, Reservation)


async def test_background_topups_keep_ahead_of_requests() -> None:
    clock, source, events = Clock(), FakeSource(), []
    guard = BudgetGuard(source=source, clock=clock, listener=lambda e, b: events.append(e))
    guard.sync(config(budget(hard=1_000_000)))
    await guard.start()
    try:
        for _ in range(50):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # the first lease, before any request
        charge = guard.charge(route="chat", tenant="", user="")
        assert charge is not None
        for _ in range(200):
            result = await charge.reserve(1_000)
            assert isinstance(result, Reservation)
            result.settle(1_000)
            await asyncio.sleep(0.001)
    finally:
        await guard.stop()
    assert events.count("urgent") == 0, events
    assert events.count("topup") >= 2

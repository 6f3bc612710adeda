"""Allowance leases: grants never sum above what remains, under random request/spend/renew/return/expiry.

A hypothesis state machine plays several sidecars against one budget. Sidecars only spend what a live
lease still allows them, and report it in Renew/Return; their usage records reach the ledger late, but
within the grace (the assumption the bound rests on). After every step: what leases reserve <= hard
limit - counted spend, and the money actually spent never exceeds the hard limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmroute_operator.budgets.leases import LeaseBook
from llmroute_operator.budgets.ledger import BudgetLedger, Limits
from llmroute_proto.periods import Window

HARD = 1_000_000
T0 = datetime(2026, 3, 1, tzinfo=UTC)
OWNERS = ["s1", "s2", "s3"]
# Amounts near the boundaries (nothing, a little, halves, all of it) find over-grants far more often
# than uniform ones.
AMOUNTS = st.one_of(st.sampled_from([0, 1, HARD // 4, HARD // 2, HARD]), st.integers(0, HARD))


@dataclass
class Wallet:
    """A sidecar's view of one lease."""

    owner: str
    granted: int
    spent: int
    expires_at: datetime


class Budget(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.ledger = BudgetLedger(window=Window(T0, T0 + timedelta(days=30)), limits=Limits(hard=HARD))
        self.book = LeaseBook(ttl=timedelta(seconds=30), grace=timedelta(seconds=10))
        self.wallets: dict[str, Wallet] = {}
        # Usage not yet counted: (owner, micro-USD, when it was spent).
        self.in_flight: list[tuple[str, int, datetime]] = []
        self.spent_for_real = 0

    def _live(self) -> list[str]:
        return [i for i, w in self.wallets.items() if self.now < w.expires_at and i in self.book.leases]

    @rule(owner=st.sampled_from(OWNERS), amount=AMOUNTS)
    def lease(self, owner: str, amount: int) -> None:
        before = self.book.available(self.ledger.remaining)
        lease = self.book.grant(owner, amount, self.ledger.remaining, self.now)
        if lease is None:
            assert min(amount, before) == 0
            return
        assert lease.granted == min(amount, before)
        self.wallets[lease.id] = Wallet(owner, lease.granted, 0, lease.expires_at)

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def spend(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self._live()))
        wallet = self.wallets[lease_id]
        left = wallet.granted - wallet.spent
        amount = data.draw(st.one_of(st.sampled_from([left, left // 2]), st.integers(0, left)))
        wallet.spent += amount
        self.spent_for_real += amount
        self.in_flight.append((wallet.owner, amount, self.now))

    @precondition(lambda self: self.in_flight)
    @rule(count=st.integers(1, 5))
    def deliver_usage(self, count: int) -> None:
        for owner, amount, _ in self.in_flight[:count]:
            self.ledger.add(amount)
            self.book.observe(owner, amount)
        del self.in_flight[:count]

    @precondition(lambda self: self._live())
    @rule(data=st.data(), top_up=AMOUNTS)
    def renew(self, data: st.DataObject, top_up: int) -> None:
        lease_id = data.draw(st.sampled_from(self._live()))
        wallet = self.wallets[lease_id]
        lease = self.book.get(lease_id, wallet.owner)
        assert lease is not None
        before = lease.granted
        self.book.renew(lease, wallet.spent, top_up, self.ledger.remaining, self.now)
        assert lease.granted - before <= top_up
        wallet.granted, wallet.expires_at = lease.granted, lease.expires_at

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self._live()))
        wallet = self.wallets.pop(lease_id)
        lease = self.book.get(lease_id, wallet.owner)
        assert lease is not None
        returned = self.book.release(lease, wallet.spent, self.now)
        assert 0 <= returned <= wallet.granted - wallet.spent

    @rule(seconds=st.integers(1, 50))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        # Usage records arrive within the grace of the spend (what the reclaim delay assumes).
        late = [i for i, (_, _, at) in enumerate(self.in_flight) if at + self.book.grace <= self.now]
        if late:
            self.deliver_usage(late[-1] + 1)
        self.book.expire(self.now)

    @invariant()
    def outstanding_fits_in_what_remains(self) -> None:
        assert self.book.outstanding <= max(0, HARD - self.ledger.spent)

    @invariant()
    def the_hard_limit_holds(self) -> None:
        assert self.spent_for_real <= HARD
        assert self.ledger.spent <= self.spent_for_real


TestLeases = Budget.TestCase
TestLeases.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)


def test_grant_is_clipped_to_what_remains_after_other_leases() -> None:
    book = LeaseBook()
    first = book.grant("a", 700, remaining=1000, now=T0)
    second = book.grant("b", 700, remaining=1000, now=T0)
    assert first is not None and second is not None
    assert (first.granted, second.granted) == (700, 300)
    assert book.grant("c", 1, remaining=1000, now=T0) is None
    book.observe("a", 200)  # a's usage counted: the ledger now says 800 remain
    assert book.release(first, spent=200, now=T0) == 500
    third = book.grant("c", 1000, remaining=800, now=T0)  # 300 still held by b
    assert third is not None and third.granted == 500


def test_reported_spend_stays_reserved_until_it_is_counted() -> None:
    """Spend a sidecar reports before its usage arrives must not be granted to anyone else."""
    book = LeaseBook()
    lease = book.grant("a", 100, remaining=100, now=T0)
    assert lease is not None
    book.renew(lease, spent=100, requested=0, remaining=100, now=T0)  # all spent, usage in flight
    assert book.grant("b", 100, remaining=100, now=T0) is None
    assert book.release(lease, spent=100, now=T0) == 0
    assert book.grant("b", 100, remaining=100, now=T0) is None  # still in flight
    book.observe("a", 100)  # now counted: the ledger's remaining is 0 and the lease is gone
    assert book.outstanding == 0 and not book.leases


def test_leases_are_dropped_a_grace_after_they_end() -> None:
    book = LeaseBook(ttl=timedelta(seconds=20), grace=timedelta(seconds=5))
    lease = book.grant("a", 500, remaining=1000, now=T0)
    returned = book.grant("b", 100, remaining=1000, now=T0)
    assert lease is not None and returned is not None
    book.observe("a", 200)
    book.release(returned, spent=40, now=T0 + timedelta(seconds=1))
    book.expire(T0 + timedelta(seconds=5))
    assert book.outstanding == 300 + 40  # a: 500 granted - 200 counted; b: 40 reported, not counted
    book.expire(T0 + timedelta(seconds=6))
    assert book.outstanding == 300
    book.expire(T0 + timedelta(seconds=24))  # expired at 20, still within the grace
    assert book.outstanding == 300
    book.expire(T0 + timedelta(seconds=25))
    assert book.outstanding == 0


def test_usage_of_one_sidecar_never_touches_anothers_lease() -> None:
    book = LeaseBook()
    lease = book.grant("a", 500, remaining=1000, now=T0)
    assert lease is not None
    book.observe("b", 50)
    assert lease.reserve == 500
    book.observe("a", 600)  # more than granted: the excess is nobody's lease
    assert lease.reserve == 0 and lease.observed == 500

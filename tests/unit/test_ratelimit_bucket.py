"""Token-bucket arithmetic (``llmroute_sidecar.ratelimit.bucket``) and the in-process store
(``local``): refill, burst, debt, refund cap, all-or-nothing, and the bounded key count."""

from __future__ import annotations

import pytest

from llmroute_sidecar.ratelimit import bucket
from llmroute_sidecar.ratelimit.bucket import Charge
from llmroute_sidecar.ratelimit.local import LocalBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refill_is_continuous_and_capped() -> None:
    assert bucket.refill(0, 1, 60) == 1  # 60/min is 1/s
    assert bucket.refill(0, 0.5, 120) == 1
    assert bucket.refill(59.5, 10, 60) == 60
    assert bucket.refill(-30, 15, 60) == -15  # debt is paid back at the same rate
    assert bucket.refill(10, -5, 60) == 10  # a clock going backwards refills nothing


def test_wait_and_until_full() -> None:
    assert bucket.wait(0.25, 1, 60) == pytest.approx(0.75)
    assert bucket.wait(5, 1, 60) == 0
    assert bucket.wait(-10, 1, 60) == pytest.approx(11)
    # More than the capacity only needs a full bucket.
    assert bucket.wait(30, 500, 60) == pytest.approx(30)
    assert bucket.until_full(0, 600) == pytest.approx(60)
    assert bucket.until_full(600, 600) == 0


def test_admit_all_is_all_or_nothing() -> None:
    charges = [Charge("a", 10, 1), Charge("b", 100, 50)]
    assert bucket.admit_all([5, 60], charges) == bucket.Outcome(True, (4, 10))
    assert bucket.admit_all([5, 40], charges) == bucket.Outcome(False, (5, 40))


def test_local_burst_then_refill() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock, max_keys=10)
    charge = [Charge("k", 60, 1)]
    assert [store.admit(charge).allowed for _ in range(61)] == [True] * 60 + [False]
    clock.now += 0.999
    assert not store.admit(charge).allowed
    clock.now += 0.001
    assert store.admit(charge).allowed
    assert not store.admit(charge).allowed


def test_local_settle_debt_and_refund_cap() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock, max_keys=10)
    assert store.admit([Charge("t", 600, 100)]).levels == (500,)
    store.settle([Charge("t", 600, 700)])  # used 800 instead of 100: 200 in debt
    outcome = store.admit([Charge("t", 600, 0)])
    assert not outcome.allowed and outcome.levels == (-200,)
    clock.now += 20  # 10 tokens/s pays the debt back in 20 s
    assert store.admit([Charge("t", 600, 0)]).allowed
    store.settle([Charge("t", 600, -10_000)])  # a refund never exceeds capacity
    assert store.admit([Charge("t", 600, 600)]).levels == (0,)


def test_local_oversize_request_needs_a_full_bucket_and_goes_into_debt() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock, max_keys=10)
    assert store.admit([Charge("t", 100, 250)]).levels == (-150,)
    assert not store.admit([Charge("t", 100, 250)]).allowed
    clock.now += 149.9  # 100/min: 150 s to get from -150 back to 100
    assert not store.admit([Charge("t", 100, 250)]).allowed
    clock.now += 0.1
    assert store.admit([Charge("t", 100, 250)]).allowed


def test_local_keys_are_bounded_lru_and_full_buckets_are_dropped() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock, max_keys=2)
    for key in ("a", "b"):
        store.admit([Charge(key, 1, 1)])
    assert not store.admit([Charge("a", 1, 1)]).allowed  # "a" is now most recently used
    store.admit([Charge("c", 1, 1)])  # evicts "b"
    assert len(store) == 2
    assert store.admit([Charge("b", 1, 1)]).allowed  # forgotten, so full again
    assert not store.admit([Charge("c", 1, 1)]).allowed
    clock.now += 120
    store.settle([Charge("c", 1, 0)])  # refilled to full: dropped
    assert len(store) == 1
    with pytest.raises(ValueError, match="max_keys"):
        LocalBuckets(clock=clock, max_keys=0)

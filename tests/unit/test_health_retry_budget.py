"""The retry budget (``health/retry_budget.py``): exhaustion, the floor, recovery."""

from __future__ import annotations

from llmroute_sidecar.health import RetryBudget

from .health_support import FakeClock


def test_retries_stay_within_the_fraction_of_requests() -> None:
    budget = RetryBudget(0.2, window=10.0, min_retries=3, clock=FakeClock())
    for _ in range(100):
        budget.on_request()
    granted = sum(budget.try_retry() for _ in range(50))
    assert granted == 20
    assert budget.usage() == (100, 20)


def test_a_quiet_route_may_still_retry_up_to_the_floor() -> None:
    budget = RetryBudget(0.2, window=10.0, min_retries=3, clock=FakeClock())
    budget.on_request()
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]


def test_the_budget_recovers_as_the_window_slides() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, window=10.0, min_retries=1, clock=clock)
    for _ in range(10):
        budget.on_request()
    assert budget.try_retry() and budget.try_retry() and not budget.try_retry()
    clock.advance(10.0)
    assert budget.usage() == (0, 0)
    for _ in range(10):
        budget.on_request()
    assert budget.try_retry()


def test_zero_fraction_allows_only_the_floor_and_none_means_no_budget() -> None:
    zero = RetryBudget(0.0, min_retries=2, clock=FakeClock())
    for _ in range(1000):
        zero.on_request()
    assert [zero.try_retry() for _ in range(3)] == [True, True, False]
    unlimited = RetryBudget(None, min_retries=0, clock=FakeClock())
    assert all(unlimited.try_retry() for _ in range(100))

"""The decaying latency estimate (``health/latency.py``)."""

from __future__ import annotations

import pytest

from llmroute_sidecar.health import LatencyEstimate

from .health_support import FakeClock


def test_first_sample_is_the_estimate_and_none_before() -> None:
    estimate = LatencyEstimate(clock=FakeClock())
    assert estimate.value() is None
    estimate.observe(0.8)
    assert estimate.value() == pytest.approx(0.8)


def test_samples_lose_half_their_weight_every_half_life() -> None:
    clock = FakeClock()
    estimate = LatencyEstimate(half_life=5.0, clock=clock)
    estimate.observe(1.0)
    clock.advance(5.0)
    estimate.observe(3.0)
    # weights 0.5 and 1: (0.5 * 1 + 3) / 1.5
    assert estimate.value() == pytest.approx(3.5 / 1.5)


def test_a_burst_of_samples_is_averaged_without_first_sample_bias() -> None:
    clock = FakeClock()
    estimate = LatencyEstimate(half_life=5.0, clock=clock)
    estimate.observe(10.0)  # a cold start outlier
    for _ in range(999):
        clock.advance(0.001)
        estimate.observe(1.0)
    value = estimate.value()
    assert value is not None and value < 1.02


def test_the_estimate_follows_a_lasting_change() -> None:
    clock = FakeClock()
    estimate = LatencyEstimate(half_life=5.0, clock=clock)
    for _ in range(100):
        clock.advance(0.1)
        estimate.observe(0.2)
    for _ in range(300):  # 30 s, six half-lives, of a slower backend
        clock.advance(0.1)
        estimate.observe(2.0)
    value = estimate.value()
    assert value is not None and 1.95 < value <= 2.0


def test_the_estimate_goes_stale() -> None:
    clock = FakeClock()
    estimate = LatencyEstimate(stale_after=60.0, clock=clock)
    estimate.observe(0.5)
    clock.advance(61)
    assert estimate.value() is None


def test_quantile_of_recent_samples() -> None:
    estimate = LatencyEstimate(recent=100, clock=FakeClock())
    assert estimate.quantile(0.95) is None
    for i in range(1, 101):
        estimate.observe(i / 100)
    assert estimate.quantile(0.95) == pytest.approx(0.96)
    assert estimate.quantile(0.5) == pytest.approx(0.51)

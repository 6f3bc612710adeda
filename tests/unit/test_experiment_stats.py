"""The experiment statistics: Student t p-values and quantiles against published table values,
Welch's test, intervals that cover the true mean as often as they claim, histogram percentiles, and
the verdict (direction per metric, minimum samples, Bonferroni for three arms)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_operator.experiments.stats import (
    BUCKETS_MS,
    Arm,
    Histogram,
    Moments,
    decide,
    t_quantile,
    two_sided_p,
    welch,
)


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        # Reference values from scipy.stats.t (scipy 1.17.1), 2 * t.sf(t, df).
        (2.0, 10, 0.073388),
        (2.228139, 10, 0.05),
        (12.706205, 1, 0.05),
        (0.5, 3, 0.651448),
        (3.0, 30, 0.005390),
        (1.959964, 1e9, 0.05),  # the normal limit
        (0.0, 5, 1.0),
    ],
)
def test_two_sided_p_matches_tables(t: float, df: float, p: float) -> None:
    assert two_sided_p(t, df) == pytest.approx(p, abs=2e-6)
    assert two_sided_p(-t, df) == pytest.approx(p, abs=2e-6)


@pytest.mark.parametrize(
    ("confidence", "df", "t"), [(0.95, 10, 2.228139), (0.99, 4, 4.604095), (0.9, 1e9, 1.644854)]
)
def test_t_quantile_inverts_the_p_value(confidence: float, df: float, t: float) -> None:
    assert t_quantile(confidence, df) == pytest.approx(t, abs=1e-5)


def sample(values: list[float]) -> Moments:
    moments = Moments()
    for value in values:
        moments.add(value)
    return moments


def test_welch_against_a_worked_example() -> None:
    # scipy.stats.ttest_ind(a, b, equal_var=False) says t = -2.45536, df = 24.99, p = 0.0213780.
    a = sample([27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4])
    b = sample([27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4])
    assert welch(a, b) == pytest.approx(0.0213780, abs=1e-6)
    assert welch(a, a) == pytest.approx(1.0)


def test_constant_samples_are_equal_or_certainly_different() -> None:
    assert welch(sample([1.0] * 5), sample([1.0] * 5)) == 1.0
    assert welch(sample([1.0] * 5), sample([0.0] * 5)) == 0.0
    assert welch(sample([1.0]), sample([0.0, 1.0])) == 1.0  # one sample says nothing


def test_intervals_cover_the_true_mean_as_often_as_claimed() -> None:
    rng = random.Random(7)
    covered = 0
    trials = 2000
    for _ in range(trials):
        interval = sample([rng.gauss(3.0, 2.0) for _ in range(8)]).interval(0.9)
        assert interval is not None
        covered += interval[0] <= 3.0 <= interval[1]
    assert 0.87 <= covered / trials <= 0.93  # 90% intervals: a t interval, not a too-narrow z one


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=2, max_size=50))
def test_moments_round_trip_and_never_go_negative(values: list[float]) -> None:
    moments = sample(values)
    assert moments.variance >= 0.0
    again = Moments.from_list(moments.to_list())
    assert again == moments
    interval = moments.interval(0.95)
    assert interval is not None and interval[0] <= (moments.mean or 0.0) <= interval[1]


def test_histogram_percentiles_interpolate_within_a_bucket() -> None:
    histogram = Histogram()
    for ms in [1, 2, 3, 4] + [60] * 6:  # 4 in (0, 5], 6 in (50, 100]
        histogram.add(ms)
    assert histogram.quantile(0.2) == pytest.approx(2.5)  # rank 2 of the 4 in the first bucket
    assert histogram.quantile(0.7) == pytest.approx(50 + 50 * 3 / 6)
    histogram.add(10**7)  # past the last bound: reported as that bound
    assert histogram.quantile(1.0) == BUCKETS_MS[-1]
    assert Histogram().quantile(0.5) is None
    assert Histogram.from_list(histogram.counts) == histogram


def arm(name: str, scores: list[float], *, requests: int = 0, errors: int = 0) -> Arm:
    out = Arm(name, requests=requests, errors=errors)
    for score in scores:
        out.quality.add(score)
    return out


def test_a_clearly_better_arm_wins_on_quality() -> None:
    rng = random.Random(1)
    good = arm("good", [rng.gauss(0.8, 0.1) for _ in range(50)])
    poor = arm("poor", [rng.gauss(0.6, 0.1) for _ in range(50)])
    verdict = decide([poor, good], "quality", min_samples=30, confidence=0.95)
    assert verdict.winner == "good" and verdict.p_value is not None and verdict.p_value < 1e-6


def test_no_winner_before_every_arm_has_its_samples() -> None:
    rng = random.Random(2)
    good = arm("good", [rng.gauss(0.9, 0.05) for _ in range(50)])
    poor = arm("poor", [rng.gauss(0.1, 0.05) for _ in range(10)])
    verdict = decide([good, poor], "quality", min_samples=30, confidence=0.95)
    assert verdict.winner is None and verdict.leader == "good" and "poor" in verdict.reason


def test_equal_arms_have_no_winner() -> None:
    rng = random.Random(3)
    verdict = decide(
        [
            arm("a", [rng.gauss(0.5, 0.2) for _ in range(200)]),
            arm("b", [rng.gauss(0.5, 0.2) for _ in range(200)]),
        ],
        "quality",
        min_samples=30,
        confidence=0.95,
    )
    assert verdict.winner is None and verdict.p_value is not None and verdict.p_value > 0.05


def test_error_rate_lower_wins() -> None:
    flaky = arm("flaky", [], requests=400, errors=40)
    steady = arm("steady", [], requests=400, errors=4)
    verdict = decide([flaky, steady], "errorRate", min_samples=100, confidence=0.95)
    assert verdict.winner == "steady"


def test_three_arms_need_the_best_to_beat_each_other_one() -> None:
    rng = random.Random(4)
    best = arm("best", [rng.gauss(0.70, 0.1) for _ in range(60)])
    close = arm("close", [rng.gauss(0.69, 0.1) for _ in range(60)])
    worst = arm("worst", [rng.gauss(0.30, 0.1) for _ in range(60)])
    verdict = decide([best, close, worst], "quality", min_samples=30, confidence=0.95)
    assert verdict.winner is None  # best does not beat close
    assert verdict.leader in {"best", "close"}

"""The statistics of an A/B experiment, pure: per-arm moments and latency histograms, confidence
intervals, Welch's t-test, and the verdict.

An arm keeps, for each metric, the count, sum and sum of squares of its samples (:class:`Moments`),
which add up across sidecars and batches and survive a restart as three numbers; latencies also go
into a fixed histogram (:data:`BUCKETS_MS`) for percentiles. Means are compared with Welch's unequal-
variance t-test (the Student t distribution through the regularised incomplete beta function, so
small samples get honest p-values); intervals use the same t distribution. With more than two arms
the best arm must beat each of the others at ``(1 - confidence) / (arms - 1)`` (Bonferroni).
``service.py`` feeds the arms from usage records and writes the result into ``LLMRoute.status``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "BUCKETS_MS",
    "LOWER_IS_BETTER",
    "Arm",
    "Histogram",
    "Moments",
    "Verdict",
    "decide",
    "t_quantile",
    "two_sided_p",
    "welch",
]

#: Upper bounds (milliseconds) of the latency buckets; one more bucket holds what is slower.
BUCKETS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
)  # fmt: skip
#: Metrics where the smaller mean wins; quality (the feedback score) is the one where larger wins.
LOWER_IS_BETTER = frozenset({"errorRate", "latency", "cost"})


@dataclass
class Moments:
    """Count, sum and sum of squares of a sample: enough for its mean, variance and interval."""

    n: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.squares += value * value

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n > 0 else None

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator); 0 below two samples."""
        if self.n < 2:
            return 0.0
        # Rounding can make the difference slightly negative for a constant sample.
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))

    def interval(self, confidence: float) -> tuple[float, float] | None:
        """The mean's two-sided confidence interval (Student t); None below two samples."""
        mean = self.mean
        if mean is None or self.n < 2:
            return None
        half = t_quantile(confidence, self.n - 1) * math.sqrt(self.variance / self.n)
        return mean - half, mean + half

    def to_list(self) -> list[float]:
        return [self.n, self.total, self.squares]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Moments:
        n, total, squares = (float(v) for v in values[:3])
        return cls(max(0.0, n), total, max(0.0, squares))


@dataclass
class Histogram:
    """Counts per bucket of :data:`BUCKETS_MS`, plus one for slower; percentiles by interpolation."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def add(self, milliseconds: float) -> None:
        for index, bound in enumerate(BUCKETS_MS):
            if milliseconds <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated linearly within its bucket; None when empty. What falls past
        the last bound is reported as that bound (a floor, as Prometheus does)."""
        total = sum(self.counts)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                if index == len(BUCKETS_MS):
                    return float(BUCKETS_MS[-1])
                lower = BUCKETS_MS[index - 1] if index else 0.0
                upper = BUCKETS_MS[index]
                return lower + (upper - lower) * max(0.0, rank - seen) / count
            seen += count
        return float(BUCKETS_MS[-1])

    @classmethod
    def from_list(cls, values: Sequence[int]) -> Histogram:
        counts = [max(0, int(v)) for v in values[: len(BUCKETS_MS) + 1]]
        return cls(counts + [0] * (len(BUCKETS_MS) + 1 - len(counts)))


@dataclass
class Arm:
    """One arm's counts, summed over every sidecar."""

    backend: str
    requests: int = 0
    errors: int = 0
    latency: Moments = field(default_factory=Moments)  # seconds, answered requests
    latency_ms: Histogram = field(default_factory=Histogram)
    ttft: Moments = field(default_factory=Moments)  # seconds, answered streams
    ttft_ms: Histogram = field(default_factory=Histogram)
    cost: Moments = field(default_factory=Moments)  # USD per request
    quality: Moments = field(default_factory=Moments)  # feedback scores

    def metric(self, name: str) -> Moments:
        if name == "quality":
            return self.quality
        if name == "latency":
            return self.latency
        if name == "cost":
            return self.cost
        # errorRate: a Bernoulli sample (1 per failed request), whose squares equal its sum.
        return Moments(float(self.requests), float(self.errors), float(self.errors))


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # the backend that wins, once significant
    leader: str | None  # the best arm so far (None without samples)
    p_value: float | None  # largest p-value of the leader against the others
    reason: str


def decide(arms: Sequence[Arm], metric: str, *, min_samples: int, confidence: float) -> Verdict:
    """Whether one arm is significantly better than every other on ``metric``."""
    samples = [(arm.backend, arm.metric(metric)) for arm in arms]
    measured = [(name, m) for name, m in samples if m.mean is not None]
    if len(samples) < 2:
        return Verdict(None, samples[0][0] if samples else None, None, "an experiment needs two arms")
    if not measured:
        return Verdict(None, None, None, "no samples yet")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    leader, best = max(measured, key=lambda item: sign * (item[1].mean or 0.0))
    short = [name for name, m in samples if m.n < min_samples]
    if short:
        return Verdict(None, leader, None, f"waiting for {min_samples} samples in arm {', '.join(short)}")
    alpha = (1.0 - confidence) / (len(samples) - 1)
    p_values = [welch(best, other) for name, other in samples if name != leader]
    p_value = max(p_values)
    if p_value < alpha:
        return Verdict(leader, leader, p_value, f"{leader} is better than every other arm")
    return Verdict(
        None, leader, p_value, f"no significant difference yet (p={p_value:.3g}, needs < {alpha:.3g})"
    )


def welch(a: Moments, b: Moments) -> float:
    """Two-sided p-value of Welch's t-test that the two means are equal."""
    mean_a, mean_b = a.mean, b.mean
    if mean_a is None or mean_b is None or a.n < 2 or b.n < 2:
        return 1.0
    share_a, share_b = a.variance / a.n, b.variance / b.n
    spread = share_a + share_b
    if spread == 0.0:
        return 1.0 if mean_a == mean_b else 0.0  # two constant samples: equal or certainly different
    t = (mean_a - mean_b) / math.sqrt(spread)
    df = spread * spread / (share_a * share_a / (a.n - 1) + share_b * share_b / (b.n - 1))
    return two_sided_p(t, df)


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    if df > 1e7:
        return math.erfc(abs(t) / math.sqrt(2.0))
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(confidence: float, df: float) -> float:
    """The t with P(|T| <= t) = ``confidence`` (bisection on :func:`two_sided_p`)."""
    target = 1.0 - confidence
    low, high = 0.0, 1.0
    while two_sided_p(high, df) > target and high < 1e6:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2.0
        if two_sided_p(middle, df) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(a, b, x) / a
    return 1.0 - front * _continued_fraction(b, a, 1.0 - x) / b


def _continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete beta's continued fraction."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h

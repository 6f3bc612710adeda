"""A decaying latency estimate of one backend, for the planner's ``latency`` strategy.

:class:`LatencyEstimate` is an exponentially weighted mean whose weights decay with *time*, not with
the number of samples: every sample enters with the same weight, which halves every ``half_life``
seconds. So the estimate means "typical latency over the last few half-lives" at any request rate:
at 1,000 req/s it averages thousands of samples, at one request a minute the newest one dominates. It also keeps the last
``recent`` samples for a percentile (what a hedging delay would be based on).

``book.py`` keeps two per backend: time to first token for streams, total time otherwise (the two
are not comparable). Only answers feed them — plus timeouts, whose elapsed time is a lower bound of
the real latency; a backend that fails fast must not look fast.
"""

from __future__ import annotations

import math
import time
from collections import deque

from .window import Clock

__all__ = ["LatencyEstimate"]


class LatencyEstimate:
    """The time-decayed mean of latency samples, plus a window of recent samples for percentiles."""

    __slots__ = ("_at", "_clock", "_decay", "_recent", "_sum", "_weight", "stale_after")

    def __init__(
        self,
        *,
        half_life: float = 5.0,
        recent: int = 64,
        stale_after: float = 300.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._decay = math.log(2) / half_life
        self._clock = clock
        self._sum = 0.0  # decayed sum of samples
        self._weight = 0.0  # decayed count of samples: the mean is their ratio
        self._at = 0.0
        self._recent: deque[float] = deque(maxlen=recent)
        self.stale_after = stale_after

    def observe(self, seconds: float) -> None:
        now = self._clock()
        # Every sample enters with weight 1, and all weights decay with time; dividing the decayed
        # sum by the decayed count gives a mean without a bias towards the first samples.
        keep = math.exp(-self._decay * max(0.0, now - self._at))
        self._sum = keep * self._sum + seconds
        self._weight = keep * self._weight + 1.0
        self._at = now
        self._recent.append(seconds)

    def value(self) -> float | None:
        """The estimate in seconds; None before any sample or once the last one is stale.

        Stale means older than ``stale_after``: the planner should treat the backend as unknown
        (and worth a try) rather than trust an old number forever.
        """
        if self._weight == 0.0 or self._clock() - self._at > self.stale_after:
            return None
        return self._sum / self._weight

    def quantile(self, q: float, *, min_samples: int = 20) -> float | None:
        """The ``q`` quantile (0..1) of the recent samples, or None with fewer than ``min_samples``."""
        if len(self._recent) < min_samples or self.value() is None:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def samples(self) -> int:
        return len(self._recent)

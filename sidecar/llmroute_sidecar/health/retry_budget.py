"""The retry budget of one route: retries may add at most ``fraction`` of load on top of requests.

Over a sliding window (10 s by default) the budget counts requests (one per app request, whatever
it costs upstream) and retries (another attempt on the *same* backend after a failure; moving to
the next backend is a fallback, bounded by the candidate list, and not budgeted). A retry is allowed
while ``retries < max(min_retries, fraction * requests)`` in the window:

- ``fraction`` is ``resilience.retries.budgetPercent`` / 100 (20% by default, Envoy's default);
- ``min_retries`` (10 per window, i.e. one a second) lets a quiet route retry its rare failures —
  with two requests a minute, 20% would otherwise mean no retry at all.

When the budget is spent the attempt loop (``attempts.py``) falls through to the next backend, or
stops if none is left, so a struggling provider sees at most ~20% extra load from this sidecar
instead of ``attempts``-fold. Pure logic with an injectable clock; ``book.py`` keeps one per route.
"""

from __future__ import annotations

import time

from .window import Clock, SlidingCounts

__all__ = ["RetryBudget"]

_REQUESTS, _RETRIES = 0, 1


class RetryBudget:
    """Retries allowed as a share of requests over a sliding window. ``fraction=None``: unlimited."""

    __slots__ = ("_counts", "fraction", "min_retries")

    def __init__(
        self,
        fraction: float | None,
        *,
        window: float = 10.0,
        min_retries: int = 10,
        clock: Clock = time.monotonic,
    ) -> None:
        self.fraction = fraction
        self.min_retries = min_retries
        self._counts = SlidingCounts(window, clock=clock)

    def on_request(self) -> None:
        """One app request started (its first attempt)."""
        self._counts.add(_REQUESTS)

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it; False means "fall back instead"."""
        if self.fraction is not None:
            requests, retries = self._counts.totals()
            if retries >= max(self.min_retries, self.fraction * requests):
                return False
        self._counts.add(_RETRIES)
        return True

    def refund(self) -> None:
        """Give back a retry spent with :meth:`try_retry` that was never sent. It lands in the current
        slice; should the spend's slice leave the window first, the window briefly counts one retry
        fewer than were sent."""
        self._counts.add(_RETRIES, -1)

    def usage(self) -> tuple[int, int]:
        """(requests, retries) in the current window."""
        requests, retries = self._counts.totals()
        return requests, retries

"""Event counts over a sliding time window, in fixed slices: the memory of the breaker's failure
rate (``breaker.py``) and of the retry budget (``retry_budget.py``).

The window slides one slice at a time (a tenth of it by default), so memory and work stay constant
whatever the request rate: a few integers per slice instead of one entry per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "SlidingCounts"]

#: A monotonic clock in seconds; tests pass a fake one.
Clock = Callable[[], float]


class SlidingCounts:
    """Counts of ``kinds`` kinds of events seen in the last ``window`` seconds."""

    __slots__ = ("_clock", "_counts", "_epochs", "_kinds", "_slices", "_width", "window")

    def __init__(
        self, window: float, *, kinds: int = 2, slices: int = 10, clock: Clock = time.monotonic
    ) -> None:
        if window <= 0 or slices <= 0:
            raise ValueError("a sliding window needs a positive length and slice count")
        self.window = window
        self._width = window / slices
        self._slices = slices
        self._kinds = kinds
        self._clock = clock
        self._epochs = [-1] * slices
        self._counts = [[0] * kinds for _ in range(slices)]

    def add(self, kind: int, amount: int = 1) -> None:
        epoch = int(self._clock() / self._width)
        index = epoch % self._slices
        if self._epochs[index] != epoch:
            self._epochs[index] = epoch
            self._counts[index] = [0] * self._kinds
        self._counts[index][kind] += amount

    def totals(self) -> list[int]:
        """The count of each kind over the window (slices older than the window are ignored)."""
        epoch = int(self._clock() / self._width)
        sums = [0] * self._kinds
        for slice_epoch, counts in zip(self._epochs, self._counts, strict=True):
            if 0 <= epoch - slice_epoch < self._slices:
                for kind, count in enumerate(counts):
                    sums[kind] += count
        return sums

    def clear(self) -> None:
        self._epochs = [-1] * self._slices
        self._counts = [[0] * self._kinds for _ in range(self._slices)]

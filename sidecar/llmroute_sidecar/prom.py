"""prometheus_client's Counter, Gauge, Histogram and Summary with fast paths for the request path.

``labels()`` validates its arguments, converts every value with ``str()`` and takes a lock on every
call, about 1.5 µs; the sidecar calls it about a dozen times per request on label sets that exist
after the first request. These subclasses first look the values up in the metric's own children
dict, which is keyed by the tuple of label strings, and fall back to prometheus_client's
``labels()`` for a new set, keyword arguments or non-string values. Reading prometheus_client's dict
(not a cache of our own) means ``remove()`` and ``clear()`` need no bookkeeping here.

``inc()``, ``dec()`` and ``observe()`` keep prometheus_client's checks and its locked value objects
but do them in one frame instead of three (``_raise_if_not_observable`` calls ``_is_observable``
calls the value), and a histogram finds its bucket by bisection: the sidecar makes about sixteen
such calls per request. Exemplars and the gauge's multiprocess modes are not used by the sidecar;
they go to prometheus_client's own methods. ``tests/unit/test_prom_ids.py`` checks the exposition
equals prometheus_client's own for the same calls, so a release that changes these internals fails
there, not in production.
Every metrics module of the sidecar (``metrics.py``, ``policy_metrics.py``, ``routing/metrics.py``,
``load/metrics.py``, ``health/report.py``) builds its metrics from these.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Self, cast

import prometheus_client
import prometheus_client.metrics

__all__ = ["Counter", "Gauge", "Histogram", "Summary"]


class _FastLabels(prometheus_client.metrics.MetricWrapperBase):
    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        if not labelkwargs:
            child = self._metrics.get(labelvalues)
            if child is not None:
                return cast(Self, child)
        return super().labels(*labelvalues, **labelkwargs)

    def _unobservable(self) -> ValueError:
        return ValueError(f"{self._type} metric is missing label values")  # prometheus_client's words


class Counter(_FastLabels, prometheus_client.Counter):
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if exemplar is not None or amount < 0:
            super().inc(amount, exemplar)  # its validation and error messages
            return
        if self._labelnames and not self._labelvalues:
            raise self._unobservable()
        self._value.inc(amount)


class Gauge(_FastLabels, prometheus_client.Gauge):
    def inc(self, amount: float = 1) -> None:
        if self._is_most_recent or (self._labelnames and not self._labelvalues):
            super().inc(amount)
            return
        self._value.inc(amount)

    def dec(self, amount: float = 1) -> None:
        if self._is_most_recent or (self._labelnames and not self._labelvalues):
            super().dec(amount)
            return
        self._value.inc(-amount)


class Histogram(_FastLabels, prometheus_client.Histogram):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if exemplar is not None:
            super().observe(amount, exemplar)
            return
        if self._labelnames and not self._labelvalues:
            raise self._unobservable()
        self._sum.inc(amount)
        if amount == amount:  # NaN is in no bucket (prometheus_client's "<=" is never true for it)
            self._buckets[bisect_left(self._upper_bounds, amount)].inc(1)  # first bound >= amount


class Summary(_FastLabels, prometheus_client.Summary):
    def observe(self, amount: float) -> None:
        if self._labelnames and not self._labelvalues:
            raise self._unobservable()
        self._count.inc(1)
        self._sum.inc(amount)

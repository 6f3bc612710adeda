"""prometheus_client's Counter, Gauge, Histogram and Summary with a fast path for an existing label set.

``labels()`` validates its arguments, converts every value with ``str()`` and takes a lock on every
call, about 1.5 µs; the sidecar calls it about a dozen times per request on label sets that exist
after the first request. These subclasses first look the values up in the metric's own children
dict, which is keyed by the tuple of label strings, and fall back to prometheus_client's
``labels()`` for a new set, keyword arguments or non-string values. Reading prometheus_client's dict
(not a cache of our own) means ``remove()`` and ``clear()`` need no bookkeeping here.
Every metrics module of the sidecar (``metrics.py``, ``policy_metrics.py``, ``routing/metrics.py``,
``load/metrics.py``, ``health/report.py``) builds its metrics from these.
"""

from __future__ import annotations

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


class Counter(_FastLabels, prometheus_client.Counter):
    pass


class Gauge(_FastLabels, prometheus_client.Gauge):
    pass


class Histogram(_FastLabels, prometheus_client.Histogram):
    pass


class Summary(_FastLabels, prometheus_client.Summary):
    pass

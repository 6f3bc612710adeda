"""Backend health and failover decisions of the sidecar: circuit breakers, the outlier-ejection
cap, latency estimates and retry budgets.

Pure logic with an injectable clock, no I/O: ``book.py`` holds the state per (route, backend),
``admission.py`` is the attempt loop's view of it (``attempts.py``), and the planner (``routing/``)
asks ``HealthBook.available`` and ``HealthBook.latency``. ``report.py`` turns events into metrics.
"""

from .admission import Refusal, RouteHealth, Ticket
from .book import BackendHealth, HealthBook
from .breaker import Breaker, BreakerConfig, Permit, State, counts_against_health
from .latency import LatencyEstimate
from .outlier import EjectionGroups, ejection_cap
from .report import HealthListener, MetricsListener
from .retry_budget import RetryBudget
from .window import Clock, SlidingCounts

__all__ = [
    "BackendHealth",
    "Breaker",
    "BreakerConfig",
    "Clock",
    "EjectionGroups",
    "HealthBook",
    "HealthListener",
    "LatencyEstimate",
    "MetricsListener",
    "Permit",
    "Refusal",
    "RetryBudget",
    "RouteHealth",
    "SlidingCounts",
    "State",
    "Ticket",
    "counts_against_health",
    "ejection_cap",
]

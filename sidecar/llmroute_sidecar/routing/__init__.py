"""Routing decisions: which backends may answer a request, and in which order. Pure logic.

The router service (``service.py``) calls :func:`plan` once per request and hands the decision's
candidates and body to the attempt loop (``attempts.py``). Modules, one concern each: ``tokens``
(estimates), ``complexity`` (explainable prompt score), ``capabilities``, ``rules``, ``regions``
(residency), ``context`` (window fit and truncation), ``strategies`` (the five orderings),
``placement`` (health, split arms and locality over the strategy's order), ``probes`` (latency
probes of unmeasured backends), ``decision`` (the result and its trace), ``planner`` (the steps in
order) and ``metrics`` (Prometheus series of decisions, which the service records).
"""

from .complexity import Complexity
from .decision import DECISION_HEADER, TRUNCATED_HEADER, Decision, Excluded
from .planner import Availability, RequestHints, RoutingRefused, plan
from .probes import LatencyProbes
from .strategies import LatencyEstimate
from .tokens import Estimate

__all__ = [
    "DECISION_HEADER",
    "TRUNCATED_HEADER",
    "Availability",
    "Complexity",
    "Decision",
    "Estimate",
    "Excluded",
    "LatencyEstimate",
    "LatencyProbes",
    "RequestHints",
    "RoutingRefused",
    "plan",
]

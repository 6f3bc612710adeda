"""Abuse protection (``spec.abuse``): block users or tenants whose traffic spikes against their own
baseline, or who keep hitting policy refusals, across the workload's sidecars.

``detector.py`` (pure: the verdict), ``counters.py`` (Redis, or this process), ``guard.py`` (the
request-path glue). docs/abuse.md tells users how it behaves.
"""

from .counters import AbuseCounters
from .guard import ABUSE_CODE, AbuseGuard

__all__ = ["ABUSE_CODE", "AbuseCounters", "AbuseGuard"]

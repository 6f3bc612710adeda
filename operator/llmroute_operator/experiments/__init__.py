"""A/B experiments on a route's weighted split: per-arm statistics from the sidecars' usage records,
aggregated by the leading operator into ``LLMRoute.status.experiment`` with a verdict.

Modules: ``stats`` (moments, histograms, Welch's t-test, the verdict; pure) and ``service`` (counting
records, restart-safe status writes, the Event when a winner is called).
"""

from __future__ import annotations

from .service import ExperimentService

__all__ = ["ExperimentService"]

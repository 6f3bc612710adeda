"""The seams between the operator's parts, as protocols and values.

``app.py`` composes: the :class:`~llmroute_operator.index.ClusterIndex` (fed by the kopf handlers), a
config hub that pushes compiled configs to connected sidecars (``configserver/``), a budget service
that aggregates usage and grants allowances (``budgets/``), and the kopf handlers and webhooks
(``handlers/``, ``webhooks/``). The handlers write ``LLMRoute.status.sidecars`` and
``LLMBudget.status`` from what the hub and the budget service report through these protocols, so each
part can be built and tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["BudgetReport", "BudgetStatusSource", "RouteSync", "RouteSyncSource"]


@dataclass(frozen=True)
class RouteSync:
    """How the sidecars a route applies to are doing with its latest config."""

    matched: int = 0  # connected sidecars whose pods the route selects
    synced: int = 0  # of those, sidecars that ACKed the latest config that contains this route
    rejected: int = 0  # of those, sidecars that NACKed it
    version: str = ""  # the latest config version that contains this route (any sidecar)
    errors: tuple[str, ...] = ()  # NACK messages, deduplicated, for the Programmed condition


class RouteSyncSource(Protocol):
    """Implemented by the config hub."""

    def route_sync(self, namespace: str, name: str) -> RouteSync: ...


@dataclass(frozen=True)
class BudgetReport:
    """What ``LLMBudget.status`` should say now (money as decimal strings)."""

    spent: str
    remaining: str
    forecast: str
    state: str  # Normal | SoftLimited | Exhausted
    period_start: str  # RFC 3339
    reset_at: str  # RFC 3339
    alerted_percent: int = 0
    new_alerts: tuple[int, ...] = ()  # thresholds crossed since the last report (emit Events)
    extra: dict[str, Any] = field(default_factory=dict)


class BudgetStatusSource(Protocol):
    """Implemented by the budget service."""

    def budget_report(self, namespace: str, name: str) -> BudgetReport | None: ...

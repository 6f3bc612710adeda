"""Budgets, cluster-wide: usage aggregation per scope and period, budget state, allowance leases.

Sidecars report usage through the config server's UsageReporting stream and lease allowances through
its Allowances service; both land in :class:`BudgetService`. The kopf handlers feed ``LLMBudget``
objects (with their stored ``status``) into the :class:`~llmroute_operator.index.ClusterIndex`; the
service seeds its ledger from that status (so a restart never loses or resets spend), sets each budget's
``state`` in the index (so the compiler pushes SoftLimited/Exhausted to sidecars), and reports what the
status should say through :meth:`BudgetService.budget_report`.

Modules: ``periods`` (daily/weekly/monthly windows in a time zone), ``ledger`` (spend per budget and
period, de-duplication, forecast, state, alerts), ``leases`` (allowance grants), ``service`` (the part
with a clock, the index and persistence).

How ``app.py`` composes it (keyword-only)::

    budgets = BudgetService(index=index, settings=settings, persist=write_budget_status)
    await budgets.start()
    budgets.mark_ready()                  # after the handlers' initial listing fed the index
    report = budgets.budget_report(namespace, name)   # contracts.BudgetReport | None
    budgets.on_report(listener)           # listener(namespace, name) when the report changed
    await budgets.stop()

``persist`` is ``async (namespace, name, report: BudgetReport) -> None``: it writes the report into
``LLMBudget.status`` (a merge patch of spent, remaining, forecast, state, periodStart, resetAt,
alertedPercent) and returns once the API server accepted it. Usage batches are acknowledged to the
sidecars only after the spend they carry was persisted, so a crash never loses acknowledged spend.
Without ``persist`` (unit tests) usage is acknowledged once counted in memory.
``clock`` (default: ``datetime.now(UTC)``) is injectable for tests. Leases are kept in memory: for
``lease_ttl + lease_grace`` (25 s) after start, new leases are refused with UNAVAILABLE, because leases
a previous operator granted may still be live in sidecars (renewals of those get NOT_FOUND).
"""

from __future__ import annotations

from .service import BudgetObserver, BudgetService, UsageConsumer

__all__ = ["BudgetObserver", "BudgetService", "UsageConsumer"]

"""LLMBudget: from the watch into the index, validation, status and alert Events.

Every parseable budget is in the index, valid or not: spend must be counted either way. Its
``Accepted`` condition reports the downgrade problems ``validation.validate_budget`` finds against
the routes of its namespace (re-checked whenever those routes change); ``Ready`` and the spend fields
come from the budget service (``budgets/``), which persists them through :func:`make_persist`. The
status writer (``handlers/status.py``) writes the conditions and ``observedGeneration``; the
persist callback writes the spend (merge patches of disjoint fields, so they never undo each other).
A new alert threshold posts one Event: Warning from 100% on, Normal below.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from llmroute_proto.api.budget import LLMBudget

from ..conditions import Transition, budget_status, report_fields
from ..contracts import BudgetReport, BudgetStatusSource
from ..index import ClusterIndex
from ..kube import KubeClient
from ..metrics import OperatorMetrics
from ..validation import Problem, parse_budget, validate_budget
from .routes import RouteBook
from .status import EventSpec, Observed, budget_events
from .sync import InitialSync
from .watch import register_index_watch

__all__ = ["BudgetBook", "BudgetEvents", "BudgetStatus", "make_persist", "register_budget_handlers"]

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "llmroute.io", "v1alpha1", "llmbudgets"
Key = tuple[str, str]


@dataclass
class BudgetEntry:
    namespace: str
    name: str
    uid: str = ""
    generation: int | None = None
    status: dict[str, Any] = field(default_factory=dict)
    budget: LLMBudget | None = None
    problems: list[Problem] = field(default_factory=list)
    parse_problems: list[Problem] = field(default_factory=list)

    def involved(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LLMBudget",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


class BudgetBook:
    """Every observed LLMBudget and its problems; parseable ones are mirrored into the index."""

    def __init__(self, *, index: ClusterIndex, routes: RouteBook) -> None:
        self._index = index
        self._routes = routes
        self._entries: dict[Key, BudgetEntry] = {}
        self._put: dict[Key, LLMBudget] = {}
        self._listeners: list[Callable[[str, str], None]] = []
        routes.on_namespace(self.routes_changed)

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        self._listeners.append(listener)

    def observe(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        generation = meta.get("generation")
        budget, parse_problems = parse_budget(obj)
        entry = BudgetEntry(
            namespace=key[0],
            name=key[1],
            uid=str(meta.get("uid") or ""),
            generation=generation if isinstance(generation, int) else None,
            status=dict(obj.get("status") or {}),
            budget=budget,
            parse_problems=parse_problems,
        )
        before = self._entries.get(key)
        self._entries[key] = entry
        if budget is not None and self._put.get(key) != budget:
            self._put[key] = budget
            self._index.put_budget(key[0], key[1], budget)  # status included: the service seeds from it
        elif budget is None and self._put.pop(key, None) is not None:
            self._index.put_budget(key[0], key[1], None)
        if before is None or before.generation != entry.generation or before.uid != entry.uid:
            self._check(entry)
        else:
            entry.problems = before.problems

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._entries.pop(key, None)
        if self._put.pop(key, None) is not None:
            self._index.put_budget(namespace, name, None)

    def routes_changed(self, namespace: str) -> None:
        for entry in [e for e in self._entries.values() if e.namespace == namespace]:
            self._check(entry)

    def _check(self, entry: BudgetEntry) -> None:
        if entry.budget is None:
            problems = list(entry.parse_problems)
        else:
            problems = validate_budget(entry.budget, routes=self._routes.routes(entry.namespace))
        entry.problems = problems
        for listener in self._listeners:  # the status writer compares before it writes
            listener(entry.namespace, entry.name)

    def entry(self, namespace: str, name: str) -> BudgetEntry | None:
        return self._entries.get((namespace, name))

    def keys(self) -> list[Key]:
        return list(self._entries)

    def desired_status(
        self,
        namespace: str,
        name: str,
        *,
        reports: BudgetStatusSource | None,
        now: dt.datetime,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Conditions and observedGeneration (the spend fields are the persist callback's)."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return None
        report = reports.budget_report(namespace, name) if reports is not None else None
        status = budget_status(
            generation=entry.generation,
            problems=entry.problems,
            report=report,
            existing=previous if previous is not None else entry.status,
            now=now,
        )
        return {k: v for k, v in status.items() if k in ("conditions", "observedGeneration")}


class BudgetEvents:
    """The budget service's observer: metrics, plus one Event per new alert threshold.

    The service reports each threshold once, after the status that records it was persisted.
    """

    def __init__(
        self,
        *,
        kube: KubeClient,
        book: BudgetBook,
        metrics: OperatorMetrics,
        reports: Callable[[], BudgetStatusSource | None] = lambda: None,
    ) -> None:
        self._kube = kube
        self._book = book
        self._metrics = metrics
        self._reports = reports
        self._tasks: set[asyncio.Task[None]] = set()

    def budget_spent(self, namespace: str, name: str, usd: float) -> None:
        self._metrics.budget_spent(namespace, name, usd)

    def budget_state(self, namespace: str, name: str, state: str) -> None:
        self._metrics.budget_state(namespace, name, state)

    def budget_limits(
        self, namespace: str, name: str, *, hard: float, soft: float | None, forecast: float
    ) -> None:
        self._metrics.budget_limits(namespace, name, hard=hard, soft=soft, forecast=forecast)

    def budgets_forgotten(self) -> None:
        self._metrics.budgets_forgotten()

    def budget_alert(self, namespace: str, name: str, percent: int) -> None:
        self._metrics.budget_alert(namespace, name, percent)
        entry = self._book.entry(namespace, name)
        if entry is None:
            return
        source = self._reports()
        report = source.budget_report(namespace, name) if source is not None else None
        spent = f": {report.spent} USD spent, {report.remaining} USD remaining" if report else ""
        type_ = "Warning" if percent >= 100 else "Normal"
        message = f"spend reached {percent}% of the hard limit{spent}"
        task = asyncio.get_running_loop().create_task(
            self._kube.create_event(entry.involved(), type_=type_, reason="BudgetAlert", message=message)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


Persist = Callable[[str, str, BudgetReport], Awaitable[None]]


def make_persist(*, kube: KubeClient, is_leader: Callable[[], bool], metrics: OperatorMetrics) -> Persist:
    """The budget service's ``persist``: a merge patch of the spend fields into ``LLMBudget.status``.

    Only the leader writes status; on any other replica it raises (its budget service does not count
    either: those replicas forward usage to the leader).
    """

    async def persist(namespace: str, name: str, report: BudgetReport) -> None:
        if not is_leader():
            raise RuntimeError("not the leader: budget status is written by the leading replica")
        started = time.perf_counter()
        try:
            await kube.patch_status(PLURAL, namespace, name, report_fields(report))
        except Exception:
            metrics.status_written("LLMBudget", "error", time.perf_counter() - started)
            raise
        metrics.status_written("LLMBudget", "ok", time.perf_counter() - started)

    return persist


def register_budget_handlers(
    registry: kopf.OperatorRegistry,
    *,
    book: BudgetBook,
    initial: InitialSync,
    metrics: OperatorMetrics,
) -> None:
    """Register the LLMBudget watch handler into ``registry``."""
    register_index_watch(
        registry, plural="llmbudgets", kind="LLMBudget", book=book, initial=initial, metrics=metrics
    )


class BudgetStatus:
    """The status writer's view of budgets: conditions and observedGeneration."""

    def __init__(self, *, book: BudgetBook, reports: Callable[[], BudgetStatusSource | None]) -> None:
        self._book = book
        self._reports = reports

    def keys(self) -> list[Key]:
        return self._book.keys()

    def observed(self, namespace: str, name: str) -> Observed | None:
        entry = self._book.entry(namespace, name)
        return Observed(entry.uid, entry.status, entry.involved()) if entry is not None else None

    def desired(self, namespace: str, name: str, previous: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._book.desired_status(
            namespace, name, reports=self._reports(), now=dt.datetime.now(dt.UTC), previous=previous
        )

    def events(self, changes: Sequence[Transition]) -> list[EventSpec]:
        return budget_events(changes)

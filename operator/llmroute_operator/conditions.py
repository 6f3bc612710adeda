"""Status conditions and the status documents of LLMRoute and LLMBudget. Pure code.

Kubernetes API conventions: a condition has ``type``, ``status`` (True/False/Unknown), a CamelCase
``reason``, a ``message``, ``observedGeneration`` and ``lastTransitionTime``, which changes only when
``status`` flips (a new reason or message alone keeps it). The status writers in ``handlers/`` compute
the desired status here from what validation (``validation.py``) and the config hub
(:class:`~llmroute_operator.contracts.RouteSync`) say, compare it with the stored one, and patch only
when they differ; :func:`transitions` tells them which Events to post.

``Programmed`` is True when every sidecar the route applies to has ACKed the latest config that contains
it. With no sidecar connected it is True as well (reason ``NoSidecars``): the route is compiled and any
sidecar that connects gets it at once; the ``Synced`` column shows ``0/0``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmroute_proto.api.route import LLMRoute

from .contracts import BudgetReport, RouteSync
from .validation import Problem, summarize

__all__ = [
    "ACCEPTED",
    "PROGRAMMED",
    "READY",
    "Desired",
    "Transition",
    "budget_status",
    "merge_conditions",
    "report_fields",
    "rfc3339",
    "route_status",
    "transitions",
]

ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
READY = "Ready"


@dataclass(frozen=True)
class Desired:
    """A condition as the operator wants it now (times are filled in by :func:`merge_conditions`)."""

    type: str
    status: str  # True | False | Unknown
    reason: str
    message: str


@dataclass(frozen=True)
class Transition:
    """A condition whose status flipped (or appeared): the writers post an Event for each."""

    type: str
    old: str | None
    new: str
    reason: str
    message: str


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    desired: Sequence[Desired],
    *,
    generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The new ``conditions`` list: ``desired`` ones replaced, others kept, in a stable order."""
    old = {str(c.get("type")): c for c in existing or []}
    out: list[dict[str, Any]] = []
    for want in desired:
        before = old.pop(want.type, None)
        flipped = before is None or before.get("status") != want.status
        stamp = rfc3339(now) if flipped or not before or not before.get("lastTransitionTime") else None
        condition: dict[str, Any] = {
            "type": want.type,
            "status": want.status,
            "reason": want.reason,
            "message": want.message[:32768],
            "lastTransitionTime": stamp or str(before.get("lastTransitionTime") if before else ""),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        out.append(condition)
    out += [dict(c) for c in old.values()]  # conditions of other writers stay as they are
    return out


def transitions(
    existing: Sequence[Mapping[str, Any]] | None, merged: Sequence[Mapping[str, Any]]
) -> list[Transition]:
    old = {str(c.get("type")): str(c.get("status")) for c in existing or []}
    found = []
    for c in merged:
        kind, status = str(c.get("type")), str(c.get("status"))
        if old.get(kind) != status:
            found.append(Transition(kind, old.get(kind), status, str(c.get("reason")), str(c.get("message"))))
    return found


def _programmed(accepted: bool, sync: RouteSync | None) -> Desired:
    if not accepted:
        return Desired(PROGRAMMED, "False", "Invalid", "the route is not Accepted, so no sidecar gets it")
    if sync is None:
        return Desired(PROGRAMMED, "Unknown", "Pending", "waiting for the config server")
    version = f" {sync.version}" if sync.version else ""
    if sync.rejected:
        errors = "; ".join(sync.errors) or "no message"
        return Desired(
            PROGRAMMED,
            "False",
            "Rejected",
            f"{sync.rejected}/{sync.matched} sidecars rejected config{version}: {errors}",
        )
    if sync.matched == 0:
        return Desired(
            PROGRAMMED, "True", "NoSidecars", "compiled; no connected sidecar selects this route yet"
        )
    if sync.synced < sync.matched:
        return Desired(
            PROGRAMMED,
            "False",
            "SidecarsSyncing",
            f"{sync.synced}/{sync.matched} sidecars run config{version}",
        )
    return Desired(
        PROGRAMMED, "True", "Programmed", f"{sync.synced}/{sync.matched} sidecars run config{version}"
    )


def route_status(
    *,
    route: LLMRoute | None,
    generation: int | None,
    problems: Sequence[Problem],
    sync: RouteSync | None,
    existing: Mapping[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``status`` an LLMRoute should have (``route=None``: its spec does not even parse)."""
    existing = existing or {}
    accepted = route is not None and not problems
    if accepted:
        accepted_condition = Desired(ACCEPTED, "True", "Accepted", "the spec is valid and its Secrets exist")
    else:
        reason, message = summarize(problems)
        accepted_condition = Desired(ACCEPTED, "False", reason or "InvalidSpec", message or "invalid spec")
    conditions = merge_conditions(
        existing.get("conditions"),
        [accepted_condition, _programmed(accepted, sync)],
        generation=generation,
        now=now,
    )
    status: dict[str, Any] = {"conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    counted = sync if accepted and sync is not None else RouteSync()
    status["sidecars"] = {
        "matched": counted.matched,
        "synced": counted.synced,
        "rejected": counted.rejected,
        "summary": f"{counted.synced}/{counted.matched}",
    }
    if accepted and sync is not None and sync.version:
        status["configVersion"] = sync.version
    elif existing.get("configVersion"):
        status["configVersion"] = existing["configVersion"]
    if route is not None:
        status["models"] = ",".join(m.name for m in route.spec.models)[:1024]
        status["backends"] = ",".join(b.name for b in route.spec.backends)[:1024]
    return status


def budget_status(
    *,
    generation: int | None,
    problems: Sequence[Problem],
    report: BudgetReport | None,
    existing: Mapping[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``status`` an LLMBudget should have: Accepted/Ready, and the spend fields from ``report``."""
    existing = existing or {}
    if problems:
        reason, message = summarize(problems)
        accepted = Desired(ACCEPTED, "False", reason, message)
    else:
        accepted = Desired(ACCEPTED, "True", "Accepted", "the spec is valid")
    if report is None:
        ready = Desired(READY, "Unknown", "Pending", "waiting for the budget service")
    else:
        ready = Desired(
            READY, "True", report.state, f"spent {report.spent} USD, {report.remaining} remaining"
        )
    status: dict[str, Any] = {
        "conditions": merge_conditions(
            existing.get("conditions"), [accepted, ready], generation=generation, now=now
        )
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if report is not None:
        status.update(report_fields(report))
    return status


def report_fields(report: BudgetReport) -> dict[str, Any]:
    """The spend part of ``LLMBudget.status`` (what the budget service persists)."""
    return {
        "spent": report.spent,
        "remaining": report.remaining,
        "forecast": report.forecast,
        "state": report.state,
        "periodStart": report.period_start,
        "resetAt": report.reset_at,
        "alertedPercent": report.alerted_percent,
        "outstandingAllowance": report.extra.get("outstandingAllowance", "0"),
        "countedUsage": report.extra.get("countedUsage", []),
    }

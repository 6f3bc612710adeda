"""Status computation (``conditions.py``), the status writer's write-only-on-change behaviour with a
recording stand-in for the API (leader election is in ``test_operator_leadership.py``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from llmroute_operator import conditions as c
from llmroute_operator.contracts import BudgetReport, RouteSync
from llmroute_operator.handlers.status import EventSpec, Observed, StatusWriter, route_events
from llmroute_operator.metrics import OperatorMetrics
from llmroute_operator.validation import Problem, parse_route

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)

ROUTE, _ = parse_route(
    {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "chat", "namespace": "ns", "generation": 2},
        "spec": {
            "models": [{"name": "chat", "backends": ["a"]}, {"name": "embed", "backends": ["b"]}],
            "backends": [
                {"name": "a", "provider": "openai-compatible", "model": "m", "endpoint": "http://x"},
                {"name": "b", "provider": "openai-compatible", "model": "e", "endpoint": "http://x"},
            ],
        },
    }
)


def _conditions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in status["conditions"]}


def test_accepted_and_programmed_with_all_sidecars_synced() -> None:
    sync = RouteSync(matched=3, synced=3, version="sha256:abc")
    status = c.route_status(route=ROUTE, generation=2, problems=[], sync=sync, existing=None, now=T0)
    conds = _conditions(status)
    assert conds["Accepted"]["status"] == "True" and conds["Accepted"]["observedGeneration"] == 2
    assert conds["Programmed"] == {
        "type": "Programmed",
        "status": "True",
        "reason": "Programmed",
        "message": "3/3 sidecars run config sha256:abc",
        "lastTransitionTime": "2026-01-01T12:00:00Z",
        "observedGeneration": 2,
    }
    assert status["sidecars"] == {"matched": 3, "synced": 3, "rejected": 0, "summary": "3/3"}
    assert status["configVersion"] == "sha256:abc"
    assert status["models"] == "chat,embed" and status["backends"] == "a,b"
    assert status["observedGeneration"] == 2


def test_last_transition_time_only_moves_when_status_flips() -> None:
    first = c.route_status(
        route=ROUTE, generation=2, problems=[], sync=RouteSync(matched=2, synced=1), existing=None, now=T0
    )
    # Still syncing, with a different message: the time stays.
    second = c.route_status(
        route=ROUTE, generation=3, problems=[], sync=RouteSync(matched=3, synced=1), existing=first, now=T1
    )
    assert _conditions(second)["Programmed"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert _conditions(second)["Programmed"]["observedGeneration"] == 3
    assert _conditions(second)["Programmed"]["reason"] == "SidecarsSyncing"
    # Now synced: it flips and the time moves.
    third = c.route_status(
        route=ROUTE, generation=3, problems=[], sync=RouteSync(matched=3, synced=3), existing=second, now=T1
    )
    assert _conditions(third)["Programmed"]["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    assert _conditions(third)["Accepted"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_programmed_reasons() -> None:
    def programmed(sync: RouteSync | None, problems: Sequence[Problem] = ()) -> tuple[str, str]:
        status = c.route_status(
            route=ROUTE, generation=1, problems=problems, sync=sync, existing=None, now=T0
        )
        found = _conditions(status)["Programmed"]
        return found["status"], found["reason"]

    assert programmed(RouteSync()) == ("True", "NoSidecars")
    assert programmed(RouteSync(matched=2, synced=1)) == ("False", "SidecarsSyncing")
    assert programmed(None) == ("Unknown", "Pending")
    assert programmed(RouteSync(matched=1), [Problem("f", "SecretNotFound", "m")]) == ("False", "Invalid")
    rejected = c.route_status(
        route=ROUTE,
        generation=1,
        problems=[],
        sync=RouteSync(matched=2, synced=1, rejected=1, errors=("bad regex",)),
        existing=None,
        now=T0,
    )
    found = _conditions(rejected)["Programmed"]
    assert (found["status"], found["reason"]) == ("False", "Rejected")
    assert "bad regex" in found["message"]


def test_not_accepted_reports_the_problems_and_zero_sidecars() -> None:
    problems = [Problem("spec.backends[0].credentialsRef", "SecretNotFound", 'Secret "x" not found')]
    status = c.route_status(
        route=ROUTE,
        generation=1,
        problems=problems,
        sync=RouteSync(matched=4, synced=4),
        existing=None,
        now=T0,
    )
    accepted = _conditions(status)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "SecretNotFound")
    assert accepted["message"] == 'spec.backends[0].credentialsRef: Secret "x" not found'
    assert status["sidecars"]["summary"] == "0/0"


def test_unparseable_route_has_no_columns() -> None:
    status = c.route_status(
        route=None,
        generation=1,
        problems=[Problem("spec", "InvalidSpec", "bad")],
        sync=None,
        existing=None,
        now=T0,
    )
    assert "models" not in status and _conditions(status)["Accepted"]["status"] == "False"


def test_conditions_of_other_writers_are_kept() -> None:
    existing = [{"type": "Custom", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t"}]
    merged = c.merge_conditions(
        existing, [c.Desired("Accepted", "True", "Accepted", "")], generation=1, now=T0
    )
    assert [m["type"] for m in merged] == ["Accepted", "Custom"]


def test_transitions_and_route_events() -> None:
    old = [{"type": "Accepted", "status": "True", "reason": "Accepted"}]
    new = [
        {"type": "Accepted", "status": "False", "reason": "SecretNotFound", "message": "gone"},
        {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "1/1"},
    ]
    changes = c.transitions(old, new)
    assert [(t.type, t.old, t.new) for t in changes] == [
        ("Accepted", "True", "False"),
        ("Programmed", None, "True"),
    ]
    assert route_events(changes) == [
        EventSpec("Warning", "SecretNotFound", "gone"),
        EventSpec("Normal", "Programmed", "1/1"),
    ]


def test_budget_status_from_a_report() -> None:
    report = BudgetReport(
        spent="12.5",
        remaining="87.5",
        forecast="40",
        state="Normal",
        period_start="2026-01-01T00:00:00Z",
        reset_at="2026-02-01T00:00:00Z",
        alerted_percent=0,
    )
    status = c.budget_status(generation=4, problems=[], report=report, existing=None, now=T0)
    assert status["spent"] == "12.5" and status["resetAt"] == "2026-02-01T00:00:00Z"
    assert _conditions(status)["Ready"]["reason"] == "Normal"
    pending = c.budget_status(generation=4, problems=[], report=None, existing=None, now=T0)
    assert _conditions(pending)["Ready"]["status"] == "Unknown" and "spent" not in pending


# -- the writer -------------------------------------------------------------------------------------------


class _Api:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append((plural, namespace, name, dict(status)))

    async def create_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str
    ) -> None:
        self.events.append((type_, reason))


class _Source:
    def __init__(self) -> None:
        self.sync = RouteSync(matched=1, synced=0)

    def keys(self) -> list[tuple[str, str]]:
        return [("ns", "chat")]

    def observed(self, namespace: str, name: str) -> Observed:
        return Observed("uid-1", {}, {"kind": "LLMRoute", "metadata": {"name": name, "namespace": namespace}})

    def desired(self, namespace: str, name: str, previous: Mapping[str, Any]) -> dict[str, Any]:
        return c.route_status(
            route=ROUTE, generation=2, problems=[], sync=self.sync, existing=previous, now=T0
        )

    def events(self, changes: Sequence[c.Transition]) -> list[EventSpec]:
        return route_events(changes)


async def test_writer_patches_only_changes_and_posts_events() -> None:
    api, source = _Api(), _Source()
    writer = StatusWriter(
        kind="LLMRoute",
        plural="llmroutes",
        source=source,
        kube=api,  # type: ignore[arg-type]  # the two calls the writer makes
        metrics=OperatorMetrics(),
        is_leader=lambda: True,
    )
    writer.mark("ns", "chat")
    await writer.flush()
    writer.mark("ns", "chat")
    await writer.flush()  # nothing changed: no second patch
    assert len(api.patches) == 1
    source.sync = RouteSync(matched=1, synced=1, version="v2")
    writer.mark_all()
    await writer.flush()
    await asyncio.sleep(0)
    assert len(api.patches) == 2
    assert api.patches[1][3]["sidecars"]["summary"] == "1/1"
    assert ("Normal", "Programmed") in api.events and ("Normal", "Accepted") in api.events


async def test_a_standby_writes_nothing() -> None:
    api = _Api()
    writer = StatusWriter(
        kind="LLMRoute",
        plural="llmroutes",
        source=_Source(),
        kube=api,  # type: ignore[arg-type]
        metrics=OperatorMetrics(),
        is_leader=lambda: False,
        resync_seconds=0.01,
        batch_seconds=0,
    )
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0.1)
    task.cancel()
    assert api.patches == []

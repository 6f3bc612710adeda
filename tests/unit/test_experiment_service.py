"""The experiment service: usage records counted into arms (feedback, errors, latency, TTFT, cost),
the sticky verdict, status written and read back after a restart without counting a resent batch
twice, a change of arms starting over, and the budget service holding a batch's acknowledgement until
the experiment counts it added are written."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration

from llmroute_operator.budgets import BudgetService
from llmroute_operator.configserver.auth import Identity
from llmroute_operator.experiments import ExperimentService
from llmroute_operator.index import ClusterIndex
from llmroute_operator.settings import OperatorSettings
from llmroute_proto.api.loader import load_text
from llmroute_proto.api.route import ExperimentStatus, LLMRoute
from llmroute_proto.v1 import usage_pb2 as upb

NS = "team-a"
NOW = datetime(2026, 3, 11, 12, tzinfo=UTC)
ALICE = Identity(namespace=NS, service_account="app", pod_name="a", pod_uid="uid-a")


def route_yaml(arms: tuple[str, ...] = ("good", "poor"), min_samples: int = 20) -> str:
    weights = [100 // len(arms)] * len(arms)
    weights[0] += 100 - sum(weights)
    split = ", ".join(f"{{backend: {a}, weight: {w}}}" for a, w in zip(arms, weights, strict=True))
    backends = "\n".join(
        f"  - {{name: {a}, provider: openai-compatible, model: m-{a}, endpoint: 'http://127.0.0.1:9/v1'}}"
        for a in ("good", "poor", "third")
    )
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {NS}}}
spec:
  models:
  - name: chat
    strategy: weighted
    split: [{split}]
  backends:
{backends}
  experiment: {{model: chat, metric: quality, minSamples: {min_samples}}}
"""


@dataclass
class Entry:
    route: LLMRoute | None
    status: dict[str, Any] = field(default_factory=dict)

    def involved(self) -> dict[str, Any]:
        return {"kind": "LLMRoute", "metadata": {"name": "chat", "namespace": NS}}


@dataclass
class Book:
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)

    def entry(self, namespace: str, name: str) -> Entry | None:
        return self.entries.get((namespace, name))

    def put(self, text: str, status: dict[str, Any] | None = None) -> None:
        self.entries[(NS, "chat")] = Entry(load_text(text).routes[0], status or {})


@dataclass
class Api:
    """What LLMRoute.status.experiment holds, and the Events sent."""

    written: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)

    async def persist(self, namespace: str, name: str, body: dict[str, Any] | None) -> None:
        self.written[(namespace, name)] = body

    async def announce(self, involved: Mapping[str, Any], reason: str, message: str) -> None:
        self.events.append((reason, message))


def service(book: Book, api: Api) -> ExperimentService:
    return ExperimentService(routes=book, persist=api.persist, announce=api.announce, clock=lambda: NOW)


def request(
    rid: str,
    arm: str,
    *,
    outcome: upb.UsageOutcome.ValueType = upb.USAGE_OUTCOME_SUCCESS,
    ms: int = 120,
    ttft: int = 0,
) -> upb.UsageRecord:
    record = upb.UsageRecord(
        request_id=rid, route="chat", experiment_arm=arm, outcome=outcome, cost_micro_usd=2_000,
        latency=Duration(nanos=ms * 1_000_000),
    )  # fmt: skip
    if ttft:
        record.time_to_first_token.CopyFrom(Duration(nanos=ttft * 1_000_000))
    return record


def feedback(response: str, arm: str, score: float) -> upb.UsageRecord:
    return upb.UsageRecord(
        request_id=f"feedback:{response}", route="chat", experiment_arm=arm,
        outcome=upb.USAGE_OUTCOME_FEEDBACK, feedback_score=score, response_id=response,
    )  # fmt: skip


def scores(rng: random.Random, arm: str, mean: float, count: int, start: int = 0) -> list[upb.UsageRecord]:
    return [feedback(f"{arm}-{start + i}", arm, rng.gauss(mean, 0.1)) for i in range(count)]


async def test_records_count_into_their_arms() -> None:
    book, api = Book(), Api()
    book.put(route_yaml())
    svc = service(book, api)
    records = [
        request("r1", "good", ms=80, ttft=30),
        request("r2", "good", outcome=upb.USAGE_OUTCOME_UPSTREAM_ERROR),
        request("r3", "poor", ms=400),
        request("r4", "poor", outcome=upb.USAGE_OUTCOME_RATE_LIMITED),  # a policy refusal: not counted
        request("r5", "", ms=1),  # not in the experiment
        request("r6", "gone"),  # an arm the split does not have
        feedback("x", "good", 0.9),
    ]
    waits = svc.count(NS, "uid-a/s1", 1, records, NOW)
    assert waits == {(NS, "llmroute/chat"): 2}
    report = svc.report(NS, "chat")
    assert report is not None
    arms = {a["backend"]: a for a in report["arms"]}
    assert (arms["good"]["requests"], arms["good"]["errors"], arms["good"]["feedback"]) == (2, 1, 1)
    assert arms["good"]["errorRate"] == 0.5 and arms["good"]["quality"] == 0.9
    assert 50 <= arms["good"]["latencyP50Ms"] <= 100 and 25 <= arms["good"]["ttftP50Ms"] <= 50
    assert arms["good"]["costUsd"] == "0.004"
    assert (arms["poor"]["requests"], arms["poor"]["errors"]) == (1, 0)
    assert 250 <= arms["poor"]["latencyP99Ms"] <= 500 and "ttftP50Ms" not in arms["poor"]
    assert report["state"] == "Running" and report["summary"] == "Running: 0/20 samples, good leads"
    ExperimentStatus.model_validate(report)  # the CRD's own shape


async def test_a_winner_is_called_written_announced_and_sticks() -> None:
    book, api = Book(), Api()
    book.put(route_yaml())
    svc = service(book, api)
    rng = random.Random(5)
    svc.count(NS, "uid-a/s1", 1, scores(rng, "good", 0.8, 25) + scores(rng, "poor", 0.5, 25), NOW)
    await svc.persist_now()
    written = api.written[(NS, "chat")]
    assert written is not None and written["state"] == "Concluded" and written["winner"] == "good"
    assert written["summary"].startswith("good wins on quality (p=")
    assert written["pValue"] < 0.05 and written["concludedAt"] == "2026-03-11T12:00:00Z"
    assert [reason for reason, _ in api.events] == ["ExperimentConcluded"]
    assert "arm good wins on quality" in api.events[0][1]
    # Later scores that would blur the difference do not flip a called verdict.
    svc.count(NS, "uid-a/s1", 2, scores(rng, "good", 0.5, 30, 100) + scores(rng, "poor", 0.8, 30, 100), NOW)
    await svc.persist_now()
    assert api.written[(NS, "chat")]["winner"] == "good"  # type: ignore[index]
    assert len(api.events) == 1


async def test_a_restarted_operator_continues_from_status_and_skips_a_resent_batch() -> None:
    book, api = Book(), Api()
    book.put(route_yaml(min_samples=1000))
    first = service(book, api)
    batch = [request(f"r{i}", "good") for i in range(5)] + [feedback("f1", "poor", 0.4)]
    first.count(NS, "uid-a/s1", 7, batch, NOW)
    await first.persist_now()
    stored = api.written[(NS, "chat")]
    # The next leader reads that status from the object and gets the unacknowledged batch again.
    book.put(route_yaml(min_samples=1000), status={"experiment": stored})
    second = service(book, api)
    assert second.count(NS, "uid-a/s1", 7, batch, NOW) == {}
    assert second.recounts_refused == 1
    second.count(NS, "uid-a/s1", 8, [request("r9", "good")], NOW)
    report = second.report(NS, "chat")
    assert report is not None
    arms = {a["backend"]: a for a in report["arms"]}
    assert arms["good"]["requests"] == 6 and arms["poor"]["feedback"] == 1
    assert report["startedAt"] == stored["startedAt"]  # type: ignore[index]


async def test_new_arms_start_over_and_a_removed_experiment_clears_status() -> None:
    book, api = Book(), Api()
    book.put(route_yaml())
    svc = service(book, api)
    svc.count(NS, "uid-a/s1", 1, [request("r1", "good"), request("r2", "poor")], NOW)
    await svc.persist_now()
    book.put(route_yaml(("good", "third")), status={"experiment": api.written[(NS, "chat")]})
    svc.count(NS, "uid-a/s1", 2, [request("r3", "third")], NOW)
    report = svc.report(NS, "chat")
    assert report is not None
    assert {a["backend"]: a["requests"] for a in report["arms"]} == {"good": 0, "third": 1}
    without = route_yaml().replace("  experiment: {model: chat, metric: quality, minSamples: 20}\n", "")
    book.put(without, status={"experiment": report})
    svc.refresh(NS, "chat")
    await svc.persist_now()
    assert api.written[(NS, "chat")] is None  # status.experiment removed
    assert svc.report(NS, "chat") is None


async def test_hostile_feedback_scores_do_not_poison_the_mean() -> None:
    book, api = Book(), Api()
    book.put(route_yaml())
    svc = service(book, api)
    svc.count(
        NS, "uid-a/s1", 1, [feedback("a", "good", float("nan")), feedback("b", "good", float("inf"))], NOW
    )
    svc.count(NS, "uid-a/s1", 2, [feedback("c", "good", 1.0)], NOW)
    report = svc.report(NS, "chat")
    assert report is not None and report["arms"][0]["feedback"] == 1 and report["arms"][0]["quality"] == 1.0


async def test_the_budget_service_acknowledges_only_after_the_experiment_is_written() -> None:
    book, api = Book(), Api()
    book.put(route_yaml())
    experiments = service(book, api)
    budgets = BudgetService(
        index=ClusterIndex(), settings=OperatorSettings(), clock=lambda: NOW, warmup_seconds=-1
    )
    budgets.add_consumer(experiments)
    experiments.on_written(budgets.consumer_wrote)
    await budgets.start()
    budgets.mark_ready()
    try:
        batch = upb.UsageBatch(sidecar_id="s1", sequence=1, records=[request("r1", "good")])
        await budgets.report_usage(ALICE, batch)
        await budgets.report_usage(ALICE, batch)  # resent: a duplicate, not counted again
        assert budgets.acked_sequence(ALICE, "s1") == 0  # counted, not yet written
        await experiments.persist_now()
        assert budgets.acked_sequence(ALICE, "s1") == 1
        report = experiments.report(NS, "chat")
        assert report is not None and report["arms"][0]["requests"] == 1
        # Deactivation forgets the counts; the next leader reads them from status.
        budgets.activate({})
        budgets.deactivate()
        assert experiments.report(NS, "chat") is None
    finally:
        await budgets.stop()

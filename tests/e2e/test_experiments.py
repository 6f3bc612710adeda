"""An A/B experiment end to end: two arms of different quality reach a significant winner in
``LLMRoute.status.experiment``, shown by ``kubectl get`` and announced by an Event.

A real kube-apiserver, ``llmroute-operator --dev`` as a child process, two real ``llmroute-sidecar
--operator`` processes sharing a real Redis, one fake OpenAI provider serving both arms (``m-good``
and ``m-poor``), and the official ``openai`` SDK as the app. Users are split by the route's weights;
the app scores each answer with ``POST /v1/feedback`` on the *other* sidecar (the shared Redis knows
which arm answered), better answers from the good arm. The test checks that every request and every
score sent is counted exactly once per arm, that the winner is called, and that an operator restart
continues the counts from status without losing or doubling any.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from llmroute_operator.devcluster import target

from .dev_stack import DevStack, dev_stack
from .operator_process import status_of
from .push_support import poll

pytestmark = pytest.mark.e2e

MIN_SAMPLES = 30
QUALITY = {"good": 0.8, "poor": 0.6}
FIGURES: dict[str, Any] = {}


def resources(namespace: str, endpoint: str) -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {namespace}}}
spec:
  workloadSelector: {{matchLabels: {{app: chat}}}}
  models:
  - name: chat
    strategy: weighted
    split: [{{backend: good, weight: 50}}, {{backend: poor, weight: 50}}]
  backends:
  - name: good
    provider: openai
    model: m-good
    endpoint: {endpoint}
    credentialsRef: {{name: openai, key: apiKey}}
    pricing: {{inputPerMillion: 1000, outputPerMillion: 1000}}
  - name: poor
    provider: openai
    model: m-poor
    endpoint: {endpoint}
    credentialsRef: {{name: openai, key: apiKey}}
    pricing: {{inputPerMillion: 500, outputPerMillion: 500}}
  experiment: {{model: chat, metric: quality, minSamples: {MIN_SAMPLES}, confidence: 0.99}}
"""


@pytest.fixture(scope="module")
def stack(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with dev_stack(cluster, tmp_path_factory, "experiment", resources, sidecars=2, routes=["chat"]) as stack:
        yield stack
    print(f"\nexperiment figures: {FIGURES}")


@dataclass
class Sent:
    requests: dict[str, int] = field(default_factory=lambda: {"good": 0, "poor": 0})
    scores: dict[str, list[float]] = field(default_factory=lambda: {"good": [], "poor": []})


def _arm(model: str) -> str:
    return {"m-good": "good", "m-poor": "poor"}[model]


def _traffic(stack: DevStack, sent: Sent, rng: random.Random, users: range, per_user: int) -> None:
    """Requests from each user through one sidecar, each answer scored through the other one."""
    clients = [
        openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=30)
        for s in stack.sidecars
    ]
    raters = [httpx.Client(base_url=s.base_url.removesuffix("/v1"), timeout=10) for s in stack.sidecars]
    try:
        for user in users:
            for turn in range(per_user):
                which = (user + turn) % 2
                headers = {"x-llmroute-user": f"user-{user}"}
                messages = [{"role": "user", "content": f"user {user} asks question {turn}"}]
                if turn % 3 == 2:  # some streams, so time to first token is measured too
                    stream = clients[which].chat.completions.create(
                        model="chat",
                        messages=messages,
                        stream=True,
                        extra_headers=headers,  # type: ignore[arg-type]
                    )
                    chunks = list(stream)
                    response_id, model = chunks[0].id, chunks[0].model
                else:
                    answer = clients[which].chat.completions.create(
                        model="chat",
                        messages=messages,
                        extra_headers=headers,  # type: ignore[arg-type]
                    )
                    response_id, model = answer.id, answer.model
                arm = _arm(model)
                sent.requests[arm] += 1
                score = round(min(1.0, max(0.0, rng.gauss(QUALITY[arm], 0.15))), 3)
                rated = raters[1 - which].post(
                    "/v1/feedback", json={"response_id": response_id, "score": score}
                )
                assert rated.status_code == 200 and rated.json()["arm"] == arm, rated.text
                sent.scores[arm].append(score)
    finally:
        for client in clients:
            client.close()
        for rater in raters:
            rater.close()


def _experiment(stack: DevStack) -> dict[str, Any]:
    return dict(status_of(stack.kubectl, "llmroutes", stack.namespace, "chat").get("experiment") or {})


def _counted(stack: DevStack, sent: Sent) -> dict[str, Any] | None:
    experiment = _experiment(stack)
    arms = {a["backend"]: a for a in experiment.get("arms", [])}
    if all(
        arm in arms
        and arms[arm]["requests"] == sent.requests[arm]
        and arms[arm]["feedback"] == len(sent.scores[arm])
        for arm in QUALITY
    ):
        return experiment
    return None


def test_two_arms_of_different_quality_reach_a_significant_winner(stack: DevStack) -> None:
    rng = random.Random(20261203)
    sent = Sent()
    started = time.monotonic()
    _traffic(stack, sent, rng, range(0, 40), per_user=3)
    assert min(len(s) for s in sent.scores.values()) >= MIN_SAMPLES, sent.requests  # both arms have users
    experiment = poll(
        lambda: _counted(stack, sent), timeout=60, interval=0.5, what="every request and score counted"
    )
    FIGURES["first phase"] = {"sent": dict(sent.requests), "seconds": round(time.monotonic() - started, 1)}
    assert experiment["state"] == "Concluded" and experiment["winner"] == "good", experiment["summary"]
    assert experiment["pValue"] < 0.01 and experiment["summary"].startswith("good wins on quality")
    arms = {a["backend"]: a for a in experiment["arms"]}
    for arm, scores in sent.scores.items():
        mean = sum(scores) / len(scores)
        assert arms[arm]["quality"] == pytest.approx(mean, abs=1e-4)
        assert arms[arm]["low"] < mean < arms[arm]["high"]
        assert arms[arm]["errors"] == 0 and float(arms[arm]["costUsd"]) > 0
        assert arms[arm]["latencyP50Ms"] > 0 and arms[arm]["ttftP50Ms"] > 0
    assert arms["good"]["high"] > arms["good"]["low"] > arms["poor"]["high"]  # intervals apart at 99%
    FIGURES["verdict"] = {
        "pValue": experiment["pValue"],
        "quality": {
            a: (arms[a]["quality"], arms[a]["low"], arms[a]["high"], arms[a]["feedback"]) for a in arms
        },
    }

    table = stack.kubectl.run("get", "llmroutes", "chat", "-n", stack.namespace).stdout
    assert "EXPERIMENT" in table and "good wins on quality" in table, table
    FIGURES["kubectl get"] = table.strip().splitlines()
    poll(
        lambda: stack.kubectl.json(
            "get", "events", "-n", stack.namespace, "--field-selector", "reason=ExperimentConcluded"
        )["items"],
        timeout=20,
        what="the ExperimentConcluded Event",
    )

    # The operator restarts: the counts continue from status, none lost or doubled.
    assert stack.operator.stop() == 0, stack.operator.tail()
    stack.operator.start()
    stack.operator.wait_ready()
    _traffic(stack, sent, rng, range(40, 50), per_user=3)
    after = poll(lambda: _counted(stack, sent), timeout=60, interval=0.5, what="the counts after a restart")
    assert after["winner"] == "good" and after["startedAt"] == experiment["startedAt"]
    FIGURES["after restart"] = {
        "sent": dict(sent.requests),
        "scores": {a: len(s) for a, s in sent.scores.items()},
    }

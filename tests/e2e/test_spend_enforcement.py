"""A hard budget and a rate limit held across five sidecars together, end to end.

A real kube-apiserver, ``llmroute-operator --dev`` as a child process, five real
``llmroute-sidecar --operator`` processes (tokens minted by TokenRequest for Pod objects) sharing one
real Redis, and a fake OpenAI provider. Concurrent load through the official ``openai`` SDK:

- one LLMBudget with a hard limit: every sidecar spends only allowance leased from the operator, so
  the spend ``LLMBudget.status`` counts stays within the limit plus one request's cost per sidecar,
  and the refusals are 429 ``budget_exceeded`` naming the budget;
- one route rate limit (requests per minute): the five sidecars together admit what the limit allows,
  not five times that.

The measured overshoot and admission counts are printed (run with ``-s``) for the issue's note.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl
from tests.redis_support import RedisServer, require_redis_server

from .operator_process import OperatorProcess, status_of
from .push_support import SidecarProcess, make_pod, poll

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SIDECARS = 5
HARD_MICRO = 3_000_000  # 3 USD
RATE_PER_MINUTE = 20
FIGURES: dict[str, Any] = {}


def secret(namespace: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {namespace}}}
stringData: {{apiKey: sk-test}}
"""


def resources(namespace: str, endpoint: str) -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {namespace}}}
spec:
  workloadSelector: {{matchLabels: {{app: chat}}}}
  models: [{{name: chat, backends: [primary]}}]
  backends:
  - name: primary
    provider: openai
    model: gpt-4o
    endpoint: {endpoint}
    region: us-east-1
    credentialsRef: {{name: openai, key: apiKey}}
    pricing: {{inputPerMillion: 1000, outputPerMillion: 1000}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: limited, namespace: {namespace}}}
spec:
  workloadSelector: {{matchLabels: {{app: chat}}}}
  models: [{{name: limited, backends: [free]}}]
  backends:
  - name: free
    provider: openai
    model: gpt-4o-mini
    endpoint: {endpoint}
    region: us-east-1
    credentialsRef: {{name: openai, key: apiKey}}
    pricing: {{inputPerMillion: 0, outputPerMillion: 0}}
  rateLimits: [{{key: route, requestsPerMinute: {RATE_PER_MINUTE}}}]
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: {namespace}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: UTC}}
  limits: {{hard: "{HARD_MICRO / 1e6}"}}
"""


@dataclass
class Stack:
    kubectl: Kubectl
    namespace: str
    operator: OperatorProcess
    sidecars: list[SidecarProcess] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kubectl = cluster.kubectl
    kubectl.apply_crds(ROOT / "crds")
    namespace = cluster.create_namespace("spend")
    kubectl.run("create", "serviceaccount", "app", "-n", namespace)
    workdir = tmp_path_factory.mktemp("spend")
    ca = workdir / "ca.pem"
    redis = RedisServer(require_redis_server())
    redis.start()
    provider = FakeProvider("openai")
    provider.start_in_thread()
    operator = OperatorProcess(
        cluster.kubeconfig, workdir / "operator.log", ["--dev", "--ca-out", str(ca), "--namespace", namespace]
    )
    state = Stack(kubectl, namespace, operator)
    try:
        operator.start()
        operator.wait_ready()
        kubectl.run("apply", "-f", "-", input=secret(namespace))
        # The webhook checks the Secret in the operator's index, which its watch fills a moment later.
        poll(
            lambda: (
                kubectl.run(
                    "apply", "-f", "-", input=resources(namespace, provider.base_url), check=False
                ).returncode
                == 0
            ),
            timeout=30,
            interval=0.3,
            what="resources accepted",
        )
        for i in range(SIDECARS):
            name = f"app-{i}"
            token = make_pod(kubectl, namespace, name, {"app": "chat"})
            sidecar = SidecarProcess(
                name, namespace, token, operator.config_port, ca, workdir,
                extra_args=("--redis-url", redis.url, "--audit-log", "off"),
            )  # fmt: skip
            state.sidecars.append(sidecar.start())
        poll(
            lambda: all(sorted(s.route_names()) == ["chat", "limited"] for s in state.sidecars),
            timeout=60,
            what="both routes on every sidecar",
        )
        yield state
    finally:
        for sidecar in state.sidecars:
            sidecar.stop()
        if operator.stop() not in (0, None):
            print(operator.tail())
        provider.stop_thread()
        redis.close()
        print(f"\nspend enforcement figures: {FIGURES}")
        cluster.delete_namespace(namespace)


def _client(sidecar: SidecarProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0, timeout=30)


@dataclass
class Tally:
    admitted: int = 0
    refused: int = 0
    other: list[str] = field(default_factory=list)
    cost_micro: int = 0
    largest_micro: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _hammer(sidecar: SidecarProcess, model: str, count: int, tally: Tally, expect_code: str) -> None:
    client = _client(sidecar)
    for i in range(count):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[
                    {"role": "user", "content": f"request {i} from {sidecar.name}: " + "word " * (i % 7)}
                ],
                max_tokens=40,
            )
        except openai.RateLimitError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            with tally.lock:
                tally.refused += 1
                if body.get("code") != expect_code:
                    tally.other.append(f"429 {body}")
                elif len(tally.refusals) < 3:
                    tally.refusals.append(body)
            continue
        except openai.APIError as exc:
            with tally.lock:
                tally.other.append(repr(exc))
            continue
        cost = round(float(raw.headers["x-llmroute-cost-usd"]) * 1_000_000)
        with tally.lock:
            tally.admitted += 1
            tally.cost_micro += cost
            tally.largest_micro = max(tally.largest_micro, cost)


def _settled_spend(stack: Stack) -> int:
    def settled() -> str | None:
        first = status_of(stack.kubectl, "llmbudgets", stack.namespace, "team").get("spent")
        time.sleep(1.5)
        again = status_of(stack.kubectl, "llmbudgets", stack.namespace, "team").get("spent")
        return first if first is not None and first == again else None

    return round(float(poll(settled, timeout=60, interval=0.1, what="budget spend settled")) * 1_000_000)


def test_hard_budget_holds_across_five_sidecars(stack: Stack) -> None:
    poll(
        lambda: status_of(stack.kubectl, "llmbudgets", stack.namespace, "team").get("periodStart"),
        what="budget tracked",
    )
    tally = Tally()
    per_thread = 40  # 5 sidecars x 4 threads x 40 = 800 requests, several times what the budget buys
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=SIDECARS * 4) as pool:
        futures = [
            pool.submit(_hammer, sidecar, "chat", per_thread, tally, "budget_exceeded")
            for sidecar in stack.sidecars
            for _ in range(4)
        ]
        for future in futures:
            future.result()
    FIGURES["budget_load_seconds"] = round(time.monotonic() - started, 1)
    assert not tally.other, tally.other[:5]
    spent = _settled_spend(stack)
    overshoot = spent - HARD_MICRO
    FIGURES.update(
        budget_hard_usd=HARD_MICRO / 1e6,
        budget_spent_usd=spent / 1e6,
        budget_overshoot_usd=max(0, overshoot) / 1e6,
        budget_admitted=tally.admitted,
        budget_refused=tally.refused,
        largest_request_usd=tally.largest_micro / 1e6,
    )
    # What the apps were told they spent is what the operator counted, to the micro-dollar.
    assert spent == tally.cost_micro, (spent, tally.cost_micro)
    # The design bound: at most one request's cost per sidecar past the limit.
    assert spent <= HARD_MICRO + SIDECARS * tally.largest_micro, FIGURES
    # And the limit is used, not refused early: what is left is less than one estimate per sidecar
    # (a request reserves prompt + max_tokens = well under 100 tokens = 0.1 USD here).
    assert spent >= HARD_MICRO - SIDECARS * 100_000, FIGURES
    assert tally.refused > 0 and tally.admitted > 0
    refusal = tally.refusals[0]
    assert refusal["budget"] == "team" and refusal["reset_at"], refusal
    status = status_of(stack.kubectl, "llmbudgets", stack.namespace, "team")
    assert status["state"] == "Exhausted" or spent >= HARD_MICRO - SIDECARS * 100_000


def test_rate_limit_holds_across_five_sidecars(stack: Stack) -> None:
    tally = Tally()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=SIDECARS * 4) as pool:
        futures = [
            pool.submit(_hammer, sidecar, "limited", 5, tally, "rate_limit_exceeded")
            for sidecar in stack.sidecars
            for _ in range(4)
        ]
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    assert not tally.other, tally.other[:5]
    # A bucket of 20 refills at 20/60 per second: the burst may admit what refilled meanwhile.
    ceiling = RATE_PER_MINUTE + int(elapsed * RATE_PER_MINUTE / 60) + 1
    FIGURES.update(
        rate_limit_per_minute=RATE_PER_MINUTE,
        rate_admitted=tally.admitted,
        rate_refused=tally.refused,
        rate_burst_seconds=round(elapsed, 2),
    )
    assert RATE_PER_MINUTE <= tally.admitted <= ceiling, FIGURES
    assert tally.admitted + tally.refused == SIDECARS * 4 * 5

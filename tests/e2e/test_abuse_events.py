"""Abuse protection end to end: a user whose request rate spikes is blocked on both sidecars of a
workload (shared Redis), and the operator writes one Warning Event ``AbuseBlocked`` on the route
naming the user, the reason and the block's length (``kubectl get events``), from the usage record
the sidecar that set the block sent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from llmroute_operator.devcluster import target

from .dev_stack import DevStack, dev_stack
from .push_support import poll

pytestmark = pytest.mark.e2e

WINDOW_S, MIN_REQUESTS = 4, 12


def resources(namespace: str, endpoint: str) -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: guarded, namespace: {namespace}}}
spec:
  workloadSelector: {{matchLabels: {{app: chat}}}}
  models: [{{name: chat, backends: [primary]}}]
  backends:
  - name: primary
    provider: openai
    model: gpt-4o
    endpoint: {endpoint}
    credentialsRef: {{name: openai, key: apiKey}}
  abuse: {{window: {WINDOW_S}s, baseline: 1m, minRequests: {MIN_REQUESTS}, blockFor: 30s}}
"""


@pytest.fixture(scope="module")
def stack(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with dev_stack(cluster, tmp_path_factory, "abuse", resources, sidecars=2, routes=["guarded"]) as stack:
        yield stack


def test_a_blocked_user_becomes_one_warning_event_on_the_route(stack: DevStack) -> None:
    clients = [openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0) for s in stack.sidecars]
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)  # start at a window's start
    statuses = []
    for i in range(MIN_REQUESTS + 4):
        try:
            clients[i % 2].chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": f"again {i}"}],
                extra_headers={"x-llmroute-user": "mallory"},
            )
            statuses.append(200)
        except openai.PermissionDeniedError as exc:
            statuses.append(403 if exc.code == "abuse_blocked" else 0)
    assert statuses == [200] * (MIN_REQUESTS - 1) + [403] * 5, statuses  # blocked on both sidecars

    def events() -> list[dict[str, object]]:
        found = stack.kubectl.json(
            "get", "events", "-n", stack.namespace, "--field-selector", "reason=AbuseBlocked"
        )["items"]
        return list(found)

    found = poll(events, timeout=30, interval=0.3, what="the AbuseBlocked Event")
    time.sleep(1.0)  # a second Event for the same block would have arrived by now
    found = events()
    assert len(found) == 1, found
    event = found[0]
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "LLMRoute" and event["involvedObject"]["name"] == "guarded"  # type: ignore[index]
    message = str(event["message"])
    assert message.startswith("user 'mallory' blocked for 30s by abuse protection: request rate"), message
    for client in clients:
        client.close()

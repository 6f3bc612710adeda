"""Routing decisions over the wire: the official OpenAI SDK as the app, fake OpenAI-compatible
providers as backends, a real sidecar in between. Residency under a regional outage, sticky weighted
splits, task rules, cost and complexity strategies, context truncation, and the debug trace."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.timeout(60)

RESILIENCE = """  resilience:
    timeout: {perAttempt: 2s, total: 5s}
    retries: {attempts: 1, backoff: {base: 5ms, max: 10ms}}"""


def routing_yaml(
    backends: Sequence[tuple[str, FakeProvider, str]],
    model: str,
    spec: str = "",
) -> str:
    """An LLMRoute over openai-compatible fakes: (name, fake, extra backend fields) per backend.

    ``model`` holds the logical model's YAML lines (after ``- name: chat``), ``spec`` more spec lines.
    """
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        "metadata: {name: routing, namespace: demo}",
        "spec:",
        "  models:",
        "  - name: chat",
        *(f"    {line}" for line in model.strip().splitlines()),
        "  backends:",
    ]
    for name, provider, extra in backends:
        lines += [
            f"  - name: {name}",
            "    provider: openai-compatible",
            f"    model: model-{name}",
            f"    endpoint: {provider.base_url}",
            *(f"    {line}" for line in extra.strip().splitlines()),
        ]
    lines.append(RESILIENCE)
    if spec:
        lines.append(spec.rstrip())
    return "\n".join(lines) + "\n"


async def _fakes(fake: FakeFactory, count: int) -> list[FakeProvider]:
    return [await fake("openai-compatible") for _ in range(count)]


async def _ask(
    instance: Sidecar, text: str = "hello", *, headers: dict[str, str] | None = None, **extra: Any
) -> Any:
    return await client_for(instance).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": text}],
        extra_headers=headers or {},
        **extra,
    )


async def test_a_dead_region_fails_over_to_the_next_allowed_region_only(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    us, eu_west, eu_central = await _fakes(fake, 3)
    resources = routing_yaml(
        [
            ("us", us, "region: us-east-1"),
            ("eu-west", eu_west, "region: eu-west-1"),
            ("eu-central", eu_central, "region: eu-central-1"),
        ],
        "backends: [us, eu-west, eu-central]",
        "  regions: {allowed: [eu-west-1, eu-central-1], preferLocal: true}",
    )
    instance = await sidecar(resources, region="eu-central-1")
    raw = await _ask(instance)
    assert raw.headers["x-llmroute-backend"] == "eu-central", "the local region first"

    eu_central.set_faults("status=503")
    raw = await _ask(instance)
    assert (raw.headers["x-llmroute-backend"], raw.headers["x-llmroute-region"]) == ("eu-west", "eu-west-1")

    eu_west.set_faults("status=503")
    with pytest.raises(openai.InternalServerError) as caught:
        await _ask(instance)
    assert caught.value.status_code == 503
    message = str(caught.value)
    assert "residency" in message and "regions.allowed" in message and "us" in message
    assert us.requests == [], "not one byte went to the US backend"


async def test_a_route_whose_allowed_regions_hold_no_backend_answers_503(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    (us,) = await _fakes(fake, 1)
    resources = routing_yaml(
        [("us", us, "region: us-east-1")], "backends: [us]", "  regions: {allowed: [eu-west-1]}"
    )
    instance = await sidecar(resources)
    with pytest.raises(openai.InternalServerError) as caught:
        await _ask(instance)
    assert caught.value.status_code == 503
    assert "residency" in str(caught.value) and "nothing was sent" in str(caught.value)
    assert us.requests == []


async def test_a_weighted_split_is_sticky_per_user(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    a, b = await _fakes(fake, 2)
    resources = routing_yaml(
        [("arm-a", a, "region: us-east-1"), ("arm-b", b, "region: us-east-1")],
        "strategy: weighted\nsplit: [{backend: arm-a, weight: 50}, {backend: arm-b, weight: 50}]",
    )
    instance = await sidecar(resources)
    first: dict[str, str] = {}
    for round_ in range(3):
        for i in range(12):
            user = f"user-{i}"
            raw = await _ask(instance, headers={"x-llmroute-user": user})
            arm = raw.headers["x-llmroute-backend"]
            assert first.setdefault(user, arm) == arm, f"{user} moved arms in round {round_}"
    assert set(first.values()) == {"arm-a", "arm-b"}
    # The request's own `user` field is a key too, and another sidecar agrees on every arm.
    other = await sidecar(resources)
    for user, arm in first.items():
        raw = await _ask(other, user=user)
        assert raw.headers["x-llmroute-backend"] == arm


async def test_a_task_rule_picks_its_backends(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    general, coder = await _fakes(fake, 2)
    resources = routing_yaml(
        [("general", general, "region: us-east-1"), ("coder", coder, "region: us-east-1")],
        "backends: [general]",
        "  rules:\n  - name: code\n    match: {task: code_generation}\n    backends: [coder, general]",
    )
    instance = await sidecar(resources)
    raw = await _ask(instance, headers={"x-llmroute-task": "code_generation", "x-llmroute-debug": "1"})
    assert raw.headers["x-llmroute-backend"] == "coder"
    trace = json.loads(raw.headers["x-llmroute-decision"])
    assert trace["rule"] == "code" and trace["candidates"] == ["coder", "general"]
    raw = await _ask(instance, headers={"x-llmroute-task": "chit_chat"})
    assert raw.headers["x-llmroute-backend"] == "general"
    assert "x-llmroute-decision" not in raw.headers, "the trace is only sent on request"


async def test_the_cost_strategy_picks_the_cheapest(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    dear, cheap, middle = await _fakes(fake, 3)
    resources = routing_yaml(
        [
            ("dear", dear, "pricing: {inputPerMillion: 10, outputPerMillion: 30}"),
            ("cheap", cheap, "pricing: {inputPerMillion: 0.15, outputPerMillion: 0.6}"),
            ("middle", middle, "pricing: {inputPerMillion: 2.5, outputPerMillion: 10}"),
        ],
        "strategy: cost\nbackends: [dear, middle, cheap]",
    )
    instance = await sidecar(resources)
    raw = await _ask(instance, max_tokens=100)
    assert raw.headers["x-llmroute-backend"] == "cheap"
    cheap.set_faults("status=500")
    raw = await _ask(instance, max_tokens=100)
    assert raw.headers["x-llmroute-backend"] == "middle", "then the next cheapest"
    assert dear.requests == []


async def test_the_complexity_strategy_sends_a_trivial_prompt_to_the_small_tier(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    large, small, medium = await _fakes(fake, 3)
    resources = routing_yaml(
        [
            ("large", large, "tier: large"),
            ("small", small, "tier: small"),
            ("medium", medium, "tier: medium"),
        ],
        "strategy: complexity\nbackends: [large, medium, small]\ncomplexity: {thresholds: {small: 0.3, medium: 0.7}}",
    )
    instance = await sidecar(resources)
    raw = await _ask(instance, "hi", headers={"x-llmroute-debug": "1"})
    assert raw.headers["x-llmroute-backend"] == "small"
    trace = json.loads(raw.headers["x-llmroute-decision"])
    assert trace["strategy"] == "complexity" and trace["tier"] == "small"
    assert trace["complexity"]["score"] < 0.3
    hard = (
        "Prove step by step that the algorithm below is optimal, derive its complexity equation, "
        "then refactor it:\n```python\nimport heapq\ndef f(xs):\n    return sorted(xs)\n```\n"
        + "More context. "
        * 2500
    )
    raw = await _ask(instance, hard, headers={"x-llmroute-debug": "1"})
    assert raw.headers["x-llmroute-backend"] == "large"
    assert json.loads(raw.headers["x-llmroute-decision"])["complexity"]["top"]


async def test_truncate_oldest_drops_old_turns_and_says_so(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    (small,) = await _fakes(fake, 1)
    resources = routing_yaml(
        [("small", small, "contextWindow: 1000")],
        "backends: [small]\ncontextOverflow: truncate-oldest",
    )
    instance = await sidecar(resources)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "old question " * 200},
        {"role": "assistant", "content": "old answer " * 200},
        {"role": "user", "content": "newest question"},
    ]
    client = client_for(instance)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=100,
    )
    assert raw.headers["x-llmroute-truncated"] == "2"
    sent = json.loads(small.requests[-1].body)["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[-1]["content"] == "newest question"

    stream = await client.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=100,
        stream=True,
    )
    assert stream.headers["x-llmroute-truncated"] == "2"
    chunks = [chunk async for chunk in stream.parse()]  # type: ignore[union-attr]
    assert chunks


async def test_reject_answers_a_400_naming_the_window(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    (small,) = await _fakes(fake, 1)
    resources = routing_yaml([("small", small, "contextWindow: 1000")], "backends: [small]")
    instance = await sidecar(resources)
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(instance, "word " * 2000, max_tokens=100)
    assert caught.value.code == "context_length_exceeded"
    assert "1000 tokens" in str(caught.value)
    assert small.requests == []


async def test_routing_metrics_are_exported(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    (only,) = await _fakes(fake, 1)
    instance = await sidecar(
        routing_yaml([("only", only, "region: eu-west-1")], "backends: [only]"), region="eu-west-1"
    )
    for _ in range(3):
        await _ask(instance)
    text = instance.metrics.registry
    decisions = text.get_sample_value(
        "llmroute_routing_decisions_total", {"model": "chat", "strategy": "fallback", "rule": "none"}
    )
    local = text.get_sample_value(
        "llmroute_routing_region_choices_total", {"model": "chat", "choice": "local"}
    )
    assert (decisions, local) == (3, 3)
    assert Counter(r.path for r in only.requests).most_common(1)[0][1] == 3

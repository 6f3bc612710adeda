"""Hedged requests (``spec.resilience.hedging``) on a real sidecar with real fake providers, through
the official OpenAI SDK: after the delay the next candidate is tried too, the first answer wins, the
other call is cancelled and billed (its own usage record, settled in the budget, and in the cost the
app is told); no hedge before the delay; a percentile delay follows the backend's measured latency;
streams hedge up to their first chunk; a budget's reservations never leak."""

from __future__ import annotations

import time

import openai
import pytest

from llmroute_fakes.faults import FaultSpec
from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.asyncio


def hedged_route(slow: FakeProvider, fast: FakeProvider, hedging: str) -> str:
    return f"""\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: hedged, namespace: demo}}
spec:
  models:
  - name: chat
    backends: [slow, fast]
  backends:
  - {{name: slow, provider: openai-compatible, model: m-slow, endpoint: {slow.base_url},
      pricing: {{inputPerMillion: 1000, outputPerMillion: 1000}}}}
  - {{name: fast, provider: openai-compatible, model: m-fast, endpoint: {fast.base_url},
      pricing: {{inputPerMillion: 2000, outputPerMillion: 2000}}}}
  resilience:
    hedging: {hedging}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: demo}}
spec:
  scope: {{routes: [hedged]}}
  period: {{type: daily}}
  limits: {{hard: "1000"}}
"""


async def pair(fake: FakeFactory, slow_ms: int) -> tuple[FakeProvider, FakeProvider]:
    slow, fast = await fake("openai-compatible"), await fake("openai-compatible")
    slow.set_faults(FaultSpec(latency_ms=slow_ms))
    return slow, fast


def reserved(instance: Sidecar) -> int:
    return sum(w.reserved for w in instance.policies.budgets.wallets.values())


async def ask(
    instance: Sidecar, text: str = "hello"
) -> tuple[openai.types.chat.ChatCompletion, dict[str, str], float]:
    async with client_for(instance) as client:
        started = time.monotonic()
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": text}], max_tokens=20
        )
        return raw.parse(), dict(raw.headers), time.monotonic() - started


async def test_a_slow_first_backend_is_hedged_and_both_calls_are_billed(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    slow, fast = await pair(fake, slow_ms=3000)
    instance = await sidecar(hedged_route(slow, fast, "{delay: 200ms}"))
    answer, headers, seconds = await ask(instance)
    assert answer.model == "m-fast" and headers["x-llmroute-backend"] == "fast"
    assert headers["x-llmroute-hedged"] == "fast" and headers["x-llmroute-attempts"] == "2"
    assert 0.2 <= seconds < 2.0  # the hedge's answer, not the slow one's 3 s
    assert len(slow.requests) == 1 and len(fast.requests) == 1  # both were sent
    records = instance.usage.drain()
    main = next(r for r in records if r.outcome == "ok")
    lost = next(r for r in records if r.outcome == "hedge_lost")
    assert (main.backend, lost.backend) == ("fast", "slow")
    assert lost.request_id == f"{main.request_id}:hedge" and lost.estimated and lost.cost_micro_usd > 0
    assert lost.input_tokens > 0 and lost.output_tokens == 0  # billed at the prompt's estimate
    told = round(float(headers["x-llmroute-cost-usd"]) * 1e6)
    assert told == main.cost_micro_usd + lost.cost_micro_usd
    wallet = instance.policies.budgets.wallets["team"]
    assert wallet.spent == told and reserved(instance) == 0
    assert (
        instance.metrics.registry.get_sample_value(
            "llmroute_hedges_total", {"model": "chat", "outcome": "hedge_won"}
        )
        == 1.0
    )


async def test_an_answer_within_the_delay_sends_no_hedge(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    slow, fast = await pair(fake, slow_ms=20)
    instance = await sidecar(hedged_route(slow, fast, "{delay: 2s}"))
    answer, headers, _ = await ask(instance)
    assert answer.model == "m-slow" and "x-llmroute-hedged" not in headers
    assert (len(slow.requests), len(fast.requests)) == (1, 0)
    assert [r.outcome for r in instance.usage.drain()] == ["ok"]


async def test_a_percentile_delay_follows_the_measured_latency(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    slow, fast = await pair(fake, slow_ms=30)
    instance = await sidecar(hedged_route(slow, fast, "{delay: 10s, percentile: 95}"))
    hedged_early = 0
    for i in range(24):  # samples for a percentile: about 30 ms (the first 20 wait the fixed 10 s)
        _, headers, _ = await ask(instance, f"warm up {i}")
        hedged_early += "x-llmroute-hedged" in headers
    assert hedged_early <= 3  # a p95 delay hedges the slowest few percent, by design
    slow.queue_faults(FaultSpec(latency_ms=4000))
    answer, headers, seconds = await ask(instance, "now slow")
    assert answer.model == "m-fast" and headers["x-llmroute-hedged"] == "fast"
    assert seconds < 2.0  # hedged after about the p95 (tens of ms), not the 10 s fallback delay


async def test_a_stream_is_hedged_up_to_its_first_chunk(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    slow, fast = await pair(fake, slow_ms=3000)
    instance = await sidecar(hedged_route(slow, fast, "{delay: 150ms}"))
    async with client_for(instance) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "stream it"}], stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = [chunk async for chunk in raw.parse()]
    assert raw.headers["x-llmroute-hedged"] == "fast" and {c.model for c in chunks} == {"m-fast"}
    assert chunks[-1].usage is not None  # the whole answer, to its end
    records = instance.usage.drain()
    assert sorted(r.outcome for r in records) == ["hedge_lost", "ok"]
    assert reserved(instance) == 0


async def test_when_both_fail_the_request_fails_and_nothing_stays_reserved(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    slow, fast = await pair(fake, slow_ms=400)
    slow.set_faults(FaultSpec(latency_ms=400, status=500))
    fast.set_faults(FaultSpec(status=500))
    instance = await sidecar(hedged_route(slow, fast, "{delay: 100ms}"))
    with pytest.raises(openai.APIStatusError) as failed:
        await ask(instance)
    assert failed.value.status_code == 503
    assert reserved(instance) == 0
    assert (
        instance.metrics.registry.get_sample_value(
            "llmroute_hedges_total", {"model": "chat", "outcome": "failed"}
        )
        == 1.0
    )

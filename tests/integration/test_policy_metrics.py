"""Gauges and counters that only move on their own paths: requests in flight, configs rejected, and
the allowance a sidecar holds, scraped from a real sidecar's /metrics."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

BUDGET = """---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {name: team, namespace: demo}
spec:
  scope: {routes: [test-route]}
  period: {type: daily}
  limits: {hard: "10"}
"""


async def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_in_flight_allowance_and_rejections_are_reported(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    provider = await fake("openai-compatible")
    resources = route_yaml(
        [{"name": "local", "provider": "openai-compatible", "model": "m", "endpoint": provider.base_url}]
    )
    instance = await sidecar(resources + BUDGET)
    client = client_for(instance)
    await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], max_tokens=10
    )
    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], max_tokens=10, stream=True
    )
    async for _ in stream:
        pass
    samples = await _samples(instance.admin_port)
    assert samples[("llmroute_requests_in_flight", ())] == 0.0  # went up and came back down
    held = samples[("llmroute_budget_allowance_available_usd", (("budget", "team"),))]
    assert 0 < held <= 10.0
    assert samples[("llmroute_budget_events_total", (("budget", "team"), ("event", "topup")))] >= 1
    assert ("llmroute_budget_events_total", (("budget", "team"), ("event", "settle"))) not in samples

    # A broken config file is rejected, counted, and the last good config keeps serving.
    assert instance.source is not None
    instance.source.path.write_text(resources.replace("backends: [local]", "backends: [missing]"))
    assert instance.source.load()  # still a config active: the old one
    samples = await _samples(instance.admin_port)
    assert samples[("llmroute_config_rejected_total", ())] == 1.0
    answer = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    await client.close()

"""Failover and health end to end: the official OpenAI SDK as the app, fake OpenAI-protocol providers
with fault knobs upstream, the sidecar's breakers, Retry-After holds and retry budget in between.

1. A primary that flaps with 30% 5xx still gives >= 99.9% success over 2,000 requests, and retries
   on it stay within the route's retry budget.
2. A 429 storm with Retry-After: the retry on the same backend waits at least Retry-After, other
   requests skip the held backend and fall back, and the breaker does not count 429s.
3. A dead backend opens its breaker, receives nothing during the cooldown, and a half-open probe
   brings it back once it recovers.
"""

from __future__ import annotations

import asyncio
import logging
import time

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.timeout(60)
log = logging.getLogger(__name__)


async def _pair(
    fake: FakeFactory, sidecar: SidecarFactory, resilience: str
) -> tuple[FakeProvider, FakeProvider, Sidecar]:
    primary = await fake("openai", api_key="sk-primary")
    secondary = await fake("openai-compatible")
    resources = route_yaml(
        [
            {
                "name": "primary",
                "provider": "openai",
                "model": "gpt-4o",
                "endpoint": primary.base_url,
                "key": "sk-primary",
            },
            {
                "name": "secondary",
                "provider": "openai-compatible",
                "model": "llama-3",
                "endpoint": secondary.base_url,
            },
        ],
        extra_spec="  resilience:\n" + resilience,
    )
    return primary, secondary, await sidecar(resources)


def _metric(instance: Sidecar, name: str, **labels: str) -> float:
    return instance.metrics.registry.get_sample_value(name, labels) or 0.0


async def _ask(client: openai.AsyncOpenAI, text: str = "hi") -> tuple[str, int]:
    """One chat completion; returns the serving backend and the attempts the sidecar made."""
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": text}], max_tokens=8
    )
    raw.parse()
    return raw.headers["x-llmroute-backend"], int(raw.headers["x-llmroute-attempts"])


async def test_flapping_primary_keeps_success_with_retries_within_budget(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    total, concurrency = 2000, 16
    primary, secondary, instance = await _pair(
        fake,
        sidecar,
        "    timeout: {perAttempt: 2s, total: 10s}\n"
        "    retries: {attempts: 2, backoff: {base: 5ms, max: 20ms}, budgetPercent: 20}\n"
        # 30% failures must not eject the primary: this test is about retries and fallback.
        "    circuitBreaker: {consecutiveFailures: 50, failureRate: 0.5, minRequests: 50}\n",
    )
    primary.set_faults(fail_rate=0.3, failure="status=503", seed=1)
    client = client_for(instance)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    served: dict[str, int] = {}
    failures: list[BaseException] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                backend, _ = await _ask(client, f"request {i}")
            except openai.APIError as exc:
                failures.append(exc)
            else:
                served[backend] = served.get(backend, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started

    success = sum(served.values()) / total
    retries = len(primary.requests) - total  # every request tries the primary first
    rejected = sum(1 for r in primary.requests if r.faults.status == 503)
    log.warning(
        "flapping primary: %d requests in %.1fs, success %.2f%%, served %s, primary 503s %d, "
        "retries %d (%.1f%% of requests), fallbacks %d, budget refusals %d",
        total,
        elapsed,
        success * 100,
        served,
        rejected,
        retries,
        retries / total * 100,
        len(secondary.requests),
        _metric(instance, "llmroute_retry_budget_exhausted_total", route="test-route"),
    )
    assert success >= 0.999, failures[:3]
    assert rejected > 0.25 * len(primary.requests), "the primary really flapped"
    # Retries: at most 20% of requests in any 10 s window, plus a floor of 10 per window.
    windows = int(elapsed // 10) + 1
    assert retries <= 0.2 * total + 10 * windows
    assert _metric(instance, "llmroute_retries_total", route="test-route", backend="primary") == retries
    assert _metric(instance, "llmroute_retry_budget_exhausted_total", route="test-route") > 0
    assert len(secondary.requests) == served.get("secondary", 0), "fallbacks carried the rest"
    assert _metric(instance, "llmroute_ejections_total", route="test-route", backend="primary") == 0


async def test_429_storm_with_retry_after_is_honoured_and_traffic_falls_back(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    primary, secondary, instance = await _pair(
        fake,
        sidecar,
        "    timeout: {perAttempt: 2s, total: 10s}\n"
        "    retries: {attempts: 1, backoff: {base: 5ms, max: 20ms}}\n"
        "    circuitBreaker: {consecutiveFailures: 2, cooldown: 30s}\n",
    )
    primary.set_faults("status=429,retry_after=0.8")
    client = client_for(instance)

    # The first request meets the storm: one retry on the primary, after Retry-After, then fallback.
    backend, attempts = await _ask(client)
    assert (backend, attempts) == ("secondary", 3)
    first, retry = primary.requests
    assert retry.received_at - first.received_at >= 0.8

    # While the primary's Retry-After holds, requests go straight to the secondary.
    held_since = time.time()
    for _ in range(5):
        assert await _ask(client) == ("secondary", 1)
    assert time.time() - held_since < 0.8, "the test ran inside the hold"
    assert len(primary.requests) == 2

    # When the hold is over the primary is asked again (a 429 is not ejection: no breaker opened).
    await asyncio.sleep(0.85)
    assert (await _ask(client))[0] == "secondary"
    assert len(primary.requests) == 4
    labels = {"route": "test-route", "backend": "primary"}
    assert _metric(instance, "llmroute_circuit_breaker_state", state="closed", **labels) == 1
    assert _metric(instance, "llmroute_backend_throttled_total", **labels) >= 2

    # The storm ends: traffic returns to the primary.
    primary.set_faults(None)
    await asyncio.sleep(0.85)
    assert await _ask(client) == ("primary", 1)
    assert len(secondary.requests) == 7


async def test_breaker_ejects_a_dead_backend_and_a_probe_restores_it(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    primary, _, instance = await _pair(
        fake,
        sidecar,
        "    timeout: {perAttempt: 2s, total: 10s}\n"
        "    retries: {attempts: 1, backoff: {base: 5ms, max: 20ms}}\n"
        "    circuitBreaker: {consecutiveFailures: 3, failureRate: 0, cooldown: 2s, maxEjectedPercent: 50}\n",
    )
    primary.set_faults("status=500")
    client = client_for(instance)
    labels = {"route": "test-route", "backend": "primary"}

    # Two requests: three failures in a row on the primary open its breaker.
    assert await _ask(client) == ("secondary", 3)
    assert (await _ask(client))[0] == "secondary"
    opened = time.monotonic()
    assert len(primary.requests) == 3
    assert _metric(instance, "llmroute_circuit_breaker_state", state="open", **labels) == 1
    assert _metric(instance, "llmroute_ejections_total", **labels) == 1

    # During the cooldown the dead primary receives nothing.
    for _ in range(10):
        assert await _ask(client) == ("secondary", 1)
        await asyncio.sleep(0.03)
    assert len(primary.requests) == 3
    assert time.monotonic() - opened < 2.0

    # It recovers; after the cooldown one request probes it (half-open) and closes the breaker.
    primary.set_faults(None)
    await asyncio.sleep(max(0.0, opened + 2.05 - time.monotonic()))
    assert await _ask(client) == ("primary", 1)
    assert _metric(instance, "llmroute_circuit_breaker_state", state="closed", **labels) == 1
    for state in ("open", "half_open", "closed"):
        assert _metric(instance, "llmroute_circuit_breaker_transitions_total", state=state, **labels) == 1
    assert [await _ask(client) for _ in range(3)] == [("primary", 1)] * 3

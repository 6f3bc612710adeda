"""Load control end to end, with the official OpenAI SDK as the app and a slow fake provider:
``maxConcurrency`` holds at the provider, a burst past the queue gets quick 429s, premium requests
overtake standard ones in the queue, a stream holds its slot until it ends, and identical requests
with one ``Idempotency-Key`` make a single upstream call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.load import LoadSettings
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.timeout(60)

LATENCY_S = 0.3


async def _limited(
    fake: FakeFactory, sidecar: SidecarFactory, max_concurrency: int, **settings: object
) -> tuple[FakeProvider, Sidecar]:
    provider = await fake("openai")
    resources = route_yaml(
        [{"name": "slow", "provider": "openai", "model": "gpt-4o", "endpoint": provider.base_url}],
        extra_spec="  resilience:\n    timeout: {perAttempt: 5s, total: 10s}\n    retries: {attempts: 0}",
    )
    resources = resources.replace("    pricing:", f"    maxConcurrency: {max_concurrency}\n    pricing:", 1)
    provider.set_faults(f"latency_ms={int(LATENCY_S * 1000)}")
    return provider, await sidecar(resources, **settings)


async def _ask(client: openai.AsyncOpenAI, text: str, extra_headers: dict[str, str] | None = None) -> Any:
    """A non-streaming chat call; the raw response (headers too)."""
    return await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": text}], extra_headers=extra_headers
    )


async def test_max_concurrency_holds_at_the_provider(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _limited(fake, sidecar, max_concurrency=2)
    client = client_for(instance)
    # 2 slots + a queue of 4 (2 x maxConcurrency): all 6 are served, never more than 2 at once.
    answers = await asyncio.gather(*(_ask(client, f"q{i}") for i in range(6)))
    assert all(a.parse().choices[0].message.content for a in answers)
    arrivals = sorted(r.received_at for r in provider.requests)
    assert len(arrivals) == 6
    # Each request is held LATENCY_S at the fake, so with at most 2 in flight the (i+2)-th can only
    # arrive once the i-th has finished.
    gaps = [arrivals[i + 2] - arrivals[i] for i in range(len(arrivals) - 2)]
    assert min(gaps) >= LATENCY_S * 0.9, gaps
    assert [a.headers["x-llmroute-attempts"] for a in answers] == ["1"] * 6  # queueing is no attempt


async def test_burst_beyond_the_queue_gets_fast_429s(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    # A queue of 1 x maxConcurrency (--queue-factor 1): 2 in flight + 2 queued are served.
    provider, instance = await _limited(fake, sidecar, max_concurrency=2, load=LoadSettings(queue_factor=1))
    latency = 0.5
    provider.set_faults(f"latency_ms={int(latency * 1000)}")
    client = client_for(instance)
    started = time.monotonic()
    refused: list[tuple[float, openai.RateLimitError]] = []

    async def one(i: int) -> str:
        try:
            await _ask(client, f"burst {i}")
        except openai.RateLimitError as exc:
            refused.append((time.monotonic() - started, exc))
            return "429"
        return "ok"

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert results.count("ok") == 4 and results.count("429") == 6
    assert max(after for after, _ in refused) < latency  # refused before the first answer came back
    for _, exc in refused:
        assert exc.code == "overloaded" and "concurrency limit" in exc.message
        assert int(exc.response.headers["retry-after"]) >= 1
    assert len(provider.requests) == 4
    metrics = await _metrics(instance)
    assert (
        'llmroute_backend_queue_rejections_total{backend="slow",priority="standard",reason="queue_full"} 6.0'
        in metrics
    )
    assert 'llmroute_backend_queue_wait_seconds_count{backend="slow",priority="standard"} 2.0' in metrics
    assert 'llmroute_backend_in_flight{backend="slow"} 0.0' in metrics


async def test_premium_overtakes_standard_in_the_queue(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _limited(fake, sidecar, max_concurrency=1)
    client = client_for(instance)
    tasks = [asyncio.create_task(_ask(client, "first"))]
    await asyncio.sleep(0.05)  # "first" holds the only slot
    tasks.append(asyncio.create_task(_ask(client, "standard")))
    await asyncio.sleep(0.05)  # "standard" queues first...
    tasks.append(asyncio.create_task(_ask(client, "premium", extra_headers={"x-llmroute-tier": "premium"})))
    await asyncio.gather(*tasks)
    order = [r.json()["messages"][-1]["content"] for r in provider.requests]
    assert order == ["first", "premium", "standard"]  # ...but premium goes upstream before it


async def test_a_stream_holds_its_slot_until_it_ends(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _limited(fake, sidecar, max_concurrency=1)
    provider.set_faults("slow_stream_ms=100")
    client = client_for(instance)
    snapshot = instance.store.current
    assert snapshot is not None
    limiter = instance.service.limits.limiter(snapshot.models["chat"].backends[0])
    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "a b c d"}], stream=True
    )
    chunks = 0
    async for _ in stream:
        chunks += 1
        assert limiter.in_flight == 1
    assert chunks > 2
    await asyncio.sleep(0.05)
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_identical_requests_with_one_idempotency_key_share_one_call(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    provider, instance = await _limited(fake, sidecar, max_concurrency=8)
    client = client_for(instance)
    key = {"Idempotency-Key": "order-42"}
    answers = await asyncio.gather(*(_ask(client, "same question", extra_headers=key) for _ in range(5)))
    assert len(provider.requests) == 1
    bodies = [a.parse().model_dump() for a in answers]
    assert all(b == bodies[0] for b in bodies)
    assert sorted(a.headers.get("x-llmroute-coalesced", "false") for a in answers) == ["false"] + ["true"] * 4
    metrics = await _metrics(instance)
    assert "llmroute_coalesced_requests_total 4.0" in metrics
    # The usage of the one call is recorded once.
    assert (
        'llmroute_requests_total{backend="slow",model="chat",outcome="ok",provider="openai"} 1.0' in metrics
    )
    # Nothing is cached: the same key after the call ended calls upstream again.
    await _ask(client, "same question", extra_headers=key)
    assert len(provider.requests) == 2


async def test_same_key_with_another_body_is_refused(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _limited(fake, sidecar, max_concurrency=8)
    client = client_for(instance)
    key = {"Idempotency-Key": "order-43"}
    first = asyncio.create_task(_ask(client, "one thing", extra_headers=key))
    await asyncio.sleep(0.1)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await _ask(client, "another thing", extra_headers=key)
    assert caught.value.code == "idempotency_key_reused"
    assert (await first).parse().choices[0].message.content
    assert len(provider.requests) == 1


async def _metrics(instance: Sidecar) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{instance.admin_port}/metrics") as response,
    ):
        return await response.text()

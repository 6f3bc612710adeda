"""The response cache of a standalone sidecar, through the official OpenAI SDK: an exact hit costs
nothing and calls no provider, is replayed as a stream to a streaming request, and is skipped on
``x-llmroute-no-cache``; a semantic hit answers a near-identical prompt (embeddings by an
openai-compatible fake), never a different one; with Redis two sidecars share hits, and a stopped
Redis only turns the shared tier off.

The fakes' embeddings (``llmroute_fakes/embeddings.py``) hash the lower-cased words of a text, so
casing, whitespace and punctuation do not change a vector at all, a prompt with one extra word is
close (cosine 7/sqrt(56) = 0.935 for the pair below), and prompts with no word in common are far.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import openai
import pytest

from llmroute_fakes.embeddings import embed
from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar
from tests.redis_support import RedisServer

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.timeout(20)

PRICED = "pricing: {inputPerMillion: 1000, outputPerMillion: 1000}"
EXACT = "  cache:\n    exact: {ttl: 60s}"
EMBEDDER = "capabilities: {chat: false, embeddings: true}\npricing: {inputPerMillion: 0, outputPerMillion: 0}"
SEMANTIC = "  cache:\n    semantic: {threshold: 0.9, embeddingBackend: emb, ttl: 60s}"

QUESTION = "What is the capital of France?"
NEAR = "What is the capital city of France?"  # one word more
SAME_WORDS = "  what IS the capital   of france  "  # other casing and whitespace: the same words
OTHER = "Tell me a joke about penguins please"


def cache_yaml(backends: Sequence[tuple[str, FakeProvider, str]], *, chat: str, spec: str) -> str:
    """An LLMRoute ``cached`` in namespace ``demo``: model ``chat`` served by ``chat`` (backend
    names, YAML list), backends on openai-compatible fakes with extra YAML lines, no retries, then
    ``spec``."""
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        "metadata: {name: cached, namespace: demo}",
        "spec:",
        "  models:",
        "  - name: chat",
        f"    backends: {chat}",
        "  backends:",
    ]
    for name, provider, extra in backends:
        model = "text-embedding-3-small" if name == "emb" else f"model-{name}"
        lines += [
            f"  - name: {name}",
            "    provider: openai-compatible",
            f"    model: {model}",
            f"    endpoint: {provider.base_url}",
            *(f"    {line}" for line in extra.strip().splitlines()),
        ]
    lines.append(
        "  resilience:\n    timeout: {perAttempt: 2s, total: 5s}\n"
        "    retries: {attempts: 0, backoff: {base: 5ms, max: 10ms}}"
    )
    lines.append(spec.rstrip())
    return "\n".join(lines) + "\n"


async def _ask(
    instance: Sidecar, text: str = QUESTION, *, headers: dict[str, str] | None = None, **extra: Any
) -> Any:
    async with client_for(instance) as client:
        return await client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": text}],
            max_tokens=50,
            extra_headers=headers or {},
            **extra,
        )


def _content(raw: Any) -> str:
    return raw.parse().choices[0].message.content or ""


async def _exact_sidecar(
    fake: FakeFactory, sidecar: SidecarFactory, **settings: Any
) -> tuple[FakeProvider, Sidecar]:
    provider = await fake("openai-compatible")
    instance = await sidecar(cache_yaml([("llm", provider, PRICED)], chat="[llm]", spec=EXACT), **settings)
    return provider, instance


async def test_an_exact_hit_costs_nothing_and_calls_no_provider(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    provider, instance = await _exact_sidecar(fake, sidecar)
    first = await _ask(instance)
    assert first.headers["x-llmroute-cache"] == "miss"
    assert float(first.headers["x-llmroute-cost-usd"]) > 0
    assert len(provider.requests) == 1
    second = await _ask(instance)
    assert second.headers["x-llmroute-cache"] == "hit"
    assert float(second.headers["x-llmroute-cost-usd"]) == 0.0
    assert second.headers["x-llmroute-attempts"] == "0"
    assert _content(second) == _content(first)
    assert QUESTION in _content(second)
    assert len(provider.requests) == 1, "the provider was not called again"
    records = instance.usage.drain()
    assert [(r.cache, r.cost_micro_usd > 0, r.backend) for r in records] == [
        ("miss", True, "llm"),
        ("hit", False, ""),
    ]
    # A different prompt, or other sampling settings, is another key.
    assert (await _ask(instance, "another question")).headers["x-llmroute-cache"] == "miss"
    assert (await _ask(instance, temperature=0.3)).headers["x-llmroute-cache"] == "miss"
    assert len(provider.requests) == 3


async def test_a_hit_is_replayed_as_a_stream(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _exact_sidecar(fake, sidecar)
    answer = _content(await _ask(instance))
    async with client_for(instance) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert raw.headers["x-llmroute-cache"] == "hit"
        chunks = [chunk async for chunk in raw.parse()]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len(provider.requests) == 1, "the stream came from the cache"


async def test_a_streamed_answer_is_cached_too(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _exact_sidecar(fake, sidecar)
    async with client_for(instance) as client:
        stream = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": QUESTION}], max_tokens=50, stream=True
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    hit = await _ask(instance)
    assert hit.headers["x-llmroute-cache"] == "hit"
    assert _content(hit) == streamed
    assert len(provider.requests) == 1


async def test_the_no_cache_header_bypasses_the_cache(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _exact_sidecar(fake, sidecar)
    await _ask(instance)
    bypass = await _ask(instance, headers={"x-llmroute-no-cache": "1"})
    assert bypass.headers["x-llmroute-cache"] == "bypass"
    assert float(bypass.headers["x-llmroute-cost-usd"]) > 0
    assert len(provider.requests) == 2
    # The cached answer is still there for requests without the header.
    assert (await _ask(instance)).headers["x-llmroute-cache"] == "hit"
    assert len(provider.requests) == 2


def _cosine(a: str, b: str) -> float:
    x, y = embed(a, 1536), embed(b, 1536)
    return sum(p * q for p, q in zip(x, y, strict=True)) / math.hypot(*x) / math.hypot(*y)


async def test_a_semantic_hit_answers_a_near_identical_prompt(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    # The premise, from the fake's own embedding function.
    assert 0.9 < _cosine(QUESTION, NEAR) < 0.99
    assert _cosine(QUESTION, SAME_WORDS) == pytest.approx(1.0)
    assert _cosine(QUESTION, OTHER) < 0.5
    llm, emb = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(
        cache_yaml([("llm", llm, PRICED), ("emb", emb, EMBEDDER)], chat="[llm]", spec=SEMANTIC)
    )
    first = await _ask(instance, QUESTION, temperature=0)
    assert first.headers["x-llmroute-cache"] == "miss"
    assert len(llm.requests) == 1 and len(emb.requests) == 1
    assert emb.requests[0].path.endswith("/embeddings")

    near = await _ask(instance, NEAR, temperature=0)
    assert near.headers["x-llmroute-cache"] == "semantic"
    assert float(near.headers["x-llmroute-cost-usd"]) == 0.0
    assert _content(near) == _content(first), "the cached answer to the similar question"
    same = await _ask(instance, SAME_WORDS, temperature=0)
    assert same.headers["x-llmroute-cache"] == "semantic"
    assert len(llm.requests) == 1, "both were answered from the cache"

    other = await _ask(instance, OTHER, temperature=0)
    assert other.headers["x-llmroute-cache"] == "miss"
    assert OTHER[:20] in _content(other)
    assert len(llm.requests) == 2
    assert len(emb.requests) == 4, "one embedding per lookup"


async def test_the_semantic_cache_only_serves_deterministic_requests(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    llm, emb = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(
        cache_yaml([("llm", llm, PRICED), ("emb", emb, EMBEDDER)], chat="[llm]", spec=SEMANTIC)
    )
    await _ask(instance, QUESTION, temperature=0)
    sampled = await _ask(instance, NEAR, temperature=0.8)
    assert sampled.headers["x-llmroute-cache"] == "miss"
    assert len(llm.requests) == 2
    assert len(emb.requests) == 1, "a sampled request is not even embedded"


async def test_two_sidecars_on_one_redis_share_exact_hits(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    provider = await fake("openai-compatible")
    resources = cache_yaml([("llm", provider, PRICED)], chat="[llm]", spec=EXACT)
    a = await sidecar(resources, redis_url=redis_url)
    b = await sidecar(resources, redis_url=redis_url)
    first = await _ask(a)
    assert first.headers["x-llmroute-cache"] == "miss"
    shared = await _ask(b)
    assert shared.headers["x-llmroute-cache"] == "hit"
    assert _content(shared) == _content(first)
    assert float(shared.headers["x-llmroute-cost-usd"]) == 0.0
    assert len(provider.requests) == 1
    # A tenant is a partition of its own: its first request misses, even on the shared tier.
    tenant = await _ask(b, headers={"x-llmroute-tenant": "acme"})
    assert tenant.headers["x-llmroute-cache"] == "miss"
    assert len(provider.requests) == 2


async def test_a_stopped_redis_turns_the_shared_cache_off_and_requests_still_succeed(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str, redis_server: RedisServer
) -> None:
    provider = await fake("openai-compatible")
    resources = cache_yaml([("llm", provider, PRICED)], chat="[llm]", spec=EXACT)
    a = await sidecar(resources, redis_url=redis_url)
    b = await sidecar(resources, redis_url=redis_url)
    await _ask(a, "warm up")
    assert (await _ask(b, "warm up")).headers["x-llmroute-cache"] == "hit"
    redis_server.stop()
    try:
        started = time.monotonic()
        during = await _ask(a, "asked while Redis is down")
        assert during.headers["x-llmroute-cache"] == "miss"
        assert "asked while Redis is down" in _content(during)
        # Not shared: b asks the provider itself.
        other = await _ask(b, "asked while Redis is down")
        assert other.headers["x-llmroute-cache"] == "miss"
        assert len(provider.requests) == 3
        for i in range(5):
            assert (await _ask(b, f"more {i}")).headers["x-llmroute-cache"] == "miss"
        assert time.monotonic() - started < 5, "nothing waits on the dead Redis"
        assert not a.policies.cache.redis_up and not b.policies.cache.redis_up
    finally:
        redis_server.start()
    # Back: after the cache's backoff the shared tier is used again.
    deadline = time.monotonic() + 8
    attempt = 0
    while True:
        attempt += 1
        text = f"after the restart {attempt}"
        await _ask(a, text)
        if (await _ask(b, text)).headers["x-llmroute-cache"] == "hit":
            break
        assert time.monotonic() < deadline, "the shared cache did not come back"
        await asyncio.sleep(0.25)


async def test_an_error_is_never_cached(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider, instance = await _exact_sidecar(fake, sidecar)
    provider.queue_faults("status=503")
    with pytest.raises(openai.InternalServerError):
        await _ask(instance)
    ok = await _ask(instance)
    assert ok.headers["x-llmroute-cache"] == "miss"
    assert (await _ask(instance)).headers["x-llmroute-cache"] == "hit"
    assert len(provider.requests) == 2, "the failed attempt, then the one success"

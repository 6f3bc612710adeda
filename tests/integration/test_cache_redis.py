"""The response cache shared through a real Redis (Debian's redis-server, ``tests/conftest.py``): two
:class:`ResponseCache` instances stand for two sidecars. They share exact and semantic hits, TTLs
expire in Redis, and a stopped Redis turns the shared tier off without slowing requests, until it
comes back."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio

from llmroute_sidecar.cache import CacheLimits, ResponseCache, exact_key
from tests.redis_support import RedisServer

ANSWER: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
LIMITS = CacheLimits(refresh_interval=0.0, redis_backoff=0.5)
Factory = Callable[..., ResponseCache]


def key(question: str) -> Any:
    body = {"model": "chat", "messages": [{"role": "user", "content": question}], "temperature": 0}
    return exact_key(body, namespace="demo", tenant="acme", route="chat")


def at_angle(degrees: float, dim: int = 384) -> list[float]:
    vector = [0.0] * dim
    vector[0], vector[1] = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return vector


@pytest.fixture
async def sidecars(redis_url: str) -> AsyncIterator[Factory]:
    clients: list[redis.asyncio.Redis] = []

    def make(**kwargs: Any) -> ResponseCache:
        # Exactly how the glue makes its client.
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
        clients.append(client)
        return ResponseCache(redis=client, limits=kwargs.pop("limits", LIMITS), **kwargs)

    yield make
    for client in clients:
        await client.aclose()


async def test_two_sidecars_share_exact_hits(sidecars: Factory) -> None:
    events: list[str] = []
    a, b = sidecars(), sidecars(on_event=events.append)
    assert await b.get(key("capital?")) is None
    await a.put(key("capital?"), ANSWER, ttl=60)
    assert await b.get(key("capital?")) == ANSWER
    assert await b.get(key("capital?")) == ANSWER  # now from b's near tier
    assert events == ["miss", "hit", "hit"]
    assert a.redis_up
    assert b.redis_up


async def test_two_sidecars_share_semantic_hits(sidecars: Factory) -> None:
    a, b = sidecars(), sidecars()
    assert await b.get_similar("p", at_angle(0), threshold=0.95) is None  # b mirrors the empty stream
    await a.put_similar("p", at_angle(0), ANSWER, ttl=60)
    await a.put_similar("p", at_angle(45), {**ANSWER, "id": "c2"}, ttl=60)
    hit = await b.get_similar("p", at_angle(5), threshold=0.95)
    assert hit is not None
    assert hit[0] == ANSWER
    assert hit[1] > 0.99
    far = await b.get_similar("p", at_angle(40), threshold=0.95)
    assert far is not None
    assert far[0]["id"] == "c2"
    assert await b.get_similar("p", at_angle(22), threshold=0.95) is None
    assert await b.get_similar("other", at_angle(0), threshold=0.95) is None
    # a's own entry is found at once, without waiting for the stream, and appears once only.
    assert await a.get_similar("p", at_angle(0), threshold=0.999) is not None


async def test_semantic_mirror_refreshes_at_most_every_interval(sidecars: Factory) -> None:
    a, b = sidecars(), sidecars(limits=CacheLimits(refresh_interval=0.3))
    assert await b.get_similar("p", at_angle(0), threshold=0.95) is None
    await a.put_similar("p", at_angle(0), ANSWER, ttl=60)
    assert await b.get_similar("p", at_angle(0), threshold=0.95) is None  # mirror read < 0.3 s ago
    await asyncio.sleep(0.35)
    assert await b.get_similar("p", at_angle(0), threshold=0.95) is not None


async def test_ttl_expires_in_redis(sidecars: Factory, redis_url: str) -> None:
    a, b = sidecars(), sidecars()
    await a.put(key("short"), ANSWER, ttl=0.3)
    await a.put_similar("p", at_angle(0), ANSWER, ttl=0.3)
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        names = sorted(
            n.decode() if isinstance(n, bytes) else n for n in await raw.keys("llmroute:cache:v1:*")
        )
        assert len(names) == 3
        assert names[0].startswith("llmroute:cache:v1:demo/acme/chat:x:")
        assert names[1] == "llmroute:cache:v1:p:s:" + names[1].rsplit(":", 1)[1]
        assert names[2] == "llmroute:cache:v1:p:vec"
        assert 0 < await raw.pttl(names[0]) <= 300
        await asyncio.sleep(0.4)
        assert await raw.keys("llmroute:cache:v1:*") == []
    finally:
        await raw.aclose()
    assert await b.get(key("short")) is None
    assert await b.get_similar("p", at_angle(0), threshold=0.9) is None


async def test_redis_down_is_cache_off_fast_and_recovers(
    sidecars: Factory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    cache = sidecars(on_event=events.append, limits=CacheLimits(refresh_interval=0.0, redis_backoff=1.0))
    await cache.put(key("before"), ANSWER, ttl=60)
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="llmroute_sidecar.cache.redis_store")

    started = time.perf_counter()
    assert await cache.get(key("first")) is None  # the failure that opens the outage
    first = time.perf_counter() - started
    assert not cache.redis_up
    slowest = 0.0
    for i in range(50):
        started = time.perf_counter()
        assert await cache.get(key(f"q{i}")) is None
        await cache.put(key(f"q{i}"), ANSWER, ttl=60)  # kept in the near tier only
        assert await cache.get_similar("p", at_angle(i), threshold=0.9) is None
        await cache.put_similar("p2", at_angle(i), ANSWER, ttl=60)
        slowest = max(slowest, time.perf_counter() - started)
    assert first < 0.5
    assert slowest < 0.05, f"a call took {slowest * 1000:.1f} ms with Redis down"
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert await cache.get(key("before")) == ANSWER  # the near tier still answers

    redis_server.start()
    other = sidecars()
    await other.put(key("after"), ANSWER, ttl=60)
    deadline = time.monotonic() + 5
    while await cache.get(key("after")) is None:
        assert time.monotonic() < deadline, "the cache never went back to Redis"
        await asyncio.sleep(0.1)
    assert cache.redis_up
    assert "redis_recovered" in events
    assert events.count("redis_error") <= 6  # one per backoff window, not one per call

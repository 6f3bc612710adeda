"""Rate limits shared through a real Redis (``llmroute_sidecar.ratelimit``): five limiters standing
for five sidecars of one workload admit exactly the limit between them, token debt is shared, the
script survives ``SCRIPT FLUSH``, idle keys expire, and a Redis outage falls back to local buckets
quickly and recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio

from llmroute_sidecar.ratelimit import LimitSpec, RateDecision, RateLimiter
from tests.redis_support import RedisServer

SCOPE = "ns/chat"
Factory = Callable[..., Awaitable[RateLimiter]]


def _client(url: str, timeout: float = 0.25) -> redis.asyncio.Redis:
    # As the glue creates it (0.25 s), unless a test needs room.
    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


# The burst tests check exactness, not latency: 150 admits at once open 150 connections on one event
# loop, which a loaded 2-core machine may not finish within the production 0.3 s, and a timed-out
# call falls back to the local bucket by design. They get room; the outage test keeps the real bounds.
ROOMY = 5.0


@pytest.fixture
async def limiters(redis_url: str) -> AsyncIterator[Factory]:
    made: list[tuple[RateLimiter, redis.asyncio.Redis]] = []

    async def make(wait: float = ROOMY, **kwargs: object) -> RateLimiter:
        client = _client(redis_url, wait)
        kwargs.setdefault("redis_timeout", wait)
        limiter = RateLimiter(redis=client, **kwargs)  # type: ignore[arg-type]
        made.append((limiter, client))
        return limiter

    yield make
    for limiter, client in made:
        await limiter.close()
        await client.aclose()


async def _admit(
    limiter: RateLimiter, limits: list[LimitSpec], user: str = "u", tokens: int = 0
) -> RateDecision:
    return await limiter.admit(scope=SCOPE, limits=limits, user=user, tenant="t", tokens=tokens)


async def _burst(sidecars: list[RateLimiter], limits: list[LimitSpec], each: int, tokens: int = 0) -> int:
    calls = [_admit(s, limits, tokens=tokens) for s in sidecars for _ in range(each)]
    decisions = await asyncio.gather(*calls)
    return sum(d.allowed for d in decisions)


async def test_five_sidecars_admit_exactly_the_limit_between_them(limiters: Factory) -> None:
    sidecars = [await limiters() for _ in range(5)]
    limits = [LimitSpec("route", requests_per_minute=60)]
    assert await _burst(sidecars, limits, each=30) == 60
    assert all(s.redis_up for s in sidecars)
    refused = await _admit(sidecars[0], limits)
    assert not refused.allowed and 0 < refused.retry_after <= 1.0
    assert refused.headers["retry-after"] == "1"
    assert refused.refused_by == "route requestsPerMinute=60"


async def test_five_sidecars_share_token_limits(limiters: Factory) -> None:
    sidecars = [await limiters() for _ in range(5)]
    limits = [LimitSpec("tenant", tokens_per_minute=6000)]
    assert await _burst(sidecars, limits, each=30, tokens=100) == 60


async def test_all_or_nothing_and_shared_debt(limiters: Factory, redis_url: str) -> None:
    a, b = await limiters(), await limiters()
    limits = [LimitSpec("user", requests_per_minute=10), LimitSpec("route", tokens_per_minute=600)]
    assert (await _admit(a, limits, tokens=500)).allowed
    refused = await _admit(b, limits, tokens=200)
    assert not refused.allowed and refused.refused_by == "route tokensPerMinute=600"
    assert refused.headers["x-ratelimit-remaining-requests"] == "9"  # nothing taken by the refusal
    # Sidecar a settles: 900 tokens used instead of 500; sidecar b sees the debt.
    await a.settle(scope=SCOPE, limits=limits, user="u", tenant="t", estimated_tokens=500, actual_tokens=900)
    refused = await _admit(b, limits, tokens=0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(30, abs=0.5)  # 300 of debt at 10 tokens/s
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    # The keys as documented, with an expiry of when they would be full again.
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(await client.keys("llmroute:rl:*"))
        assert keys == ["llmroute:rl:{ns/chat}:0:user=u:req", "llmroute:rl:{ns/chat}:1:route:tok"]
        assert 89_000 < await client.pttl("llmroute:rl:{ns/chat}:1:route:tok") <= 91_000
        assert 0 < await client.pttl("llmroute:rl:{ns/chat}:0:user=u:req") <= 7_000
    finally:
        await client.aclose()


async def test_script_is_sent_again_after_script_flush(limiters: Factory, redis_url: str) -> None:
    limiter = await limiters()
    limits = [LimitSpec("route", requests_per_minute=2)]
    assert (await _admit(limiter, limits)).allowed
    client = _client(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    assert (await _admit(limiter, limits)).allowed
    assert not (await _admit(limiter, limits)).allowed
    assert limiter.redis_up


async def test_outage_falls_back_to_local_quickly_and_recovers(
    limiters: Factory, redis_server: RedisServer, redis_url: str
) -> None:
    limiter = await limiters(wait=0.25, redis_timeout=0.3, redis_retry=0.1, redis_retry_max=0.2)
    limits = [LimitSpec("route", requests_per_minute=3)]
    assert (await _admit(limiter, limits)).allowed
    redis_server.stop()
    try:
        started = time.monotonic()
        first = await _admit(limiter, limits)
        assert time.monotonic() - started < 1.0  # bounded by redis_timeout, whatever the client retries
        assert first.allowed and not limiter.redis_up
        # Local buckets now: the limit holds per sidecar, and no call waits for Redis.
        decisions = []
        for _ in range(5):
            started = time.monotonic()
            decisions.append((await _admit(limiter, limits)).allowed)
            assert time.monotonic() - started < 0.05
        assert decisions == [True, True, False, False, False]
        await limiter.settle(
            scope=SCOPE, limits=limits, user="u", tenant="t", estimated_tokens=0, actual_tokens=5
        )
    finally:
        redis_server.start()
    for _ in range(100):  # the probe retries every 0.2 s at most
        if limiter.redis_up:
            break
        await asyncio.sleep(0.05)
    assert limiter.redis_up
    # Shared again: the (restarted, empty) Redis holds the bucket.
    assert (await _admit(limiter, limits)).allowed
    client = _client(redis_url)
    try:
        assert await client.exists("llmroute:rl:{ns/chat}:0:route:req") == 1
    finally:
        await client.aclose()

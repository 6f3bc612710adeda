"""The rate limiter on in-process buckets (``llmroute_sidecar.ratelimit.limiter``) with an injected
clock: bursts and refill, exact Retry-After, all-or-nothing over a route's limits, debt and refunds
after ``settle``, identities, headers, the Redis outage switch, and a property: however requests,
settlements and time interleave, no window admits more than capacity + rate x window."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from llmroute_sidecar.ratelimit import LimitSpec, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


SCOPE = "ns/chat"


async def _admit(
    limiter: RateLimiter, limits: list[LimitSpec], user: str = "u", tenant: str = "t", tokens: int = 0
) -> Any:
    return await limiter.admit(scope=SCOPE, limits=limits, user=user, tenant=tenant, tokens=tokens)


async def test_no_limits_admit_everything_without_headers() -> None:
    limiter = RateLimiter()
    decision = await _admit(limiter, [])
    assert decision.allowed and decision.headers == {} and decision.retry_after == 0
    assert not limiter.redis_up


async def test_burst_then_refill_with_exact_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = [LimitSpec("route", requests_per_minute=60)]
    admitted = [(await _admit(limiter, limits)).allowed for _ in range(60)]
    assert all(admitted)
    refused = await _admit(limiter, limits)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1.0)
    assert refused.refused_by == "route requestsPerMinute=60"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.now += 0.25
    assert (await _admit(limiter, limits)).retry_after == pytest.approx(0.75)
    clock.now += 0.75
    assert (await _admit(limiter, limits)).allowed
    assert not (await _admit(limiter, limits)).allowed


async def test_successful_answers_carry_headers_of_both_kinds() -> None:
    limiter = RateLimiter(clock=Clock())
    limits = [LimitSpec("user", requests_per_minute=10, tokens_per_minute=1000)]
    decision = await _admit(limiter, limits, tokens=250)
    assert decision.allowed
    assert decision.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750",
        "x-ratelimit-reset-tokens": "15s",
    }


async def test_a_refusal_by_one_limit_takes_nothing_from_the_others() -> None:
    limiter = RateLimiter(clock=Clock())
    limits = [
        LimitSpec("user", requests_per_minute=5),
        LimitSpec("tenant", tokens_per_minute=1000),
        LimitSpec("route", requests_per_minute=100),
    ]
    assert (await _admit(limiter, limits, tokens=900)).allowed
    refused = await _admit(limiter, limits, tokens=200)
    assert not refused.allowed and refused.refused_by == "tenant tokensPerMinute=1000"
    assert refused.retry_after == pytest.approx(6.0)  # 100 missing at 1000/60 per second
    # Neither the user's nor the route's request bucket was charged by the refusal.
    assert refused.headers["x-ratelimit-remaining-requests"] == "4"
    ok = await _admit(limiter, limits, tokens=100)
    assert ok.allowed and ok.headers["x-ratelimit-remaining-requests"] == "3"
    assert ok.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_retry_after_waits_for_every_refusing_limit() -> None:
    limiter = RateLimiter(clock=Clock())
    limits = [LimitSpec("user", requests_per_minute=1), LimitSpec("route", requests_per_minute=2)]
    assert (await _admit(limiter, limits)).allowed
    refused = await _admit(limiter, limits)
    assert refused.refused_by == "user requestsPerMinute=1" and refused.retry_after == pytest.approx(60)
    assert refused.headers["retry-after"] == "60"


async def test_settle_puts_the_bucket_into_debt_and_refunds_are_capped() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = [LimitSpec("tenant", tokens_per_minute=600)]
    assert (await _admit(limiter, limits, tokens=100)).allowed
    await limiter.settle(
        scope=SCOPE, limits=limits, user="u", tenant="t", estimated_tokens=100, actual_tokens=800
    )
    refused = await _admit(limiter, limits, tokens=10)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(21.0)  # 200 of debt + 10 needed, at 10/s
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 21
    assert (await _admit(limiter, limits, tokens=10)).allowed
    # Used less than estimated: the difference comes back, never beyond capacity.
    await limiter.settle(
        scope=SCOPE, limits=limits, user="u", tenant="t", estimated_tokens=10_000, actual_tokens=0
    )
    decision = await _admit(limiter, limits, tokens=0)
    assert decision.headers["x-ratelimit-remaining-tokens"] == "600"


async def test_users_have_their_own_buckets_and_anonymous_users_share_one() -> None:
    limiter = RateLimiter(clock=Clock())
    limits = [LimitSpec("user", requests_per_minute=1)]
    assert (await _admit(limiter, limits, user="alice")).allowed
    assert not (await _admit(limiter, limits, user="alice")).allowed
    assert (await _admit(limiter, limits, user="bob")).allowed
    assert (await _admit(limiter, limits, user="")).allowed
    assert not (await _admit(limiter, limits, user="")).allowed  # the shared "-" bucket
    assert not (await _admit(limiter, limits, user="-")).allowed
    # Another route has other buckets.
    other = await limiter.admit(scope="ns/other", limits=limits, user="alice", tenant="t", tokens=0)
    assert other.allowed


async def test_limit_spec_validation() -> None:
    with pytest.raises(ValueError, match="key"):
        LimitSpec("org", requests_per_minute=1)
    with pytest.raises(ValueError, match="per minute"):
        LimitSpec("user", requests_per_minute=-1)
    limiter = RateLimiter()
    assert (await _admit(limiter, [LimitSpec("user")])).headers == {}


class _DeadRedis:
    """Stands in for a client whose server is gone: every command fails at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.alive = False

    async def evalsha(self, *args: object) -> list[bytes]:
        self.calls += 1
        if not self.alive:
            raise RedisConnectionError("Connection refused")
        return [b"1", b"59"]

    async def ping(self) -> bool:
        self.calls += 1
        if not self.alive:
            raise RedisConnectionError("Connection refused")
        return True


async def test_a_dead_redis_falls_back_logs_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    dead = _DeadRedis()
    limiter = RateLimiter(redis=cast(Any, dead), redis_retry=0.01, redis_retry_max=0.02)
    limits = [LimitSpec("route", requests_per_minute=2)]
    assert limiter.redis_up
    with caplog.at_level(logging.WARNING, logger="llmroute_sidecar.ratelimit.limiter"):
        results = [(await _admit(limiter, limits)).allowed for _ in range(3)]
    assert results == [True, True, False]  # the local buckets hold the limit meanwhile
    assert not limiter.redis_up
    assert dead.calls == 1  # only the first call went to Redis
    assert len([r for r in caplog.records if "per sidecar" in r.getMessage()]) == 1
    await asyncio.sleep(0.05)  # the probe keeps failing with backoff
    assert not limiter.redis_up and dead.calls >= 2
    dead.alive = True
    for _ in range(50):
        await asyncio.sleep(0.01)
        if limiter.redis_up:
            break
    assert limiter.redis_up
    assert (await _admit(limiter, limits)).allowed  # answered by "Redis" again
    await limiter.close()


async def test_close_stops_the_probe() -> None:
    limiter = RateLimiter(redis=cast(Any, _DeadRedis()), redis_retry=10)
    await _admit(limiter, [LimitSpec("route", requests_per_minute=1)])
    assert not limiter.redis_up
    await limiter.close()


# -- property -------------------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("admit"), st.sampled_from(["a", "b", ""]), st.integers(0, 300)),
    st.tuples(st.just("settle"), st.sampled_from(["a", "b", ""]), st.integers(0, 600)),
    st.tuples(st.just("sleep"), st.floats(0, 5), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(
    rpm=st.integers(1, 30),
    user_rpm=st.integers(0, 20),
    tpm=st.integers(0, 2000),
    ops=st.lists(_op, max_size=120),
)
def test_no_window_admits_more_than_capacity_plus_refill(
    rpm: int, user_rpm: int, tpm: int, ops: list[tuple[str, Any, Any]]
) -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = [LimitSpec("route", requests_per_minute=rpm, tokens_per_minute=tpm)]
    if user_rpm:
        limits.append(LimitSpec("user", requests_per_minute=user_rpm))
    admitted: list[tuple[float, str]] = []
    estimates: list[tuple[str, int]] = []

    async def run() -> None:
        for kind, a, b in ops:
            if kind == "sleep":
                clock.now += a
            elif kind == "admit":
                decision = await _admit(limiter, limits, user=a, tokens=b)
                if decision.allowed:
                    admitted.append((clock.now, a or "-"))
                    estimates.append((a, b))
                else:
                    assert decision.retry_after > 0 and int(decision.headers["retry-after"]) >= 1
            elif estimates:
                user, estimate = estimates.pop(0)
                await limiter.settle(
                    scope=SCOPE,
                    limits=limits,
                    user=user,
                    tenant="t",
                    estimated_tokens=estimate,
                    actual_tokens=b,
                )

    asyncio.run(run())

    def check(times: list[float], capacity: int) -> None:
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                window = times[j] - start
                assert j - i + 1 <= capacity + capacity / 60 * window + 1e-6

    check([t for t, _ in admitted], rpm)
    if user_rpm:
        for user in {u for _, u in admitted}:
            check([t for t, u in admitted if u == user], user_rpm)

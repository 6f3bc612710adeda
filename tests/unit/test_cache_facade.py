"""The in-process :class:`ResponseCache` (exact hits, TTL on an injected clock, what is refused) and
the Redis outage guard (``llmroute_sidecar.cache.redis_store.Outage``)."""

from __future__ import annotations

from typing import Any

from llmroute_sidecar.cache import Outage, ResponseCache, exact_key

BODY = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
KEY = exact_key(BODY, namespace="demo", tenant="acme", route="chat")
ANSWER: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_exact_hit_is_a_fresh_copy_until_the_ttl() -> None:
    clock = Clock()
    events: list[str] = []
    cache = ResponseCache(clock=clock, on_event=events.append)
    assert await cache.get(KEY) is None
    await cache.put(KEY, ANSWER, ttl=600)
    hit = await cache.get(KEY)
    assert hit == ANSWER
    assert hit is not None
    hit["choices"][0]["message"]["content"] = "mutated"
    assert await cache.get(KEY) == ANSWER
    clock.now = 600
    assert await cache.get(KEY) is None
    assert events == ["miss", "store", "hit", "hit", "miss"]
    assert not cache.redis_up
    await cache.close()


async def test_errors_unfinished_answers_and_zero_ttls_are_not_stored() -> None:
    events: list[str] = []
    cache = ResponseCache(on_event=events.append)
    await cache.put(KEY, {"error": {"message": "boom"}}, ttl=60)
    await cache.put(KEY, {**ANSWER, "choices": [{"index": 0, "message": {}, "finish_reason": None}]}, ttl=60)
    await cache.put(KEY, ANSWER, ttl=0)
    assert await cache.get(KEY) is None
    assert events == ["skip", "skip", "skip", "miss"]


async def test_partitions_do_not_share_answers() -> None:
    cache = ResponseCache()
    await cache.put(KEY, ANSWER, ttl=60)
    other = exact_key(BODY, namespace="demo", tenant="other", route="chat")
    assert await cache.get(other) is None


async def test_memory_bound_evicts_and_reports_it() -> None:
    events: list[str] = []
    cache = ResponseCache(memory_bytes=20_000, on_event=events.append)
    for i in range(100):
        body = {**BODY, "seed": i}
        await cache.put(exact_key(body, namespace="n", tenant="t", route="r"), ANSWER, ttl=60)
    assert events.count("evict") > 50
    assert await cache.get(exact_key({**BODY, "seed": 99}, namespace="n", tenant="t", route="r")) is not None
    assert await cache.get(exact_key({**BODY, "seed": 0}, namespace="n", tenant="t", route="r")) is None


def test_outage_backs_off_then_allows_a_retry_and_reports_transitions() -> None:
    clock = Clock()
    events: list[str] = []
    outage = Outage(backoff=2.0, clock=clock, on_event=events.append)
    assert outage.allow()
    outage.failed(ConnectionError("refused"))
    assert not outage.up
    assert not outage.allow()
    clock.now = 1.9
    assert not outage.allow()
    clock.now = 2.0
    assert outage.allow()
    outage.failed(ConnectionError("refused"))
    assert not outage.allow()
    clock.now = 4.0
    outage.succeeded()
    assert outage.up
    assert outage.allow()
    assert events == ["redis_error", "redis_error", "redis_recovered"]

"""Request coalescing (``llmroute_sidecar.load.coalesce``): one call per key and body in flight,
errors shared, a reused key with another body refused, and cancellation that only stops the call
when nobody waits for it any more."""

from __future__ import annotations

import asyncio
import gc

import pytest

from llmroute_sidecar.load import Coalescer, fingerprint
from llmroute_sidecar.openai_api.errors import ApiError


class _Upstream:
    """A slow call that counts how often it ran and whether it was cancelled."""

    def __init__(self, delay: float = 0.02, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0
        self.cancelled = 0

    async def call(self) -> dict[str, int]:
        self.calls += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return {"answer": self.calls}


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_identical_requests_share_one_call() -> None:
    joins: list[int] = []
    coalescer: Coalescer[dict[str, int]] = Coalescer(on_join=lambda: joins.append(1))
    upstream = _Upstream()
    digest = fingerprint({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    results = await asyncio.gather(*(coalescer.run("k", digest, upstream.call) for _ in range(5)))
    assert upstream.calls == 1
    assert [r for r, _ in results] == [{"answer": 1}] * 5
    assert sorted(joined for _, joined in results) == [False, True, True, True, True]
    assert len(joins) == 4
    assert len(coalescer) == 0
    # Not a cache: the same key after the call ended is a new call.
    result, joined = await coalescer.run("k", digest, upstream.call)
    assert upstream.calls == 2 and result == {"answer": 2} and not joined


async def test_other_keys_do_not_share() -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()
    upstream = _Upstream()
    digest = fingerprint({"a": 1})
    await asyncio.gather(
        coalescer.run(("t1", "k"), digest, upstream.call), coalescer.run(("t2", "k"), digest, upstream.call)
    )
    assert upstream.calls == 2


async def test_errors_reach_every_waiter() -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()
    upstream = _Upstream(error=ApiError(503, "no backend", code="no_backend_available"))
    results = await asyncio.gather(
        *(coalescer.run("k", "d", upstream.call) for _ in range(4)), return_exceptions=True
    )
    assert upstream.calls == 1
    assert all(isinstance(r, ApiError) and r.status == 503 for r in results)
    assert len(coalescer) == 0


async def test_same_key_with_another_body_is_refused_while_in_flight() -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()
    upstream = _Upstream()
    first = asyncio.create_task(coalescer.run("k", fingerprint({"q": 1}), upstream.call))
    await _settle()
    with pytest.raises(ApiError) as caught:
        await coalescer.run("k", fingerprint({"q": 2}), upstream.call)
    assert caught.value.status == 422 and caught.value.code == "idempotency_key_reused"
    assert caught.value.payload()["error"]["type"] == "invalid_request_error"
    assert (await first)[0] == {"answer": 1}
    # Once the first call is over, the key is free for any body.
    await coalescer.run("k", fingerprint({"q": 2}), upstream.call)
    assert upstream.calls == 2


def test_fingerprint_ignores_key_order_only() -> None:
    a = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": 0.1}
    b = {"temperature": 0.1, "messages": [{"content": "x", "role": "user"}], "model": "chat"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "temperature": 0.2})


async def test_leader_cancellation_does_not_break_followers() -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()
    upstream = _Upstream(delay=0.05)
    leader = asyncio.create_task(coalescer.run("k", "d", upstream.call))
    await _settle()
    followers = [asyncio.create_task(coalescer.run("k", "d", upstream.call)) for _ in range(3)]
    await _settle()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    results = await asyncio.gather(*followers)
    assert [r for r, _ in results] == [{"answer": 1}] * 3
    assert upstream.calls == 1 and upstream.cancelled == 0


async def test_call_is_cancelled_when_nobody_waits_and_the_key_starts_afresh() -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()
    upstream = _Upstream(delay=0.5)
    waiters = [asyncio.create_task(coalescer.run("k", "d", upstream.call)) for _ in range(3)]
    await _settle()
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await _settle()
    assert upstream.cancelled == 1
    assert len(coalescer) == 0
    upstream.delay = 0.01
    result, joined = await coalescer.run("k", "d", upstream.call)
    assert result == {"answer": 2} and not joined


async def test_failed_call_without_waiters_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()

    async def fail_after_cancel() -> dict[str, int]:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None
        return {}

    task = asyncio.create_task(coalescer.run("k", "d", fail_after_cancel))
    await _settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await _settle()
    del task  # its cancellation traceback refers to the shared call
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert "never retrieved" not in caplog.text

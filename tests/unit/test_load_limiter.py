"""Per-backend concurrency limits (``llmroute_sidecar.load``): limits hold, queues are bounded and
refuse fast, premium goes first, tenants take turns within a class, cancellation never leaks a slot, config swaps re-limit, and the
attempt loop skips saturated backends and answers a quick 429 when all are."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.attempts import AllFailed, Policy, Trace, _attempts
from llmroute_sidecar.config.snapshot import BackendEntry, Snapshot, build_snapshot
from llmroute_sidecar.load import (
    BackendLimiter,
    LoadLimits,
    LoadMetrics,
    LoadSettings,
    Priority,
    Saturated,
    Slot,
    overloaded_error,
    priority_for,
)

# -- helpers ------------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _config(limits: dict[str, int], version: str = "v1") -> pb.RouterConfig:
    route = pb.Route(name="r", namespace="ns")
    for name, limit in limits.items():
        route.backends.append(
            pb.Backend(
                name=name,
                provider=pb.PROVIDER_OPENAI_COMPATIBLE,
                model="m",
                endpoint="http://127.0.0.1:1/v1",
                max_concurrency=limit,
            )
        )
    route.models.append(pb.LogicalModel(name="chat", backends=list(limits)))
    return pb.RouterConfig(version=version, routes=[route])


def _snapshot(limits: dict[str, int], version: str = "v1") -> Snapshot:
    return build_snapshot(_config(limits, version))


def _backends(limits: dict[str, int]) -> list[BackendEntry]:
    return list(_snapshot(limits).models["chat"].backends)


class _Tracker:
    """Counts concurrent holders to prove a limit was never exceeded."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


# -- limiter --------------------------------------------------------------------------------------


async def test_limit_holds_under_concurrency() -> None:
    limiter = BackendLimiter("b", limit=3, queue_size=100)
    tracker = _Tracker()
    rng = random.Random(1)

    async def worker() -> None:
        slot = await limiter.acquire(wait=5)
        tracker.enter()
        try:
            await asyncio.sleep(rng.uniform(0, 0.005))
        finally:
            tracker.leave()
            slot.release()

    await asyncio.gather(*(worker() for _ in range(60)))
    assert tracker.peak == 3
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_unlimited_never_waits_but_counts() -> None:
    limiter = BackendLimiter("b", limit=0)
    slots = [await limiter.acquire(wait=0) for _ in range(50)]
    assert limiter.in_flight == 50
    for slot in slots:
        slot.release()
        slot.release()  # idempotent
    assert limiter.in_flight == 0


async def test_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=2)
    held = await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire(wait=10)) for _ in range(2)]
    await _settle()
    assert limiter.queued == 2
    started = time.monotonic()
    with pytest.raises(Saturated) as caught:
        await limiter.acquire(wait=10)
    assert time.monotonic() - started < 0.05
    assert caught.value.reason == "queue_full" and caught.value.kind == ErrorKind.OVERLOADED
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert "maxConcurrency 1" in caught.value.message
    held.release()
    (await waiters[0]).release()
    (await waiters[1]).release()
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_no_queue_means_immediate_refusal() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=0)
    held = await limiter.acquire()
    with pytest.raises(Saturated, match="queue full"):
        await limiter.acquire(wait=10)
    held.release()


async def test_queue_wait_is_bounded() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=4)
    held = await limiter.acquire()
    started = time.monotonic()
    with pytest.raises(Saturated) as caught:
        await limiter.acquire(wait=0.05)
    assert caught.value.reason == "queue_timeout"
    assert 0.04 < time.monotonic() - started < 0.5
    assert limiter.queued == 0
    with pytest.raises(Saturated):
        await limiter.acquire(wait=0)
    held.release()
    assert limiter.in_flight == 0


async def _served_order(limiter: BackendLimiter, queued: list[tuple[str, Priority]]) -> list[str]:
    """Queue ``queued`` in turn behind one held slot, then free it: the names in the order served."""
    held = await limiter.acquire()
    order: list[str] = []

    async def wait(name: str, priority: Priority) -> None:
        slot = await limiter.acquire(priority, wait=5)
        order.append(name)
        await asyncio.sleep(0)
        slot.release()

    tasks = []
    for name, priority in queued:
        tasks.append(asyncio.create_task(wait(name, priority)))
        await _settle()
    assert limiter.queued == len(queued)
    for priority in Priority:
        assert limiter.queued_for(priority) == sum(1 for _, p in queued if p is priority)
    held.release()
    await asyncio.gather(*tasks)
    return order


async def test_premium_is_served_before_standard_fifo_within_a_class() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=10)
    queued = [("s1", Priority.STANDARD), ("s2", Priority.STANDARD), ("p1", Priority.PREMIUM),
              ("s3", Priority.STANDARD), ("p2", Priority.PREMIUM)]  # fmt: skip
    assert await _served_order(limiter, queued) == ["p1", "p2", "s1", "s2", "s3"]


async def test_premium_displaces_the_newest_standard_waiter_when_full() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=2)
    held = await limiter.acquire()
    s1 = asyncio.create_task(limiter.acquire(Priority.STANDARD, wait=5))
    await _settle()
    s2 = asyncio.create_task(limiter.acquire(Priority.STANDARD, wait=5))
    await _settle()
    p1 = asyncio.create_task(limiter.acquire(Priority.PREMIUM, wait=5))
    await _settle()
    with pytest.raises(Saturated) as caught:
        await s2  # the newest standard waiter makes room
    assert caught.value.reason == "displaced"
    assert not s1.done()
    p2 = asyncio.create_task(limiter.acquire(Priority.PREMIUM, wait=5))
    await _settle()
    with pytest.raises(Saturated, match="displaced"):
        await s1
    # A queue full of premium requests refuses even a premium newcomer.
    with pytest.raises(Saturated, match="queue full"):
        await limiter.acquire(Priority.PREMIUM, wait=5)
    held.release()
    (await p1).release()
    (await p2).release()
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_batch_lines_wait_behind_every_interactive_request() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=10)
    queued = [
        ("b1", Priority.BATCH),
        ("s1", Priority.STANDARD),
        ("b2", Priority.BATCH),
        ("p1", Priority.PREMIUM),
    ]
    assert await _served_order(limiter, queued) == ["p1", "s1", "b1", "b2"]


async def test_a_full_queue_turns_a_batch_line_away_before_an_interactive_request() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=2)
    held = await limiter.acquire()
    s1 = asyncio.create_task(limiter.acquire(Priority.STANDARD, wait=5))
    b1 = asyncio.create_task(limiter.acquire(Priority.BATCH, wait=5))
    await _settle()
    s2 = asyncio.create_task(limiter.acquire(Priority.STANDARD, wait=5))  # displaces the batch line
    await _settle()
    with pytest.raises(Saturated, match="displaced"):
        await b1
    with pytest.raises(Saturated, match="queue full"):  # a batch line displaces nobody
        await limiter.acquire(Priority.BATCH, wait=5)
    p1 = asyncio.create_task(limiter.acquire(Priority.PREMIUM, wait=5))  # then standard goes
    await _settle()
    with pytest.raises(Saturated, match="displaced"):
        await s2
    held.release()
    (await p1).release()
    (await s1).release()
    assert limiter.in_flight == 0 and limiter.queued == 0
    assert [priority_for(t) for t in ("batch", " Batch ", "premium", "", "bulk")] == [
        Priority.BATCH, Priority.BATCH, Priority.PREMIUM, Priority.STANDARD, Priority.STANDARD,
    ]  # fmt: skip


async def test_standard_newcomer_is_refused_when_the_queue_is_full_of_premiums() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=1)
    held = await limiter.acquire()
    p1 = asyncio.create_task(limiter.acquire(Priority.PREMIUM, wait=5))
    await _settle()
    with pytest.raises(Saturated, match="queue full"):
        await limiter.acquire(Priority.STANDARD, wait=5)
    held.release()
    (await p1).release()


async def test_a_free_slot_is_not_taken_past_the_queue() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=4)
    held = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire(wait=5))
    await _settle()
    held.release()  # handed to the waiter directly
    assert limiter.try_acquire() is None
    (await waiter).release()
    assert limiter.in_flight == 0


async def test_cancelled_waiter_frees_its_place() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=1)
    held = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire(wait=5))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.queued == 0
    again = asyncio.create_task(limiter.acquire(wait=5))  # the queue has room again
    await _settle()
    held.release()
    (await again).release()
    assert limiter.in_flight == 0


async def test_waiter_cancelled_just_after_being_granted_passes_the_slot_on() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=4)
    held = await limiter.acquire()
    first = asyncio.create_task(limiter.acquire(wait=5))
    await _settle()
    second = asyncio.create_task(limiter.acquire(wait=5))
    await _settle()
    held.release()  # the slot is now first's, but first has not run yet...
    first.cancel()  # ...and is cancelled before it can
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await asyncio.wait_for(second, 1)
    assert limiter.in_flight == 1
    slot.release()
    assert limiter.in_flight == 0 and limiter.queued == 0


# -- fairness between tenants ---------------------------------------------------------------------


async def _serve_one_at_a_time(limiter: BackendLimiter, queued: list[tuple[str, str, Priority]]) -> list[str]:
    """Queue ``(label, tenant, priority)`` requests in this order behind one held slot, then free
    one slot at a time; the labels in the order they were served."""
    held = await limiter.acquire()
    pending: dict[asyncio.Task[Slot], str] = {}
    for label, tenant, priority in queued:
        pending[asyncio.create_task(limiter.acquire(priority, wait=5, tenant=tenant))] = label
        await _settle()
    order: list[str] = []
    current = held
    while pending:
        current.release()
        await _settle()
        (done,) = [task for task in pending if task.done()]
        order.append(pending.pop(done))
        current = done.result()
    current.release()
    assert limiter.in_flight == 0 and limiter.queued == 0
    return order


async def test_a_single_request_is_not_starved_by_another_tenants_burst() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=60)
    burst = [(f"a{i}", "a", Priority.STANDARD) for i in range(50)]
    order = await _serve_one_at_a_time(limiter, [*burst, ("b0", "b", Priority.STANDARD)])
    assert "b0" in order[:2]
    assert [label for label in order if label != "b0"] == [f"a{i}" for i in range(50)]  # FIFO within a


async def test_tenants_take_turns_fifo_within_each() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=10)
    queued = [(f"{t}{i}", t, Priority.STANDARD) for t in "abc" for i in range(3)]
    order = await _serve_one_at_a_time(limiter, queued)
    assert order == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


async def test_priority_wins_over_fairness() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=10)
    queued = [
        ("a0", "a", Priority.STANDARD),
        ("b0", "b", Priority.STANDARD),
        ("a1", "a", Priority.PREMIUM),
        ("a2", "a", Priority.PREMIUM),
        ("c0", "c", Priority.PREMIUM),
    ]
    order = await _serve_one_at_a_time(limiter, queued)
    assert order == ["a1", "c0", "a2", "a0", "b0"]


async def test_untenanted_requests_share_one_turn() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=10)
    queued = [("x0", "", Priority.STANDARD), ("x1", "", Priority.STANDARD), ("a0", "a", Priority.STANDARD)]
    assert await _serve_one_at_a_time(limiter, queued) == ["x0", "a0", "x1"]


async def test_a_tenant_that_left_the_queue_rejoins_at_the_back() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=10)
    held = await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire(wait=5, tenant="b"))
    await _settle()
    a = [asyncio.create_task(limiter.acquire(wait=5, tenant="a")) for _ in range(2)]
    await _settle()
    gone.cancel()  # b's only request leaves: b leaves the ring
    await _settle()
    assert limiter.queued == 2
    b = asyncio.create_task(limiter.acquire(wait=5, tenant="b"))
    await _settle()
    held.release()
    await _settle()
    assert a[0].done() and not b.done()
    a[0].result().release()
    await _settle()
    assert b.done() and not a[1].done()
    b.result().release()
    (await a[1]).release()
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_premium_displaces_from_the_busiest_tenant() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=3)
    held = await limiter.acquire()
    a = [asyncio.create_task(limiter.acquire(wait=5, tenant="a")) for _ in range(2)]
    await _settle()
    b = asyncio.create_task(limiter.acquire(wait=5, tenant="b"))  # newest, but b's only request
    await _settle()
    premium = asyncio.create_task(limiter.acquire(Priority.PREMIUM, wait=5, tenant="c"))
    await _settle()
    with pytest.raises(Saturated, match="displaced"):
        await a[1]
    assert not b.done() and not a[0].done()
    held.release()
    for task in (premium, a[0], b):
        (await task).release()
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_gate_passes_the_tenant_and_old_calls_still_work() -> None:
    limits = LoadLimits(settings=LoadSettings(queue_factor=10))
    backend = _backends({"a": 1})[0]
    assert limits.gate("premium") is limits.gate("premium")
    gate = limits.gate("premium", tenant="acme")
    assert (gate.priority, gate.tenant) == (Priority.PREMIUM, "acme")
    assert limits.gate("standard").tenant == ""
    held = await gate.enter(backend, 1)
    burst = [asyncio.create_task(limits.gate("", tenant="big").enter(backend, 5)) for _ in range(5)]
    await _settle()
    single = asyncio.create_task(limits.gate("", tenant="small").enter(backend, 5))
    await _settle()
    held.release()
    await _settle()
    first = burst[0].result()
    first.release()
    await _settle()
    assert single.done()
    single.result().release()
    for task in burst[1:]:
        (await task).release()
    assert limits.limiter(backend).in_flight == 0


async def _chaos(seed: int, limit: int, queue: int, workers: int) -> None:
    """Random holds, random cancellations (queued, granted-but-not-resumed, holding) and random
    timeouts; afterwards nothing is held or queued, and the limit was never exceeded."""
    rng = random.Random(seed)
    limiter = BackendLimiter("b", limit=limit, queue_size=queue)
    tracker = _Tracker()

    async def worker() -> None:
        priority = rng.choice(list(Priority))
        tenant = rng.choice(["", "a", "b", "c"])
        try:
            slot = await limiter.acquire(priority, wait=rng.choice([None, 0.0, 0.001, 0.01]), tenant=tenant)
        except Saturated:
            return
        tracker.enter()
        try:
            await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002]))
        finally:
            tracker.leave()
            slot.release()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    for _ in range(workers):
        await asyncio.sleep(0 if rng.random() < 0.7 else 0.0005)
        victim = rng.choice(tasks)
        if rng.random() < 0.4:
            victim.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert tracker.peak <= limit
    assert limiter.in_flight == 0
    assert limiter.queued == 0
    # And the limiter still works.
    slot = await limiter.acquire(wait=1)
    slot.release()


@pytest.mark.parametrize("seed", range(20))
async def test_random_cancellations_never_leak_slots(seed: int) -> None:
    await _chaos(seed, limit=1 + seed % 4, queue=seed % 6, workers=40)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    limit=st.integers(1, 5),
    queue=st.integers(0, 8),
    workers=st.integers(1, 40),
)
def test_random_cancellations_never_leak_slots_property(
    seed: int, limit: int, queue: int, workers: int
) -> None:
    asyncio.run(_chaos(seed, limit, queue, workers))


async def test_lower_limit_keeps_in_flight_and_applies_to_new_acquisitions() -> None:
    limiter = BackendLimiter("b", limit=2, queue_size=4)
    a, b = await limiter.acquire(), await limiter.acquire()
    limiter.configure(1, 2)
    assert limiter.in_flight == 2
    waiter = asyncio.create_task(limiter.acquire(wait=5))
    await _settle()
    a.release()
    await _settle()
    assert not waiter.done() and limiter.in_flight == 1  # 1 in flight is the new limit
    b.release()
    (await waiter).release()
    assert limiter.in_flight == 0


async def test_higher_limit_wakes_waiters() -> None:
    limiter = BackendLimiter("b", limit=1, queue_size=4)
    held = await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire(wait=5)) for _ in range(2)]
    await _settle()
    limiter.configure(3, 6)
    slots = await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert limiter.in_flight == 3
    for slot in [held, *slots]:
        slot.release()


def test_priority_from_tier() -> None:
    assert priority_for("premium") is Priority.PREMIUM
    assert priority_for(" Premium ") is Priority.PREMIUM
    assert priority_for("critical") is Priority.PREMIUM
    assert priority_for("") is Priority.STANDARD
    assert priority_for("standard") is Priority.STANDARD


async def test_metrics_report_depth_wait_in_flight_and_rejections() -> None:
    registry = CollectorRegistry()
    limits = LoadLimits(settings=LoadSettings(queue_factor=1), metrics=LoadMetrics(registry))
    backend = _backends({"gpt": 1})[0]
    limiter = limits.limiter(backend)

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    held = await limiter.acquire()
    assert value("llmroute_backend_in_flight", backend="gpt") == 1
    assert value("llmroute_backend_max_concurrency", backend="gpt") == 1
    waiter = asyncio.create_task(limiter.acquire(Priority.PREMIUM, wait=5))
    await _settle()
    assert value("llmroute_backend_queue_depth", backend="gpt", priority="premium") == 1
    with pytest.raises(Saturated):
        await limiter.acquire(wait=5)
    assert (
        value(
            "llmroute_backend_queue_rejections_total", backend="gpt", priority="standard", reason="queue_full"
        )
        == 1
    )
    await asyncio.sleep(0.02)
    held.release()
    (await waiter).release()
    assert value("llmroute_backend_queue_depth", backend="gpt", priority="premium") == 0
    assert value("llmroute_backend_in_flight", backend="gpt") == 0
    # Only the request that queued is in the wait histogram.
    assert value("llmroute_backend_queue_wait_seconds_count", backend="gpt", priority="premium") == 1
    assert value("llmroute_backend_queue_wait_seconds_count", backend="gpt", priority="standard") == 0
    assert value("llmroute_backend_queue_wait_seconds_sum", backend="gpt", priority="premium") >= 0.015
    # A backend that leaves the config leaves the gauges.
    limits.apply(_snapshot({"other": 2}, "v2"))
    assert registry.get_sample_value("llmroute_backend_in_flight", {"backend": "gpt"}) is None
    assert value("llmroute_backend_max_concurrency", backend="other") == 2


# -- registry -------------------------------------------------------------------------------------


async def test_registry_follows_config_swaps() -> None:
    limits = LoadLimits(settings=LoadSettings(queue_factor=2.0))
    limits.apply(_snapshot({"a": 2, "b": 0}))
    first = _backends({"a": 2, "b": 0})
    limiter_a = limits.limiter(first[0])
    assert (limiter_a.limit, limiter_a.queue_size) == (2, 4)
    assert limits.limiter(first[1]).limit == 0
    held = [await limiter_a.acquire(), await limiter_a.acquire()]
    # a: 2 -> 1 keeps the in-flight count; b leaves the config and is forgotten (idle).
    limits.apply(_snapshot({"a": 1}, "v2"))
    assert limits.limiter(first[0]) is limiter_a
    assert (limiter_a.limit, limiter_a.queue_size, limiter_a.in_flight) == (1, 2, 2)
    assert len(limits) == 1
    # A backend with slots out stays until it is idle.
    limits.apply(_snapshot({"c": 1}, "v3"))
    assert len(limits) == 2
    for slot in held:
        slot.release()
    limits.apply(_snapshot({"c": 1}, "v4"))
    assert len(limits) == 1


def test_load_settings_refuse_nonsense() -> None:
    assert LoadSettings().queue_size(3) == 6 and LoadSettings(queue_factor=0.5).queue_size(3) == 2
    assert LoadSettings().queue_size(0) == 0
    with pytest.raises(ValueError, match="queue_factor"):
        LoadSettings(queue_factor=-1)
    with pytest.raises(ValueError, match="max_wait"):
        LoadSettings(max_wait=0)


async def test_gate_caps_the_wait_by_settings() -> None:
    limits = LoadLimits(settings=LoadSettings(max_wait=0.02))
    backend = _backends({"a": 1})[0]
    gate = limits.gate("standard")
    held = await gate.enter(backend, 10)
    started = time.monotonic()
    with pytest.raises(Saturated, match="queue timeout"):
        await gate.enter(backend, 10)
    assert time.monotonic() - started < 0.5
    held.release()


# -- attempt loop ---------------------------------------------------------------------------------


async def test_attempt_loop_skips_a_saturated_backend_without_counting_an_attempt() -> None:
    limits = LoadLimits(settings=LoadSettings(queue_factor=0))
    a, b = _backends({"a": 1, "b": 1})
    hog = await limits.limiter(a).acquire()
    seen: list[str] = []

    async def attempt(backend: BackendEntry, deadline: float) -> dict[str, Any]:
        seen.append(backend.name)
        assert limits.limiter(backend).in_flight == 1  # the attempt runs holding its slot
        return {"ok": backend.name}

    trace = Trace()
    chosen, result = await _attempts([a, b], Policy(), trace, attempt, gate=limits.gate(""))
    assert chosen.name == "b" and result == {"ok": "b"} and seen == ["b"]
    assert trace.attempts == 1
    assert limits.limiter(b).in_flight == 0  # released after the attempt
    hog.release()


async def test_attempt_loop_releases_the_slot_when_an_attempt_fails_or_is_cancelled() -> None:
    limits = LoadLimits()
    (a,) = _backends({"a": 1})

    async def failing(backend: BackendEntry, deadline: float) -> None:
        raise ProviderError(ErrorKind.AUTH, "bad key")

    with pytest.raises(AllFailed):
        await _attempts([a], Policy(retries=0), Trace(), failing, gate=limits.gate(""))
    assert limits.limiter(a).in_flight == 0

    started = asyncio.Event()

    async def hanging(backend: BackendEntry, deadline: float) -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(_attempts([a], Policy(), Trace(), hanging, gate=limits.gate("")))
    await started.wait()
    assert limits.limiter(a).in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limits.limiter(a).in_flight == 0


async def test_every_candidate_saturated_is_a_quick_429_with_retry_after() -> None:
    limits = LoadLimits(settings=LoadSettings(queue_factor=0))
    a, b = _backends({"a": 1, "b": 2})
    hogs: list[Slot] = [await limits.limiter(a).acquire()]
    hogs += [await limits.limiter(b).acquire() for _ in range(2)]

    async def attempt(backend: BackendEntry, deadline: float) -> None:
        raise AssertionError("no attempt may run")

    started = time.monotonic()
    with pytest.raises(AllFailed) as caught:
        await _attempts([a, b], Policy(), Trace(), attempt, gate=limits.gate("premium"))
    assert time.monotonic() - started < 0.05
    error = overloaded_error("chat", caught.value.errors)
    assert error is not None and error.status == 429 and error.code == "overloaded"
    assert int(error.headers["retry-after"]) >= 1
    assert "a, b" in error.message
    for slot in hogs:
        slot.release()


def test_overloaded_error_only_when_every_error_is_a_saturation() -> None:
    saturated = Saturated("a", "queue_full", "x", 0.2)
    assert overloaded_error("chat", []) is None
    assert (
        overloaded_error("chat", [("a", saturated), ("b", ProviderError(ErrorKind.SERVER, "boom"))]) is None
    )
    error = overloaded_error("chat", [("a", saturated)])
    assert error is not None and error.headers == {"retry-after": "1"}

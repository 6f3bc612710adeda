"""The in-process answer store (``llmroute_sidecar.cache.memory``): an LRU bounded in bytes, with TTLs
on an injected clock."""

from __future__ import annotations

from llmroute_sidecar.cache import MemoryLRU
from llmroute_sidecar.cache.memory import ENTRY_OVERHEAD


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_goes_first_when_bytes_run_out() -> None:
    evicted: list[int] = []
    lru = MemoryLRU(4 * (100 + ENTRY_OVERHEAD), on_evict=evicted.append)
    for name in "abcd":
        assert lru.put(name, b"x" * 100, ttl=60)
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("e", b"x" * 100, ttl=60)
    assert lru.get("b") is None
    assert all(lru.get(name) is not None for name in "acde")
    assert evicted == [1]
    assert lru.bytes == 4 * (100 + ENTRY_OVERHEAD) == lru.max_bytes


def test_replacing_a_key_recharges_its_bytes() -> None:
    lru = MemoryLRU(10_000)
    lru.put("a", b"x" * 100, ttl=60)
    lru.put("a", b"x" * 10, ttl=60)
    assert lru.bytes == 10 + ENTRY_OVERHEAD
    assert len(lru) == 1


def test_a_value_too_large_for_a_quarter_of_the_bound_is_not_kept() -> None:
    lru = MemoryLRU(4_000)
    lru.put("small", b"x", ttl=60)
    assert not lru.put("huge", b"x" * 1_000, ttl=60)
    assert lru.get("huge") is None
    assert lru.get("small") is not None


def test_ttl_expiry_on_the_injected_clock() -> None:
    clock = Clock()
    lru = MemoryLRU(10_000, clock=clock)
    lru.put("a", b"v", ttl=10)
    clock.now += 9.5
    hit = lru.get("a")
    assert hit is not None
    assert hit[0] == b"v"
    assert abs(hit[1] - 0.5) < 1e-9
    clock.now += 0.5
    assert lru.get("a") is None
    assert lru.bytes == 0
    assert not lru.put("b", b"v", ttl=0)

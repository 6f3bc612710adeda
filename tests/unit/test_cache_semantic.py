"""Vector indexes (``llmroute_sidecar.cache.semantic``) and the in-process semantic cache: cosine
similarity against a threshold, expiry, bounds, and that numpy loads only when semantic is used."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np

from llmroute_sidecar.cache import CacheLimits, IndexSet, ResponseCache, VectorIndex, unit_vector

ANSWER: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
}


def at_angle(degrees: float) -> list[float]:
    """A 2-d vector whose cosine similarity with [1, 0] is cos(degrees)."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unit(vector: list[float]) -> Any:
    result = unit_vector(vector)
    assert result is not None
    return result


def test_unit_vector_rejects_zero_empty_and_non_finite() -> None:
    assert unit_vector([]) is None
    assert unit_vector([0.0, 0.0]) is None
    assert unit_vector([float("nan"), 1.0]) is None
    assert unit_vector(["a"]) is None  # type: ignore[list-item]
    assert np.allclose(unit([3.0, 4.0]), [0.6, 0.8])


def test_search_finds_the_nearest_live_row() -> None:
    index = VectorIndex(100)
    index.add("near", unit(at_angle(10)), expires_at=50)
    index.add("far", unit(at_angle(60)), expires_at=50)
    index.add("expired", unit(at_angle(0)), expires_at=5)
    found = index.search(unit([1.0, 0.0]), now=10)
    assert found is not None
    assert found[0] == "near"
    assert abs(found[1] - math.cos(math.radians(10))) < 1e-6
    index.discard("near")
    after = index.search(unit([1.0, 0.0]), now=10)
    assert after is not None
    assert after[0] == "far"
    assert index.search(unit([1.0, 0.0, 0.0]), now=10) is None  # another dimension


def test_a_full_index_drops_its_oldest_rows_and_another_dimension_resets_it() -> None:
    index = VectorIndex(16)
    for i in range(40):
        index.add(f"e{i}", unit([1.0, float(i)]), expires_at=1e9)
    assert len(index) <= 16
    found = index.search(unit([1.0, 39.0]), now=0)
    assert found is not None
    assert found[0] == "e39"
    index.add("new", unit([1.0, 0.0, 0.0]), expires_at=1e9)
    assert len(index) == 1
    assert index.dim == 3


def test_index_set_drops_least_recently_used_partitions_past_its_bytes() -> None:
    indexes = IndexSet(max_entries=1000, max_bytes=3 * 100 * (16 * 4 + 8 + 64))
    for name in ("a", "b", "c", "d"):
        index = indexes.get_or_create(name)
        for i in range(100):
            index.add(str(i), unit([1.0] * 15 + [float(i)]), expires_at=1e9)
        indexes.get("a")  # keep a in use
        indexes.enforce_bound()
    assert indexes.get("a") is not None
    assert indexes.get("b") is None
    assert indexes.nbytes <= indexes.max_bytes


async def test_similarity_threshold_decides_semantic_hits() -> None:
    events: list[str] = []
    cache = ResponseCache(on_event=events.append)
    await cache.put_similar("p", at_angle(0), ANSWER, ttl=60)
    hit = await cache.get_similar("p", at_angle(10), threshold=0.98)  # cos 10 deg = 0.985
    assert hit is not None
    assert hit[0] == ANSWER
    assert hit[0] is not ANSWER
    assert 0.98 < hit[1] < 0.99
    assert await cache.get_similar("p", at_angle(20), threshold=0.98) is None  # cos 20 deg = 0.94
    assert await cache.get_similar("other", at_angle(0), threshold=0.5) is None
    assert await cache.get_similar("p", [0.0, 0.0], threshold=0.5) is None
    assert events == ["store", "semantic_hit", "semantic_miss", "semantic_miss", "semantic_miss"]


async def test_semantic_entries_expire_and_are_not_stored_when_incomplete() -> None:
    clock = Clock()
    cache = ResponseCache(clock=clock)
    await cache.put_similar("p", at_angle(0), ANSWER, ttl=10)
    unfinished = {**ANSWER, "choices": [{"index": 0, "message": {"content": "Par"}, "finish_reason": None}]}
    await cache.put_similar("p", at_angle(1), unfinished, ttl=10)
    hit = await cache.get_similar("p", at_angle(1), threshold=0.9)
    assert hit is not None
    assert hit[0] == ANSWER
    clock.now = 10
    assert await cache.get_similar("p", at_angle(0), threshold=0.9) is None


async def test_an_evicted_answer_is_a_miss_not_an_error() -> None:
    cache = ResponseCache(memory_bytes=8_000, limits=CacheLimits(semantic_entries=1000))
    for i in range(100):
        await cache.put_similar("p", at_angle(i * 0.5), ANSWER, ttl=60)
    assert await cache.get_similar("p", at_angle(0), threshold=0.9999) is None
    assert await cache.get_similar("p", at_angle(49.5), threshold=0.9999) is not None


def test_importing_the_cache_loads_neither_numpy_nor_redis() -> None:
    code = "import sys, llmroute_sidecar.cache; print('numpy' in sys.modules, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

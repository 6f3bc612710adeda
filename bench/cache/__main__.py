"""``python -m bench.cache``: the cost of the semantic cache without a vector-search module.

Measures, for 1k and 10k entries of dimension 384 and 1536 (``docs/cache.md`` has the results):

- **search**: :meth:`VectorIndex.search` (one float32 matrix-vector product, expiry mask, argmax),
  p50/p99 in microseconds over many lookups, and the index's memory;
- **bootstrap**: a new sidecar mirroring a full partition stream from a real Redis (XRANGE in
  batches of 1000, decode, append), in milliseconds;
- **refresh**: an up-to-date mirror reading what 10 puts from another sidecar added;
- **lookup**: :meth:`ResponseCache.get_similar` end to end against Redis, hit (mirror check + search
  + GET of the answer), p50/p99.

Needs Debian's redis-server (started on a free port, no persistence, like the test fixture). Prints a
table; ``--json PATH`` also writes the figures. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio
from tests.redis_support import RedisServer, require_redis_server

from llmroute_sidecar.cache import CacheLimits, ResponseCache, VectorIndex
from llmroute_sidecar.cache.redis_semantic import RedisSemantic
from llmroute_sidecar.cache.redis_store import RedisStore
from llmroute_sidecar.cache.semantic import IndexSet

ANSWER: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x" * 500}, "finish_reason": "stop"}
    ],
}


def _units(rng: np.random.Generator, n: int, dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _percentiles(samples_s: list[float], scale: float) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50": round(statistics.median(ordered) * scale, 1),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1] * scale, 1),
    }


def bench_search(n: int, dim: int, lookups: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    index = VectorIndex(n)
    for i, vector in enumerate(_units(rng, n, dim)):
        index.add(str(i), vector, expires_at=1e18)
    queries = _units(rng, 64, dim)
    for query in queries:
        index.search(query, now=0)
    samples = []
    for i in range(lookups):
        query = queries[i % len(queries)]
        started = time.perf_counter()
        index.search(query, now=0)
        samples.append(time.perf_counter() - started)
    return {"search_us": _percentiles(samples, 1e6), "index_mib": round(index.nbytes / 2**20, 1)}


async def bench_redis(url: str, n: int, dim: int, lookups: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    client = redis.asyncio.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
    limits = CacheLimits(semantic_entries=n, semantic_bytes=2**31, refresh_interval=0.1, redis_timeout=30)
    try:
        await client.flushall()
        writer = ResponseCache(redis=client, limits=limits)
        vectors = _units(rng, n, dim)
        for start in range(0, n, 50):
            await asyncio.gather(
                *(writer.put_similar("p", v.tolist(), ANSWER, ttl=3600) for v in vectors[start : start + 50])
            )
        assert writer.redis_up, "a put failed: the stream is incomplete"
        stream_mib = (await client.memory_usage("llmroute:cache:v1:p:vec") or 0) / 2**20

        def mirror() -> tuple[RedisSemantic, IndexSet]:
            store = RedisStore(client, op_timeout=30)
            indexes = IndexSet(max_entries=n, max_bytes=2**31)
            return RedisSemantic(store, indexes, refresh_interval=0), indexes

        boots = []
        for _ in range(3):
            reader, indexes = mirror()
            started = time.perf_counter()
            added = await reader.refresh("p", indexes.get_or_create("p"))
            boots.append(time.perf_counter() - started)
            assert added == n, (added, n)
        refreshes = []
        for _ in range(20):
            for v in _units(rng, 10, dim):
                await writer.put_similar("p", v.tolist(), ANSWER, ttl=3600)
            started = time.perf_counter()
            await reader.refresh("p", indexes.get_or_create("p"))
            refreshes.append(time.perf_counter() - started)

        sidecar = ResponseCache(redis=client, limits=limits)
        await sidecar.get_similar("p", vectors[0].tolist(), threshold=0.99)  # bootstrap its mirror
        samples = []
        for i in range(lookups):
            query = vectors[n // 2 + i % (n // 2)].tolist()  # the oldest rows made room for the refresh puts
            started = time.perf_counter()
            hit = await sidecar.get_similar("p", query, threshold=0.99)
            samples.append(time.perf_counter() - started)
            assert hit is not None
        return {
            "stream_mib": round(stream_mib, 1),
            "bootstrap_ms": round(min(boots) * 1000, 1),
            "refresh_10_us": _percentiles(refreshes, 1e6),
            "lookup_hit_us": _percentiles(samples, 1e6),
        }
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__.split("\n")[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    server = RedisServer(require_redis_server())
    server.start()
    results: list[dict[str, Any]] = []
    try:
        for dim in (384, 1536):
            for n in (1_000, 10_000):
                row: dict[str, Any] = {"entries": n, "dim": dim, **bench_search(n, dim, args.lookups)}
                row.update(asyncio.run(bench_redis(server.url, n, dim, min(args.lookups, 1000))))
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.close()
    header = "| entries | dim | index MiB | search p50/p99 µs | lookup hit p50/p99 µs | bootstrap ms | refresh (10 new) p50/p99 µs | stream MiB |"
    print("\n" + header + "\n" + "|---" * 8 + "|")
    for r in results:
        print(
            f"| {r['entries']:,} | {r['dim']} | {r['index_mib']} | {r['search_us']['p50']} / {r['search_us']['p99']} "
            f"| {r['lookup_hit_us']['p50']} / {r['lookup_hit_us']['p99']} | {r['bootstrap_ms']} "
            f"| {r['refresh_10_us']['p50']} / {r['refresh_10_us']['p99']} | {r['stream_mib']} |"
        )
    if args.json:
        machine = {"python": platform.python_version(), "numpy": np.__version__, "cpu": platform.processor()}
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

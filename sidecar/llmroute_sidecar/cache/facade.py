"""The response cache the request path talks to: exact and semantic lookups over memory and Redis.

:class:`ResponseCache` composes the pieces: ``memory.py`` (the LRU of serialized answers),
``semantic.py`` (vector indexes), ``redis_store.py`` (the guarded shared tier) and
``redis_semantic.py`` (the stream-mirrored shared vector index). Keys come from ``keys.py``; what may
be stored is ``replay.cacheable``. The glue decides which routes cache and with which TTL, computes
embeddings, and replays hits to streaming requests (``replay.py``).

Without Redis, everything is in-process. With Redis, Redis is the shared store and the memory LRU is a
near tier in front of it: an answer read from Redis is kept locally until the TTL Redis had left for
it, so a local copy never outlives the shared one (answers under a key are interchangeable, so a
local copy is never wrong, only possibly kept after a FLUSHALL). While Redis is down the near tier
still answers and still takes new answers; nothing waits on Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..ids import new_id
from .keys import CacheKey
from .memory import MemoryLRU
from .redis_semantic import RedisSemantic
from .redis_store import RedisStore
from .replay import cacheable
from .semantic import IndexSet, unit_vector

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["CacheLimits", "ResponseCache"]


@dataclass(frozen=True)
class CacheLimits:
    """Bounds and timings of a :class:`ResponseCache`, beyond the memory bound."""

    #: Rows per partition's vector index, and the Redis stream's MAXLEN (approximate).
    semantic_entries: int = 10_000
    #: All vector indexes together; past it, least recently used partitions are dropped.
    semantic_bytes: int = 64 * 2**20
    #: How stale another sidecar's semantic entries may be before a lookup re-reads the stream.
    refresh_interval: float = 0.1
    #: Longest any one Redis call may take (on top of the client's socket timeouts).
    redis_timeout: float = 0.3
    #: How long Redis is left alone after a failure.
    redis_backoff: float = 2.0


class ResponseCache:
    """Answers by exact key and by similarity. ``on_event`` receives ``hit``, ``miss``,
    ``semantic_hit``, ``semantic_miss``, ``store``, ``skip`` (not cacheable), ``evict``,
    ``redis_error`` and ``redis_recovered``, for metrics. The Redis client stays the caller's to close.
    """

    def __init__(
        self,
        *,
        memory_bytes: int = 32 * 2**20,
        redis: redis.asyncio.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str], None] | None = None,
        limits: CacheLimits | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or CacheLimits()
        self._clock = clock
        self._event = on_event or (lambda _event: None)
        self._memory = MemoryLRU(memory_bytes, clock=clock, on_evict=self._evicted)
        self._indexes = IndexSet(
            max_entries=self.limits.semantic_entries, max_bytes=self.limits.semantic_bytes
        )
        self._store: RedisStore | None = None
        self._shared: RedisSemantic | None = None
        if redis is not None:
            self._store = RedisStore(
                redis,
                op_timeout=self.limits.redis_timeout,
                backoff=self.limits.redis_backoff,
                clock=clock,
                on_event=self._event,
            )
            self._shared = RedisSemantic(
                self._store,
                self._indexes,
                refresh_interval=self.limits.refresh_interval,
                clock=clock,
                wall_clock=wall_clock,
            )

    @property
    def redis_up(self) -> bool:
        """Whether the shared tier is in use: ``False`` without Redis and during an outage's backoff."""
        return self._store is not None and self._store.outage.up

    async def get(self, key: CacheKey) -> dict[str, Any] | None:
        """The stored ``chat.completion`` (a fresh copy the caller may mutate), or ``None``."""
        response = await self._load("x", key.partition, key.digest)
        self._event("miss" if response is None else "hit")
        return response

    async def put(self, key: CacheKey, response: dict[str, Any], ttl: float) -> None:
        """Keep ``response`` for ``ttl`` seconds, unless it is not :func:`~.replay.cacheable`."""
        value = self._encode(response, ttl)
        if value is None:
            return
        self._memory.put(("x", key.partition, key.digest), value, ttl)
        if self._store is not None:
            await self._store.set(self._store.name(key.partition, "x", key.digest), value, ttl)
        self._event("store")

    async def get_similar(
        self, partition: str, vector: Sequence[float], threshold: float
    ) -> tuple[dict[str, Any], float] | None:
        """The answer to the most similar cached question of ``partition`` and its cosine similarity,
        if that is at least ``threshold``; ``None`` otherwise."""
        unit = unit_vector(vector)
        found: tuple[str, float] | None = None
        if unit is not None:
            if self._shared is not None:
                found = await self._shared.search(partition, unit)
            elif (index := self._indexes.get(partition)) is not None:
                found = index.search(unit, self._clock())
        if found is None or found[1] < threshold:
            self._event("semantic_miss")
            return None
        entry, score = found
        response = await self._load("s", partition, entry)
        if response is None:
            # The answer expired or was evicted before its vector: forget the row, try again later.
            if (index := self._indexes.get(partition)) is not None:
                index.discard(entry)
            self._event("semantic_miss")
            return None
        self._event("semantic_hit")
        return response, score

    async def put_similar(
        self, partition: str, vector: Sequence[float], response: dict[str, Any], ttl: float
    ) -> None:
        """Keep ``response`` for ``ttl`` seconds as the answer to questions near ``vector``."""
        value = self._encode(response, ttl)
        unit = unit_vector(vector)
        if value is None or unit is None:
            return
        entry = new_id()
        self._memory.put(("s", partition, entry), value, ttl)
        if self._shared is not None:
            await self._shared.add(partition, entry, unit, value, ttl)
        else:
            self._indexes.get_or_create(partition).add(entry, unit, self._clock() + ttl)
            self._indexes.enforce_bound()
        self._event("store")

    async def close(self) -> None:
        """Drop everything held in memory (the Redis client is the caller's)."""
        self._memory.clear()
        self._indexes.clear()

    async def _load(self, kind: str, partition: str, entry: str) -> dict[str, Any] | None:
        local_key = (kind, partition, entry)
        local = self._memory.get(local_key)
        value = local[0] if local is not None else None
        if value is None and self._store is not None:
            fetched = await self._store.get(self._store.name(partition, kind, entry))
            if fetched is not None:
                value, remaining = fetched
                self._memory.put(local_key, value, remaining)
        if value is None:
            return None
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:  # someone else's bytes under our key: a miss, not a failure
            return None
        return decoded if isinstance(decoded, dict) else None

    def _encode(self, response: dict[str, Any], ttl: float) -> bytes | None:
        if ttl <= 0 or not cacheable(response):
            self._event("skip")
            return None
        try:
            return orjson.dumps(response)
        except TypeError:
            self._event("skip")
            return None

    def _evicted(self, count: int) -> None:
        for _ in range(count):
            self._event("evict")

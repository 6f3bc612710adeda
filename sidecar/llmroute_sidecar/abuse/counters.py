"""Window counts and blocks per key: in the shared Redis when there is one, else in this process.

In Redis, a key's window is a hash ``llmroute:abuse:<scope>:<key>:w:<window index>`` and its
baseline period another, ``...:b:<period index>``; both are incremented with ``HINCRBY`` (atomic,
so every sidecar of the workload adds to the same counts) and expire on their own. A block is one
key set with ``NX`` and a millisecond TTL: the first sidecar to decide sets it, every sidecar reads
it, and it lifts when it expires. When Redis fails, the same layout lives in a dict of this
process (per-sidecar counts and blocks, logged once per outage) until Redis answers again.
Neighbours: ``detector.py`` judges the counts, ``guard.py`` drives these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..route_policy import AbuseSpec
from .detector import FIELDS, Counts

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["AbuseCounters", "Block", "Seen"]

log = logging.getLogger(__name__)
_RETRY_REDIS_S = 10.0


@dataclass(frozen=True)
class Block:
    reason: str
    seconds_left: float


@dataclass(frozen=True)
class Seen:
    """A key's state after counting: its block (if any), this window's counts, the baseline's."""

    block: Block | None
    window: Counts
    previous: Counts


@dataclass
class _Local:
    counts: dict[str, tuple[dict[str, int], float]] = field(default_factory=dict)
    blocks: dict[str, tuple[str, float]] = field(default_factory=dict)

    def add(self, name: str, increments: Mapping[str, int], ttl: float, now: float) -> dict[str, int]:
        values, expires = self.counts.get(name, ({}, 0.0))
        if expires <= now:
            values = {}
        for key, amount in increments.items():
            values[key] = values.get(key, 0) + amount
        self.counts[name] = (values, now + ttl)
        if len(self.counts) > 100_000:  # expired windows of keys gone quiet
            self.counts = {k: v for k, v in self.counts.items() if v[1] > now}
        return values

    def get(self, name: str, now: float) -> dict[str, int]:
        values, expires = self.counts.get(name, ({}, 0.0))
        return values if expires > now else {}


class AbuseCounters:
    def __init__(self, redis: redis.asyncio.Redis | None, *, clock: Any = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._local = _Local()
        self._redis_down_until = 0.0

    @staticmethod
    def _base(scope: str, key: str) -> str:
        return f"llmroute:abuse:{quote(scope, safe='/')}:{quote(key, safe='')}:"

    async def count(self, scope: str, key: str, spec: AbuseSpec, increments: Mapping[str, int]) -> Seen:
        """Add ``increments`` (requests, tokens, cost, blocks) to the key's window and baseline
        period; return its block and counts."""
        now = self.clock()
        base = self._base(scope, key)
        window = f"{base}w:{int(now // spec.window_seconds)}"
        period = int(now // spec.baseline_seconds)
        current, previous = f"{base}b:{period}", f"{base}b:{period - 1}"
        adds = {k: v for k, v in increments.items() if v}
        if self.redis is not None and now >= self._redis_down_until:
            try:
                return await self._count_redis(base, window, current, previous, spec, adds)
            except Exception as exc:
                log.warning(
                    "abuse counts: Redis failed (%s); counting in this sidecar for %.0fs", exc, _RETRY_REDIS_S
                )
                self._redis_down_until = now + _RETRY_REDIS_S
        local = self._local
        counts = local.add(window, adds, 2 * spec.window_seconds, now)
        local.add(current, adds, 2 * spec.baseline_seconds, now)
        reason, until = local.blocks.get(base, ("", 0.0))
        block = Block(reason, until - now) if until > now else None
        return Seen(block, Counts.of(counts), Counts.of(local.get(previous, now)))

    async def _count_redis(
        self, base: str, window: str, current: str, previous: str, spec: AbuseSpec, adds: Mapping[str, int]
    ) -> Seen:
        assert self.redis is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(base + "block")
            pipe.pttl(base + "block")
            for name, amount in adds.items():
                pipe.hincrby(window, name, amount)
                pipe.hincrby(current, name, amount)
            pipe.expire(window, int(2 * spec.window_seconds) + 1)
            pipe.expire(current, int(2 * spec.baseline_seconds) + 1)
            pipe.hgetall(window)
            pipe.hgetall(previous)
            replies = await pipe.execute()
        reason, ttl_ms = replies[0], replies[1]
        block = Block(reason.decode(), ttl_ms / 1000) if reason is not None and ttl_ms > 0 else None
        return Seen(block, _counts(replies[-2]), _counts(replies[-1]))

    async def block(self, scope: str, key: str, reason: str, seconds: float) -> bool:
        """Block the key for ``seconds`` unless it is already; True when this call set the block."""
        base = self._base(scope, key)
        now = self.clock()
        if self.redis is not None and now >= self._redis_down_until:
            try:
                return bool(
                    await self.redis.set(base + "block", reason, px=max(1, int(seconds * 1000)), nx=True)
                )
            except Exception as exc:
                log.warning("abuse block: Redis failed (%s); blocking in this sidecar only", exc)
                self._redis_down_until = now + _RETRY_REDIS_S
        if self._local.blocks.get(base, ("", 0.0))[1] > now:
            return False
        self._local.blocks[base] = (reason, now + seconds)
        return True


def _counts(raw: Mapping[Any, Any]) -> Counts:
    values = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
    return Counts.of({name: values.get(name, 0) for name in FIELDS})

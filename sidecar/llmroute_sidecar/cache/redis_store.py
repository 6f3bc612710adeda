"""The shared tier: answers and vector streams in Redis, every call guarded so an outage costs nothing.

:class:`RedisStore` is the only module that talks to Redis. ``facade.py`` stores and fetches answers
through it; ``redis_semantic.py`` appends to and reads the per-partition vector streams. Key layout
(``docs/cache.md``), with ``P`` the percent-encoded partition (so it holds no ``:``)::

    llmroute:cache:v1:P:x:<sha256>   exact answer (orjson), PX = the route's TTL
    llmroute:cache:v1:P:s:<uuid>     semantic answer (orjson), PX = the route's TTL
    llmroute:cache:v1:P:vec          stream of {k: <uuid>, v: float32 unit vector, e: expiry ms epoch},
                                     XADD MAXLEN ~ bound, PEXPIRE = the newest entry's TTL

Redis down means cache off, never a failed or slow request: each call is bounded by ``op_timeout``,
any :class:`~redis.exceptions.RedisError`, :class:`OSError` or timeout turns into "no answer", is
logged once per outage, and puts the store into a ``backoff`` during which no call is attempted at
all (:class:`Outage`), so a dead Redis costs a request nothing but a clock read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["PREFIX", "Outage", "RedisStore", "StreamEntry"]

log = logging.getLogger(__name__)

PREFIX = "llmroute:cache:v1:"
T = TypeVar("T")
#: One stream entry as redis-py returns it: the id and the field map (bytes, no decode_responses).
StreamEntry = tuple[bytes, dict[bytes, bytes]]


class Outage:
    """Whether Redis is worth trying now: after a failure, not for ``backoff`` seconds."""

    def __init__(
        self,
        *,
        backoff: float,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.backoff = backoff
        self._clock = clock
        self._on_event = on_event or (lambda _event: None)
        self._retry_at = float("-inf")
        self.up = True

    def allow(self) -> bool:
        return self.up or self._clock() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        if self.up:
            # Once per outage: a dead Redis under load would otherwise log once per request.
            log.warning("cache: Redis unavailable (%s); caching from memory only, retrying every %.1fs",
                        exc.__class__.__name__ + (f": {exc}" if str(exc) else ""), self.backoff)  # fmt: skip
        self.up = False
        self._retry_at = self._clock() + self.backoff
        self._on_event("redis_error")

    def succeeded(self) -> None:
        if not self.up:
            log.warning("cache: Redis is back")
            self.up = True
            self._on_event("redis_recovered")


class RedisStore:
    """Guarded Redis operations; each returns its ``default`` when Redis is down or in backoff.

    The client must return bytes (the default; not ``decode_responses=True``): vectors are binary.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        op_timeout: float = 0.3,
        backoff: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        # Imported here, not at module level: a sidecar without --redis-url never loads redis-py.
        from redis.exceptions import RedisError

        self.client = client
        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self.op_timeout = op_timeout
        self.outage = Outage(backoff=backoff, clock=clock, on_event=on_event)

    @staticmethod
    def name(partition: str, kind: str, entry: str) -> str:
        return f"{PREFIX}{partition}:{kind}:{entry}"

    @staticmethod
    def stream(partition: str) -> str:
        return f"{PREFIX}{partition}:vec"

    async def get(self, name: str) -> tuple[bytes, float] | None:
        """The value and its remaining TTL in seconds, or ``None``."""

        async def op() -> tuple[bytes, float] | None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                value, pttl = await pipe.execute()
            if not isinstance(value, bytes) or not isinstance(pttl, int) or pttl <= 0:
                return None
            return value, pttl / 1000

        return await self._run(op, None)

    async def set(self, name: str, value: bytes, ttl: float) -> None:
        async def op() -> None:
            await self.client.set(name, value, px=max(1, int(ttl * 1000)))

        await self._run(op, None)

    async def append_vector(
        self, partition: str, entry: str, vector: bytes, value: bytes, ttl: float, *, maxlen: int
    ) -> None:
        """Store a semantic answer and announce its vector on the partition's stream, in one trip."""
        px = max(1, int(ttl * 1000))
        stream = self.stream(partition)
        fields: dict[str | bytes, str | bytes] = {
            "k": entry,
            "v": vector,
            "e": str(int(time.time() * 1000) + px),
        }

        async def op() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.name(partition, "s", entry), value, px=px)
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.pexpire(stream, px)
                await pipe.execute()

        await self._run(op, None)

    async def read_vectors(self, partition: str, after: str, count: int) -> list[StreamEntry] | None:
        """Up to ``count`` stream entries after id ``after`` (exclusive), oldest first; ``None`` when
        Redis could not be asked."""

        async def op() -> list[StreamEntry]:
            entries = await self.client.xrange(self.stream(partition), min=f"({after}", max="+", count=count)
            # A bytes client (no decode_responses) returns ids and fields as bytes, never None.
            return cast(list[StreamEntry], list(entries or []))

        return await self._run(op, None)

    async def _run(self, op: Callable[[], Awaitable[T]], default: T) -> T:
        if not self.outage.allow():
            return default
        try:
            async with asyncio.timeout(self.op_timeout):
                result = await op()
        except self._failures as exc:
            self.outage.failed(exc)
            return default
        self.outage.succeeded()
        return result

"""The semantic index shared through Redis without a vector-search module: a stream per partition,
mirrored locally and searched locally.

Debian's redis-server 7.0 has no RediSearch, so Redis only carries the vectors: ``put`` appends the
unit vector and the answer's id to the partition's stream (``redis_store.py``), and every sidecar keeps
a mirror of each stream it has been asked about in an :class:`~.semantic.IndexSet`, brought up to date
incrementally (XRANGE from the last id read) at most every ``refresh_interval`` seconds, on lookup.
A lookup is then a local matrix-vector product plus one GET of the answer. ``facade.py`` drives it.

Consistency: another sidecar's answer becomes findable here within ``refresh_interval`` of its put
(ours at once); a mirror row whose answer has expired or was evicted from Redis is a miss and is
marked dead. Expiry times in the stream are wall-clock milliseconds, the one clock sidecars share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .redis_store import RedisStore
from .semantic import IndexSet, VectorIndex, numpy_module

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["RedisSemantic"]

_BATCH = 1000
# Ids of our own puts, skipped when the stream hands them back; forgotten past this many (a few
# duplicate rows are harmless, an unbounded set is not).
_OWN_LIMIT = 10_000


class RedisSemantic:
    def __init__(
        self,
        store: RedisStore,
        indexes: IndexSet,
        *,
        refresh_interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.indexes = indexes
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._wall = wall_clock
        self._own: set[str] = set()
        self._refreshing: set[str] = set()

    async def search(self, partition: str, unit: NDArray[np.float32]) -> tuple[str, float] | None:
        index = self.indexes.get_or_create(partition)
        if self._clock() - index.refreshed_at >= self.refresh_interval and partition not in self._refreshing:
            await self.refresh(partition, index)
        return index.search(unit, self._wall() * 1000)

    async def add(
        self, partition: str, entry: str, unit: NDArray[np.float32], value: bytes, ttl: float
    ) -> None:
        index = self.indexes.get_or_create(partition)
        index.add(entry, unit, self._wall() * 1000 + ttl * 1000)
        self.indexes.enforce_bound()
        if len(self._own) >= _OWN_LIMIT:
            self._own.clear()
        self._own.add(entry)
        await self.store.append_vector(
            partition, entry, unit.astype("<f4").tobytes(), value, ttl, maxlen=self.indexes.max_entries
        )

    async def refresh(self, partition: str, index: VectorIndex) -> int:
        """Read what the partition's stream gained since the last refresh; how many rows were added."""
        numpy = numpy_module()
        self._refreshing.add(partition)
        index.refreshed_at = self._clock()  # also when Redis is down: the outage backoff decides retries
        added = 0
        try:
            while True:
                entries = await self.store.read_vectors(partition, index.cursor, _BATCH)
                if not entries:
                    break
                for stream_id, fields in entries:
                    index.cursor = stream_id.decode()
                    try:
                        entry = fields[b"k"].decode()
                        expires_at = float(fields[b"e"])
                        unit = numpy.frombuffer(fields[b"v"], dtype="<f4").astype(numpy.float32)
                    except (KeyError, ValueError, UnicodeDecodeError):
                        continue  # not ours (or from a future layout): skip, never fail a lookup
                    if entry in self._own:
                        self._own.discard(entry)
                        continue
                    if unit.size:
                        index.add(entry, unit, expires_at)
                        added += 1
                if len(entries) < _BATCH:
                    break
        finally:
            self._refreshing.discard(partition)
        if added:
            self.indexes.enforce_bound()
        return added

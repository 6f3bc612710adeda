"""The in-process answer store: serialized answers by key, with a TTL each and an LRU bound in bytes.

Pure logic with an injectable monotonic clock, no I/O. :class:`ResponseCache` (``facade.py``) uses it
as the whole exact store without Redis, as the near tier in front of Redis, and as the home of the
semantic answers in-process (the vectors that point at them live in ``semantic.py``).

Values are the serialized answer (``bytes``), so what is charged against the bound is what is held,
and every hit decodes a fresh object the caller may mutate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["ENTRY_OVERHEAD", "MemoryLRU"]

#: What an entry costs beyond its value: the key, the ordered-dict node and the entry object. An
#: estimate (CPython's real figure is about this), so a bound of many tiny entries is still a bound.
ENTRY_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class _Entry:
    value: bytes
    expires_at: float


class MemoryLRU:
    """At most ``max_bytes`` of values (plus :data:`ENTRY_OVERHEAD` each); least recently used first
    out. A value larger than ``max_bytes // 4`` is not kept: one huge answer would flush everything."""

    def __init__(
        self,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._on_evict = on_evict
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[bytes, float] | None:
        """The value and its remaining TTL in seconds, or ``None`` (absent or expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        remaining = entry.expires_at - self._clock()
        if remaining <= 0:
            self._drop(key, entry)
            return None
        self._entries.move_to_end(key)
        return entry.value, remaining

    def put(self, key: Hashable, value: bytes, ttl: float) -> bool:
        """Store ``value`` for ``ttl`` seconds; ``False`` when it is too large to keep (or ttl <= 0)."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.value) + ENTRY_OVERHEAD
        cost = len(value) + ENTRY_OVERHEAD
        if ttl <= 0 or cost > self.max_bytes // 4:
            return False
        self._entries[key] = _Entry(value, self._clock() + ttl)
        self.bytes += cost
        evicted = 0
        while self.bytes > self.max_bytes:
            oldest, entry = next(iter(self._entries.items()))
            self._drop(oldest, entry)
            evicted += 1
        if evicted and self._on_evict is not None:
            self._on_evict(evicted)
        return True

    def discard(self, key: Hashable) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            self._drop(key, entry)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: Hashable, entry: _Entry) -> None:
        del self._entries[key]
        self.bytes -= len(entry.value) + ENTRY_OVERHEAD

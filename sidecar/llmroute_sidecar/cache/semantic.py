"""Nearest-neighbour search over cached questions: one normalized float32 matrix per partition.

Pure logic, no I/O. :class:`ResponseCache` (``facade.py``) keeps the in-process semantic index here,
and the Redis mirror (``redis_semantic.py``) keeps its local copy of each partition's vector stream
here too. A lookup is one matrix-vector product (cosine similarity of unit vectors), so 10k entries of
dimension 1536 cost a few milliseconds with no index structure to maintain; ``docs/cache.md`` has the
measurements (``python -m bench.cache``).

numpy is imported when the first index is made, not with this module: the sidecar's idle memory
target leaves no room for it unless a route enables semantic caching.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["IndexSet", "VectorIndex", "numpy_module", "unit_vector"]


def numpy_module() -> Any:
    """numpy, imported on first use."""
    return importlib.import_module("numpy")


def unit_vector(vector: Sequence[float] | NDArray[np.float32]) -> NDArray[np.float32] | None:
    """``vector`` as a float32 unit vector, or ``None`` when it is empty, zero or not finite."""
    numpy = numpy_module()
    try:
        array = numpy.asarray(vector, dtype=numpy.float32).reshape(-1)
    except (TypeError, ValueError):
        return None
    norm = float(numpy.linalg.norm(array)) if array.size else 0.0
    if not numpy.isfinite(norm) or norm == 0.0:
        return None
    result: NDArray[np.float32] = array / numpy.float32(norm)
    return result


class VectorIndex:
    """Up to ``max_entries`` unit vectors of one dimension, each with an id and an expiry time (any
    clock, as long as :meth:`search` is given the same one). The oldest rows go first when full.

    A vector of another dimension resets the index: a partition's embedding backend changed, and the
    old vectors are no longer comparable. ``cursor`` and ``refreshed_at`` belong to the Redis mirror
    (the last stream id read and when); in-process indexes leave them alone.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, max_entries)
        self.dim = 0
        self._n = 0
        self._ids: list[str] = []
        self._vectors: NDArray[np.float32] | None = None
        self._expires: NDArray[np.float64] | None = None
        self.cursor = "0-0"
        self.refreshed_at = float("-inf")

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        if self._vectors is None or self._expires is None:
            return 0
        return int(self._vectors.nbytes + self._expires.nbytes) + 64 * len(self._ids)

    def add(self, entry_id: str, vector: NDArray[np.float32], expires_at: float) -> None:
        """Append one unit vector (see :func:`unit_vector`)."""
        numpy = numpy_module()
        if self._vectors is None or vector.shape[0] != self.dim:
            self.dim = int(vector.shape[0])
            self._n = 0
            self._ids = []
            self._vectors = numpy.empty((min(64, self.max_entries), self.dim), dtype=numpy.float32)
            self._expires = numpy.empty(self._vectors.shape[0], dtype=numpy.float64)
        assert self._vectors is not None and self._expires is not None
        if self._n == self.max_entries:
            # Drop the oldest eighth at once, so a full index shifts rows once per many appends.
            drop = max(1, self.max_entries // 8)
            self._vectors[: self._n - drop] = self._vectors[drop : self._n]
            self._expires[: self._n - drop] = self._expires[drop : self._n]
            del self._ids[:drop]
            self._n -= drop
        elif self._n == self._vectors.shape[0]:
            capacity = min(self.max_entries, 2 * self._n)
            self._vectors = numpy.resize(self._vectors, (capacity, self.dim))
            self._expires = numpy.resize(self._expires, capacity)
        assert self._vectors is not None and self._expires is not None
        self._vectors[self._n] = vector
        self._expires[self._n] = expires_at
        self._ids.append(entry_id)
        self._n += 1

    def search(self, vector: NDArray[np.float32], now: float) -> tuple[str, float] | None:
        """The id and cosine similarity of the nearest live row, or ``None`` (empty, other dimension)."""
        if self._vectors is None or self._expires is None or self._n == 0 or vector.shape[0] != self.dim:
            return None
        numpy = numpy_module()
        scores = self._vectors[: self._n] @ vector
        scores[self._expires[: self._n] <= now] = -numpy.inf
        best = int(numpy.argmax(scores))
        score = float(scores[best])
        if score == float("-inf"):
            return None
        return self._ids[best], score

    def discard(self, entry_id: str) -> None:
        """Mark a row dead (its answer is gone), so the next search finds the next nearest instead."""
        if self._expires is None:
            return
        try:
            row = self._ids.index(entry_id)
        except ValueError:
            return
        self._expires[row] = float("-inf")


class IndexSet:
    """One :class:`VectorIndex` per partition, ``max_entries`` rows each, at most ``max_bytes`` in
    all: past it, the least recently used partitions are dropped whole (one tenant's burst cannot
    grow memory without bound, and a partition nobody asks about is the cheapest to lose)."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._indexes: OrderedDict[str, VectorIndex] = OrderedDict()

    def __len__(self) -> int:
        return len(self._indexes)

    @property
    def nbytes(self) -> int:
        return sum(index.nbytes for index in self._indexes.values())

    def get(self, partition: str) -> VectorIndex | None:
        index = self._indexes.get(partition)
        if index is not None:
            self._indexes.move_to_end(partition)
        return index

    def get_or_create(self, partition: str) -> VectorIndex:
        index = self.get(partition)
        if index is None:
            index = self._indexes[partition] = VectorIndex(self.max_entries)
        return index

    def enforce_bound(self) -> int:
        """Drop least recently used partitions until within ``max_bytes``; how many went."""
        dropped = 0
        while len(self._indexes) > 1 and self.nbytes > self.max_bytes:
            self._indexes.popitem(last=False)
            dropped += 1
        return dropped

    def clear(self) -> None:
        self._indexes.clear()

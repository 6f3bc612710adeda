"""The response cache: exact and semantic hits, in memory or shared through Redis.

``keys.py`` says what an answer is filed under, ``memory.py`` and ``semantic.py`` hold answers and
vectors in-process, ``redis_store.py`` and ``redis_semantic.py`` share them through Redis (a stream
per partition stands in for a vector-search module), ``replay.py`` turns answers into streams and
back, and ``facade.py`` (:class:`ResponseCache`) is what the request path calls. ``docs/cache.md``
has the design, the Redis key layout and the measurements.
"""

from .facade import CacheLimits, ResponseCache
from .keys import IGNORED_FIELDS, CacheKey, exact_key, partition_of, semantic_partition, semantic_text
from .memory import MemoryLRU
from .redis_store import Outage, RedisStore
from .replay import assemble_response, cacheable, replay_chunks
from .semantic import IndexSet, VectorIndex, unit_vector

__all__ = [
    "IGNORED_FIELDS",
    "CacheKey",
    "CacheLimits",
    "IndexSet",
    "MemoryLRU",
    "Outage",
    "RedisStore",
    "ResponseCache",
    "VectorIndex",
    "assemble_response",
    "cacheable",
    "exact_key",
    "partition_of",
    "replay_chunks",
    "semantic_partition",
    "semantic_text",
    "unit_vector",
]

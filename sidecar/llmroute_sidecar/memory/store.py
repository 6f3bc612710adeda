"""Conversation histories in Redis, per namespace and tenant, with a TTL and a per-tenant bound.

A conversation is a list of JSON messages under ``llmroute:memory:<namespace>:<tenant>:c:<id>``;
per tenant, ``sizes`` holds each conversation's estimated tokens and ``lru`` when it was last
used. Appending is one Lua script: push the messages, renew the TTL, add the size, and while the
tenant's total exceeds its bound, erase its least recently used other conversations. So the bound
holds across every sidecar, and no conversation is half-written. Neighbours: ``policy.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["MemoryStore"]

Json = dict[str, Any]

# KEYS: list, sizes, lru. ARGV: conversation, ttl seconds, tokens, bound, now, replace (0/1), messages...
_APPEND = """
local list, sizes, lru = KEYS[1], KEYS[2], KEYS[3]
local conv, ttl, tokens, bound, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if ARGV[6] == '1' then
  redis.call('DEL', list)
  redis.call('HSET', sizes, conv, 0)
end
for i = 7, #ARGV do redis.call('RPUSH', list, ARGV[i]) end
redis.call('EXPIRE', list, ttl)
redis.call('HINCRBY', sizes, conv, tokens)
redis.call('ZADD', lru, now, conv)
redis.call('EXPIRE', sizes, ttl)
redis.call('EXPIRE', lru, ttl)
local total = 0
for _, v in ipairs(redis.call('HVALS', sizes)) do total = total + tonumber(v) end
local evicted = 0
while total > bound do
  local oldest = redis.call('ZRANGE', lru, 0, 0)[1]
  if oldest == nil or oldest == conv then break end
  total = total - tonumber(redis.call('HGET', sizes, oldest) or '0')
  redis.call('DEL', string.sub(list, 1, #list - #conv) .. oldest)
  redis.call('HDEL', sizes, oldest)
  redis.call('ZREM', lru, oldest)
  evicted = evicted + 1
end
return evicted
"""


class MemoryStore:
    def __init__(self, redis: redis.asyncio.Redis) -> None:
        self.redis = redis
        self._append = redis.register_script(_APPEND)

    @staticmethod
    def _keys(namespace: str, tenant: str, conversation: str) -> list[str]:
        # Percent-encoded: a tenant or id holding ":" must not reach into another tenant's keys.
        base = f"llmroute:memory:{quote(namespace, safe='')}:{quote(tenant, safe='')}:"
        return [f"{base}c:{quote(conversation, safe='')}", base + "sizes", base + "lru"]

    async def load(self, namespace: str, tenant: str, conversation: str) -> list[Json]:
        raw = await self.redis.lrange(self._keys(namespace, tenant, conversation)[0], 0, -1)
        return [orjson.loads(item) for item in raw]

    async def append(
        self,
        namespace: str,
        tenant: str,
        conversation: str,
        messages: Sequence[Json],
        *,
        tokens: int,
        ttl_seconds: float,
        max_tokens_per_tenant: int,
        replace: bool = False,
    ) -> int:
        """Add ``messages`` (or, with ``replace``, make them the whole history); returns how many of
        the tenant's other conversations the bound erased."""
        evicted = await self._append(
            keys=self._keys(namespace, tenant, conversation),
            args=[
                quote(conversation, safe=""), max(1, int(ttl_seconds)), tokens, max_tokens_per_tenant, time.time(),
                "1" if replace else "0", *(orjson.dumps(m) for m in messages),
            ],
        )  # fmt: skip
        return int(evicted)

    async def erase(self, namespace: str, tenant: str, conversation: str) -> bool:
        """Forget a conversation (GDPR erase); False when there was none."""
        keys = self._keys(namespace, tenant, conversation)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys[0])
            pipe.hdel(keys[1], quote(conversation, safe=""))
            pipe.zrem(keys[2], quote(conversation, safe=""))
            deleted, _sizes, _lru = await pipe.execute()
        return bool(deleted)

"""Buckets in a shared Redis, so a limit holds across every replica of a workload.

Each bucket is a hash ``{l: level, t: stamp}`` under a key built by the limiter
(``llmroute:rl:{<namespace>/<route>}:<limit index>:<user|tenant|route>:<id>:<req|tok>``; the braces
are a Redis Cluster hash tag, so all buckets of one route share a slot and one script may touch
them together). One Lua script (:data:`SCRIPT`) refills, checks and charges every bucket of an
admission atomically, with the clock of Redis (``TIME``), so the sidecars' clocks never matter. A
full bucket is deleted and every other key expires when it would have refilled, so idle keys vanish
and a missing key simply reads as full.

The script is sent once with ``EVALSHA``; when Redis answers ``NOSCRIPT`` (restart, failover,
``SCRIPT FLUSH``) it is sent whole with ``EVAL``, which also caches it again. Errors (Redis down,
slow, refusing) propagate: ``limiter.py`` decides to fall back to ``local.py``. The arithmetic is
``bucket.py``'s, written again in Lua; the unit tests hold both to the same behaviour. The client
belongs to whoever created it (it may be shared with the cache) and is never closed here.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import NoScriptError, RedisError

from .bucket import Charge, Outcome

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["OUTAGE_ERRORS", "SCRIPT", "RedisBuckets"]

#: What an unusable Redis raises: refused or dropped connections, timeouts (the client's and ours),
#: and error replies (``READONLY`` after a failover, ``OOM``, a broken script).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS: the buckets. ARGV[1]: "admit" (all-or-nothing) or "settle" (always applied); then, per key,
# its capacity and amount. Returns {allowed, level 1, ..., level n} with levels as strings, because
# Redis would truncate Lua numbers to integers in the reply.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local admit = ARGV[1] == 'admit'
local n = #KEYS
local levels = {}
local allowed = 1
for i = 1, n do
  local cap = tonumber(ARGV[2 * i])
  local amount = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = cap
  if state[1] and state[2] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    level = math.min(cap, tonumber(state[1]) + elapsed * cap / 60)
  end
  levels[i] = level
  if admit and level < math.min(amount, cap) then
    allowed = 0
  end
end
local out = {allowed}
for i = 1, n do
  local cap = tonumber(ARGV[2 * i])
  local amount = tonumber(ARGV[2 * i + 1])
  if allowed == 1 then
    local level = math.min(cap, levels[i] - amount)
    levels[i] = level
    if level >= cap then
      redis.call('DEL', KEYS[i])
    else
      redis.call('HSET', KEYS[i], 'l', string.format('%.17g', level), 't', string.format('%.17g', now))
      redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * 60000 / cap) + 1000)
    end
  end
  out[i + 1] = string.format('%.17g', levels[i])
end
return out
"""

_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class RedisBuckets:
    """The two bucket operations on a Redis client, each bounded by ``timeout`` seconds as a whole
    (the client's own retries included)."""

    def __init__(self, client: Redis, *, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    async def admit(self, charges: Sequence[Charge]) -> Outcome:
        return await self._run("admit", charges)

    async def settle(self, charges: Sequence[Charge]) -> None:
        await self._run("settle", charges)

    async def ping(self) -> None:
        async with asyncio.timeout(self._timeout):
            await self._client.ping()

    async def _run(self, mode: str, charges: Sequence[Charge]) -> Outcome:
        keys = [c.key for c in charges]
        args: list[str | int] = [mode]
        for charge in charges:
            args += [charge.capacity, charge.amount]
        async with asyncio.timeout(self._timeout):
            try:
                reply = await self._client.evalsha(_SHA, len(keys), *keys, *args)
            except NoScriptError:
                reply = await self._client.eval(SCRIPT, len(keys), *keys, *args)
        allowed, *levels = reply
        return Outcome(int(allowed) == 1, tuple(float(level) for level in levels))

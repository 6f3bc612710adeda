"""Provider batch submissions in Redis: what was sent to which provider batch, owned by whom.

A submission is a group of one app batch's lines bound for one backend's batch API. It is written
once, atomically, when its lines are sealed (:meth:`Submissions.seal`): a Lua script assigns each
line to it (``<batch>:assigned``, first writer wins, never a line that already ended), stores the
provider requests and each line's accounting facts (:class:`LineMeta`), adds the submission to the
scope's ``subs`` set and makes the sealing sidecar its owner; only then are the lines' stream
entries acknowledged, so a crash before that leaves them pending for another sidecar to plan again.

Ownership is a key with a time to live (``sub:<id>:owner``) that its sidecar renews; when it lapses
(the sidecar stopped or died), another sidecar claims the submission and carries on from its state
(``submitting``, ``submitted``), holding its provider ids, so nothing is submitted twice. Each line
of a submission ends once: it is accounted once (``:acct`` keeps its cost) and resolved once
(``:res``: answered, dead-lettered, skipped, or sent back to the stream to run live). Neighbours:
``store.py`` (the batches and the stream), ``provider_poller.py`` (drives submissions).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import orjson

from .store import GROUP, BatchStore

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["LineMeta", "Submission", "Submissions"]

_KEEP_MARKS_SECONDS = 7 * 86400  # a late straggler still finds a line accounted and resolved
_REMOTES_SECONDS = 2 * 86400

# KEYS: sub, req, lines, assigned, done, subs, owner. ARGV: id, owner, ttl ms, n, n field pairs,
# then (index, request, meta) triples. Returns the indexes it took.
_SEAL = """
local pairs_at = 5
local n = tonumber(ARGV[4])
local taken = {}
for i = pairs_at + 2 * n, #ARGV, 3 do
  local index = ARGV[i]
  if redis.call('HEXISTS', KEYS[5], index) == 0 and redis.call('HSETNX', KEYS[4], index, ARGV[1]) == 1 then
    redis.call('HSET', KEYS[2], index, ARGV[i + 1])
    redis.call('HSET', KEYS[3], index, ARGV[i + 2])
    taken[#taken + 1] = index
  end
end
if #taken > 0 then
  for i = pairs_at, pairs_at + 2 * n - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], 'count', #taken)
  redis.call('SADD', KEYS[6], ARGV[1])
  redis.call('SET', KEYS[7], ARGV[2], 'PX', ARGV[3])
end
return taken
"""
# KEYS: owner keys. ARGV: owner, ttl ms.
_RENEW = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) end
end
return 1
"""
# KEYS: sub, owner. ARGV: owner, then field pairs. Written only by the owner.
_MARK = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
# KEYS: res, done, assigned, stream. ARGV: index, sub id, batch id. Back to the stream, once.
_REQUEUE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], 'live') == 0 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[3], ARGV[1]) end
redis.call('XADD', KEYS[4], '*', 'b', ARGV[3], 'i', ARGV[1], 'l', '1')
return 1
"""
# KEYS: owner, sub, req, lines, acct, res, subs. ARGV: owner, id, keep seconds.
_END = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('EXPIRE', KEYS[5], ARGV[3])
redis.call('EXPIRE', KEYS[6], ARGV[3])
redis.call('SREM', KEYS[7], ARGV[2])
return 1
"""
# KEYS: owner. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""


@dataclass(frozen=True)
class LineMeta:
    """What accounting a line needs when its answer comes, perhaps on another sidecar."""

    model: str  # the logical model the app asked for
    input_tokens: int  # the planner's estimate, which rate limits were charged with
    output_tokens: int
    rate_charged: bool
    strategy: str
    admitted_at: float  # epoch seconds
    reserved: int  # micro-USD its sidecar holds in the budgets for it (the discounted estimate)
    cache: str = ""  # the cache status at admission ("" when the route caches nothing)

    def dumps(self) -> bytes:
        return orjson.dumps(list(asdict(self).values()))

    @classmethod
    def loads(cls, raw: bytes | str) -> LineMeta:
        values = orjson.loads(raw)
        names = [f.name for f in fields(cls)]
        return cls(**dict(zip(names, values, strict=False)))


@dataclass(frozen=True)
class Submission:
    """One provider batch of one app batch's lines for one backend."""

    id: str
    batch_id: str
    route: str  # the route's name
    backend: str
    provider: str
    tenant: str
    user: str
    discount: float  # percent off, as configured when the lines were admitted
    # Discounted USD per million tokens then (cached -1: the input price), for accounting a line
    # whose model left the config meanwhile.
    input_price: float
    output_price: float
    cached_price: float
    created_at: float
    state: str = "submitting"  # submitting | submitted
    count: int = 0
    sent_at: float = 0.0  # the create call was last sent then (0: never)
    tries: int = 0  # create calls sent
    remote_id: str = ""  # the provider's batch id
    cancel_sent: bool = False

    def pairs(self) -> list[str]:
        out: list[str] = []
        for name, value in asdict(self).items():
            if name not in ("id", "count"):
                out += [name, str(int(value)) if isinstance(value, bool) else str(value)]
        return out

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> Submission | None:
        values = {_text(k): _text(v) for k, v in raw.items()}
        if "batch_id" not in values:
            return None
        out: dict[str, Any] = {}
        for f in fields(cls):
            text = values.get(f.name)
            if text is None:
                continue
            if f.type == "float":
                out[f.name] = float(text or 0)
            elif f.type == "int":
                out[f.name] = int(text or 0)
            elif f.type == "bool":
                out[f.name] = text == "1"
            else:
                out[f.name] = text
        out.setdefault("id", "")
        return cls(**out)


class Submissions:
    """The submissions of one scope (the scope of ``store``)."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.redis: redis.asyncio.Redis = store.redis
        self.prefix = store.prefix
        self.index = store.prefix + "subs"
        self._seal = self.redis.register_script(_SEAL)
        self._renew = self.redis.register_script(_RENEW)
        self._mark = self.redis.register_script(_MARK)
        self._requeue = self.redis.register_script(_REQUEUE)
        self._end = self.redis.register_script(_END)
        self._release = self.redis.register_script(_RELEASE)

    def key(self, sub_id: str, part: str = "") -> str:
        return f"{self.prefix}sub:{sub_id}" + (f":{part}" if part else "")

    def _batch(self, batch_id: str, part: str) -> str:
        return f"{self.prefix}batch:{batch_id}:{part}"

    async def seal(
        self, sub: Submission, lines: list[tuple[int, bytes, LineMeta]], *, owner: str, ttl_ms: int
    ) -> list[int]:
        """Write ``sub`` with ``lines`` (index, provider request, meta) and own it; the indexes it
        took (a line already ended or in another submission is left out). Nothing is written when
        it took none."""
        args: list[Any] = [sub.id, owner, ttl_ms]
        pairs = sub.pairs()
        args += [len(pairs) // 2, *pairs]
        for index, request, meta in lines:
            args += [index, request, meta.dumps()]
        keys = [
            self.key(sub.id), self.key(sub.id, "req"), self.key(sub.id, "lines"),
            self._batch(sub.batch_id, "assigned"), self._batch(sub.batch_id, "done"), self.index,
            self.key(sub.id, "owner"),
        ]  # fmt: skip
        taken = await self._seal(keys=keys, args=args)
        return [int(_text(i)) for i in taken]

    async def load(self, sub_id: str) -> Submission | None:
        raw = await self.redis.hgetall(self.key(sub_id))
        parsed = Submission.parse(raw) if raw else None
        return replace(parsed, id=sub_id) if parsed is not None else None

    async def active(self) -> list[str]:
        return sorted(_text(s) for s in await self.redis.smembers(self.index))

    async def remember_remote(self, remote_id: str) -> None:
        """A provider batch one of this scope's submissions holds (kept two days, the longest a
        provider batch of ours may still be running plus margin)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.prefix + "remotes", {remote_id: now})
            pipe.zremrangebyscore(self.prefix + "remotes", 0, now - _REMOTES_SECONDS)
            await pipe.execute()

    async def remote_ids(self) -> set[str]:
        """Provider batch ids this scope's submissions hold or held lately: a lost submission is
        never matched with one of them (``ProviderBatchClient.find``)."""
        return {_text(r) for r in await self.redis.zrange(self.prefix + "remotes", 0, -1)}

    async def requests(self, sub_id: str) -> list[bytes]:
        raw = await self.redis.hgetall(self.key(sub_id, "req"))
        return [
            v if isinstance(v, bytes) else str(v).encode()
            for _, v in sorted(raw.items(), key=lambda kv: int(kv[0]))
        ]

    async def lines(self, sub_id: str) -> dict[int, LineMeta]:
        raw = await self.redis.hgetall(self.key(sub_id, "lines"))
        return {int(_text(k)): LineMeta.loads(v) for k, v in raw.items()}

    # -- ownership --------------------------------------------------------------------------------

    async def claim(self, sub_id: str, owner: str, ttl_ms: int) -> bool:
        """Own a submission nobody owns (its owner stopped renewing)."""
        return bool(await self.redis.set(self.key(sub_id, "owner"), owner, nx=True, px=ttl_ms))

    async def renew(self, sub_ids: list[str], owner: str, ttl_ms: int) -> None:
        if sub_ids:
            await self._renew(keys=[self.key(s, "owner") for s in sub_ids], args=[owner, ttl_ms])

    async def release(self, sub_id: str, owner: str) -> None:
        await self._release(keys=[self.key(sub_id, "owner")], args=[owner])

    async def mark(self, sub_id: str, owner: str, **values: object) -> bool:
        """Update fields of an owned submission; False if it is not ours (any more)."""
        args: list[Any] = [owner]
        for name, value in values.items():
            args += [name, str(int(value)) if isinstance(value, bool) else str(value)]
        keys = [self.key(sub_id), self.key(sub_id, "owner")]
        return bool(await self._mark(keys=keys, args=args))

    async def end(self, sub: Submission, owner: str) -> bool:
        keys = [
            self.key(sub.id, "owner"), self.key(sub.id), self.key(sub.id, "req"), self.key(sub.id, "lines"),
            self.key(sub.id, "acct"), self.key(sub.id, "res"), self.index,
        ]  # fmt: skip
        return bool(await self._end(keys=keys, args=[owner, sub.id, _KEEP_MARKS_SECONDS]))

    async def drop_requests(self, sub_id: str) -> None:
        """The provider has them now; they need not take room in Redis any more."""
        await self.redis.delete(self.key(sub_id, "req"))

    # -- lines ------------------------------------------------------------------------------------

    async def account(self, sub_id: str, index: int, cost: int) -> tuple[bool, int]:
        """(True, cost) for the first caller, who must account the line; else (False, the cost
        recorded then)."""
        key = self.key(sub_id, "acct")
        if await self.redis.hsetnx(key, str(index), cost):
            return True, cost
        return False, int(_text(await self.redis.hget(key, str(index))) or 0)

    async def settled(self, sub_id: str) -> set[int]:
        """Lines already accounted or resolved: they need no budget any more."""
        keys = [
            *await self.redis.hkeys(self.key(sub_id, "acct")),
            *await self.redis.hkeys(self.key(sub_id, "res")),
        ]
        return {int(_text(k)) for k in keys}

    async def resolved(self, sub_id: str, index: int, how: str) -> bool:
        """Mark the line resolved (out, err, skip); False if it already was."""
        return bool(await self.redis.hsetnx(self.key(sub_id, "res"), str(index), how))

    async def requeue(self, sub: Submission, index: int) -> bool:
        """Send the line back to the stream, to run live; once."""
        keys = [
            self.key(sub.id, "res"), self._batch(sub.batch_id, "done"), self._batch(sub.batch_id, "assigned"),
            self.store.stream,
        ]  # fmt: skip
        return bool(await self._requeue(keys=keys, args=[index, sub.id, sub.batch_id]))

    async def ack_all(self, entry_ids: list[str]) -> None:
        """Acknowledge and delete stream entries whose lines are in a submission now."""
        if entry_ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.store.stream, GROUP, *entry_ids)
                pipe.xdel(self.store.stream, *entry_ids)
                await pipe.execute()

    async def assigned(self, batch_id: str, index: int) -> str:
        """The submission a line belongs to, or ""."""
        return _text(await self.redis.hget(self._batch(batch_id, "assigned"), str(index)))

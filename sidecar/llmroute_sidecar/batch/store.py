"""Files, batch jobs and their lines in Redis: the state every sidecar replica of a workload shares.

Keys live under ``llmroute:batch:<namespace>/<workload>:``, so replicas of one workload share jobs
and no other workload sees them. A file is a hash (metadata, tenant, content). A batch is a hash of
its fields and counters, with its input lines in ``<batch>:in``. Lines are queued as entries of one
Redis Stream per scope (``lines``), read through the consumer group ``workers``: each entry goes to
one sidecar, stays in its pending list until acknowledged, and is claimed by another sidecar
(``XAUTOCLAIM``) if its holder stops renewing it, so a killed sidecar loses no line. A line's end is
recorded once: the ``<batch>:done`` hash takes the first record of a line and ignores any later
one (a Lua script, atomic with the counters), so no line is counted or written twice.
When every line has ended, one sidecar (a ``SET NX`` lock) writes the output and error files and
marks the batch completed (or cancelled). An ended batch and its output and error files expire
``retention_seconds`` later (the files say so in ``expires_at``); index entries of expired objects
are dropped as a list meets them. Input files stay until deleted, as OpenAI's do. Neighbours: ``objects.py`` shapes what is stored,
``worker.py`` drives the lines, ``http.py`` serves the endpoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .objects import (
    COMPLETION_WINDOW_SECONDS,
    TERMINAL,
    BatchRequest,
    InputLine,
    LineError,
    file_object,
    new_batch_id,
    new_file_id,
    now,
)

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["BatchInfo", "BatchStore", "Claimed", "Counts", "Kind"]

Json = dict[str, Any]
Fields = dict[Any, bytes | str | int]  # a Redis hash as written
Kind = Literal["out", "err", "skip"]
GROUP = "workers"
_COUNTER = {"out": "completed", "err": "failed", "skip": "skipped"}
_SHOWN = {"expiring": "finalizing"}  # the window ran out; unrun lines are being written off
_ENDS = {"cancelling": ("cancelled", "cancelled_at"), "expiring": ("expired", "expired_at")}
_FINALIZE_LOCK_SECONDS = 120
_DONE_TTL_SECONDS = 7 * 86400

# KEYS: done hash, kind hash, batch hash. ARGV: index, kind, line, counter, input, output, cost.
# Returns the counts after it, and 1 if this call took the record.
_RECORD = """
local taken = 0
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  redis.call('HINCRBY', KEYS[3], 'input_tokens', ARGV[5])
  redis.call('HINCRBY', KEYS[3], 'output_tokens', ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'cost_micro_usd', ARGV[7])
  taken = 1
end
local counts = redis.call('HMGET', KEYS[3], 'completed', 'failed', 'skipped', 'total', 'status')
counts[6] = taken
return counts
"""


@dataclass(frozen=True)
class Counts:
    completed: int
    failed: int
    skipped: int
    total: int
    status: str

    @property
    def ended(self) -> bool:
        return self.completed + self.failed + self.skipped >= self.total


@dataclass(frozen=True)
class Claimed:
    """A stream entry a worker holds: line ``index`` of ``batch_id``; ``live``: it came back from
    a provider batch (``provider_poller.py``) and runs live."""

    entry_id: str
    batch_id: str
    index: int
    live: bool = False


@dataclass(frozen=True)
class BatchInfo:
    """What a worker needs to run a batch's lines."""

    status: str
    endpoint: str
    tenant: str
    user: str


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""


def _int(value: object) -> int:
    text = _text(value)
    return int(text) if text.lstrip("-").isdigit() else 0


class BatchStore:
    def __init__(
        self,
        redis: redis.asyncio.Redis,
        scope: str,
        *,
        retention_seconds: float = 30 * 86400,
        window_seconds: float | None = None,
    ) -> None:
        self.redis = redis
        self.retention = max(1, int(retention_seconds))
        self.window = max(1, int(window_seconds)) if window_seconds else None  # tests: not the API's 24h
        self.prefix = f"llmroute:batch:{scope}:"
        self.stream = self.prefix + "lines"
        self._record = redis.register_script(_RECORD)

    def _file_key(self, file_id: str) -> str:
        return f"{self.prefix}file:{file_id}"

    def _batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def _key_of(self, object_id: str) -> str:
        return self._batch_key(object_id) if object_id.startswith("batch_") else self._file_key(object_id)

    # -- files ----------------------------------------------------------------------------------

    async def put_file(
        self,
        content: bytes,
        *,
        filename: str,
        purpose: str,
        tenant: str,
        file_id: str | None = None,
        expires: bool = False,
    ) -> Json:
        """Store a file; with ``expires``, it is dropped after the retention period."""
        file_id = file_id or new_file_id()
        created = now()
        meta = file_object(
            file_id=file_id, size=len(content), created_at=created, filename=filename, purpose=purpose,
            expires_at=created + self.retention if expires else None,
        )  # fmt: skip
        key = self._file_key(file_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"meta": orjson.dumps(meta), "tenant": tenant, "content": content})
            if expires:
                pipe.expire(key, self.retention)
            pipe.zadd(self.prefix + "files", {file_id: created})
            await pipe.execute()
        return meta

    async def file(self, file_id: str, tenant: str) -> Json | None:
        meta, owner = await self.redis.hmget(self._file_key(file_id), ["meta", "tenant"])
        if meta is None or _text(owner) != tenant:
            return None
        return dict(orjson.loads(meta))

    async def file_content(self, file_id: str, tenant: str) -> bytes | None:
        content, owner = await self.redis.hmget(self._file_key(file_id), ["content", "tenant"])
        if content is None or _text(owner) != tenant:
            return None
        return content.encode() if isinstance(content, str) else bytes(content)

    async def delete_file(self, file_id: str, tenant: str) -> Json | None:
        """The deleted file's metadata, or None when the tenant has no such file."""
        meta = await self.file(file_id, tenant)
        if meta is not None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._file_key(file_id))
                pipe.zrem(self.prefix + "files", file_id)
                await pipe.execute()
        return meta

    async def list_files(self, tenant: str, *, after: str, limit: int, purpose: str = "") -> list[Json]:
        async def visible(file_id: str) -> Json | None:
            meta = await self.file(file_id, tenant)
            return meta if meta is not None and (not purpose or meta["purpose"] == purpose) else None

        return await self._page(self.prefix + "files", visible, after=after, limit=limit)

    async def _page(
        self, index: str, fetch: Callable[[str], Awaitable[Json | None]], *, after: str, limit: int
    ) -> list[Json]:
        """Up to ``limit`` + 1 objects of ``index`` (the extra one says has_more), newest first, like
        OpenAI's default order; ``after`` is the last id of the previous page; ``fetch`` returns None
        for an object the caller may not see."""
        ids = [_text(i) for i in await self.redis.zrevrange(index, 0, -1)]
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        out: list[Json] = []
        expired: list[str] = []
        for object_id in ids:
            item = await fetch(object_id)
            if item is not None:
                out.append(item)
                if len(out) > limit:
                    break
            elif not await self.redis.exists(self._key_of(object_id)):
                expired.append(object_id)  # its retention ran out: the index forgets it too
        if expired:
            await self.redis.zrem(index, *expired)
        return out

    # -- batches --------------------------------------------------------------------------------

    async def create_batch(
        self,
        request: BatchRequest,
        lines: list[InputLine],
        errors: list[LineError],
        *,
        tenant: str,
        user: str,
    ) -> Json:
        """A new batch: failed at once when its input had bad lines, else queued, line by line."""
        batch_id = new_batch_id()
        created = now()
        fields: Fields = {
            "id": batch_id,
            "endpoint": request.endpoint,
            "input_file_id": request.input_file_id,
            "completion_window": request.completion_window,
            "created_at": created,
            "expires_at": created + (self.window or COMPLETION_WINDOW_SECONDS[request.completion_window]),
            "metadata": orjson.dumps(request.metadata),
            "model": str(lines[0].body["model"]) if lines else "",
            "tenant": tenant,
            "user": user,
            "total": len(lines),
            "completed": 0,
            "failed": 0,
            "skipped": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_micro_usd": 0,
        }
        key = self._batch_key(batch_id)
        if errors:
            fields |= {
                "status": "failed",
                "failed_at": created,
                "errors": orjson.dumps([e.json() for e in errors]),
                "total": 0,
            }
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self.retention)  # ended at once: kept as long as any ended batch
                pipe.zadd(self.prefix + "batches", {batch_id: created})
                await pipe.execute()
            return self._object(fields)
        fields |= {"status": "in_progress", "in_progress_at": created}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            for start in range(0, len(lines), 1000):
                chunk = lines[start : start + 1000]
                pipe.hset(
                    key + ":in",
                    mapping={str(line.index): orjson.dumps([line.custom_id, line.body]) for line in chunk},
                )
            for line in lines:
                pipe.xadd(self.stream, {"b": batch_id, "i": line.index})
            pipe.zadd(self.prefix + "batches", {batch_id: created})
            pipe.sadd(self.prefix + "active", batch_id)
            await pipe.execute()
        return self._object(fields)

    async def batch(self, batch_id: str, tenant: str) -> Json | None:
        fields = await self._fields(batch_id)
        if fields is None or fields.get("tenant", "") != tenant:
            return None
        return self._object(fields)

    async def _fields(self, batch_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self._batch_key(batch_id))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    async def list_batches(self, tenant: str, *, after: str, limit: int) -> list[Json]:
        return await self._page(
            self.prefix + "batches", lambda batch_id: self.batch(batch_id, tenant), after=after, limit=limit
        )

    async def cancel(self, batch_id: str, tenant: str) -> Json | None:
        """Cancelling: lines not started are skipped; lines running finish; then ``cancelled``."""
        fields = await self._fields(batch_id)
        if fields is None or fields.get("tenant", "") != tenant:
            return None
        if fields.get("status") not in TERMINAL and fields.get("status") not in ("cancelling", "expiring"):
            moment = now()
            await self.redis.hset(
                self._batch_key(batch_id), mapping={"status": "cancelling", "cancelling_at": moment}
            )
            fields |= {"status": "cancelling", "cancelling_at": str(moment)}
        return self._object(fields)

    @staticmethod
    def _object(fields: dict[str, Any]) -> Json:
        """The OpenAI Batch object of a stored batch."""

        def opt(name: str) -> int | None:
            value = fields.get(name)
            return _int(value) if value not in (None, "") else None

        errors = fields.get("errors")
        metadata = fields.get("metadata")
        inputs, outputs = _int(fields.get("input_tokens")), _int(fields.get("output_tokens"))
        return {
            "id": _text(fields["id"]),
            "object": "batch",
            "endpoint": _text(fields["endpoint"]),
            "model": _text(fields.get("model")) or None,
            "errors": {"object": "list", "data": orjson.loads(errors)} if errors else None,
            "input_file_id": _text(fields["input_file_id"]),
            "completion_window": _text(fields["completion_window"]),
            "status": _SHOWN.get(_text(fields["status"]), _text(fields["status"])),
            "output_file_id": _text(fields.get("output_file_id")) or None,
            "error_file_id": _text(fields.get("error_file_id")) or None,
            "created_at": _int(fields["created_at"]),
            **{
                name: opt(name)
                for name in (
                    "in_progress_at",
                    "expires_at",
                    "finalizing_at",
                    "completed_at",
                    "failed_at",
                    "expired_at",
                    "cancelling_at",
                    "cancelled_at",
                )
            },
            "request_counts": {
                "total": _int(fields.get("total")),
                "completed": _int(fields.get("completed")),
                "failed": _int(fields.get("failed")),
            },
            "usage": {
                "input_tokens": inputs,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": outputs,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": inputs + outputs,
            },
            "metadata": orjson.loads(metadata) if metadata else None,
        }

    # -- the worker's side ----------------------------------------------------------------------

    async def ensure_group(self) -> None:
        import redis.exceptions

        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _claimed(entries: list[Any]) -> list[Claimed]:
        out: list[Claimed] = []
        for entry_id, values in entries:
            if not values:  # deleted meanwhile
                continue
            fields = {_text(k): _text(v) for k, v in values.items()}
            out.append(
                Claimed(_text(entry_id), fields.get("b", ""), _int(fields.get("i")), fields.get("l") == "1")
            )
        return out

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Claimed]:
        """New entries for ``consumer``, waiting up to ``block_ms`` for one."""
        reply: Any = await self.redis.xreadgroup(
            GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return self._claimed(reply[0][1]) if reply else []

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Claimed]:
        """Entries another consumer has held idle for ``min_idle_ms`` (it stopped or died)."""
        reply: Any = await self.redis.xautoclaim(
            self.stream, GROUP, consumer, min_idle_ms, "0-0", count=count
        )
        return self._claimed(reply[1])

    async def renew(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of entries still being worked on, so nobody reclaims them."""
        if entry_ids:
            await self.redis.xclaim(self.stream, GROUP, consumer, 0, list[Any](entry_ids), justid=True)

    async def ack(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def info(self, batch_id: str) -> BatchInfo | None:
        status, endpoint, tenant, user = await self.redis.hmget(
            self._batch_key(batch_id), ["status", "endpoint", "tenant", "user"]
        )
        if status is None:
            return None
        return BatchInfo(_text(status), _text(endpoint), _text(tenant), _text(user))

    async def line(self, batch_id: str, index: int) -> InputLine | None:
        raw = await self.redis.hget(self._batch_key(batch_id) + ":in", str(index))
        if raw is None:
            return None
        custom_id, body = orjson.loads(raw)
        return InputLine(index, str(custom_id), dict(body))

    async def ended(self, batch_id: str, index: int) -> bool:
        return bool(await self.redis.hexists(self._batch_key(batch_id) + ":done", str(index)))

    async def next_attempt(self, batch_id: str, index: int) -> int:
        """Count one more attempt of the line (kept in Redis: a reclaimed line keeps its count)."""
        return int(await self.redis.hincrby(self._batch_key(batch_id) + ":tries", str(index), 1))

    async def record(
        self,
        batch_id: str,
        index: int,
        kind: Kind,
        line: bytes = b"",
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_micro_usd: int = 0,
    ) -> Counts:
        """The line's end, once; returns the batch's counts after it."""
        key = self._batch_key(batch_id)
        reply = await self._record(
            keys=[key + ":done", f"{key}:{kind}", key],
            args=[index, kind, line, _COUNTER[kind], input_tokens, output_tokens, cost_micro_usd],
        )
        completed, failed, skipped, total, status = reply[:5]
        return Counts(_int(completed), _int(failed), _int(skipped), _int(total), _text(status))

    async def record_many(self, batch_id: str, lines: list[tuple[int, Kind, bytes]]) -> int:
        """Several lines' ends at once (each once, as :meth:`record`); how many this call took."""
        key = self._batch_key(batch_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for index, kind, line in lines:
                await self._record(
                    keys=[key + ":done", f"{key}:{kind}", key], args=[index, kind, line, _COUNTER[kind], 0, 0, 0],
                    client=pipe,
                )  # fmt: skip
            replies = await pipe.execute()
        return sum(1 for reply in replies if _int(reply[5]) == 1)

    async def counts(self, batch_id: str) -> Counts:
        completed, failed, skipped, total, status = await self.redis.hmget(
            self._batch_key(batch_id), ["completed", "failed", "skipped", "total", "status"]
        )
        return Counts(_int(completed), _int(failed), _int(skipped), _int(total), _text(status))

    async def active(self) -> list[str]:
        return sorted(_text(b) for b in await self.redis.smembers(self.prefix + "active"))

    async def finalize(self, batch_id: str) -> bool:
        """Write the output and error files and end the batch, if every line has ended and no other
        sidecar is doing it; True if this call ended it. Safe to repeat after a crash: the files'
        ids come from the batch's, so a second run overwrites rather than duplicates them."""
        key = self._batch_key(batch_id)
        counts = await self.counts(batch_id)
        if counts.status in TERMINAL or counts.status == "" or not counts.ended:
            if counts.status in TERMINAL or counts.status == "":
                await self.redis.srem(self.prefix + "active", batch_id)
            return False
        if not await self.redis.set(key + ":final", "1", nx=True, ex=_FINALIZE_LOCK_SECONDS):
            return False
        fields = await self._fields(batch_id) or {}
        tenant = fields.get("tenant", "")
        moment = now()
        await self.redis.hset(key, mapping={"finalizing_at": moment})
        update: Fields = {}
        for kind, field, suffix in (("out", "output_file_id", "output"), ("err", "error_file_id", "errors")):
            raw = await self.redis.hgetall(f"{key}:{kind}")
            if not raw:
                continue
            ordered = [raw[k] for k in sorted(raw, key=_int)]
            file_id = f"file-{batch_id.removeprefix('batch_')}-{suffix}"
            await self.put_file(
                b"\n".join(v.encode() if isinstance(v, str) else bytes(v) for v in ordered) + b"\n",
                filename=f"{batch_id}_{suffix}.jsonl",
                purpose="batch_output",
                tenant=tenant,
                file_id=file_id,
                expires=True,
            )
            update[field] = file_id
        status, stamp = _ENDS.get(counts.status, ("completed", "completed_at"))
        update |= {"status": status, stamp: moment}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=update)
            pipe.srem(self.prefix + "active", batch_id)
            pipe.delete(
                key + ":in", key + ":tries", key + ":out", key + ":err", key + ":skip", key + ":final",
                key + ":assigned",
            )  # fmt: skip
            pipe.expire(key + ":done", _DONE_TTL_SECONDS)  # still ignores a straggler's late record
            pipe.expire(key, self.retention)
            await pipe.execute()
        return True

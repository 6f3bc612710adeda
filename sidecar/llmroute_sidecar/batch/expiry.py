"""The completion window: a batch not done when its ``expires_at`` passes ends ``expired``.

OpenAI's semantics: the lines answered so far stay in the output file; every line not run by then
goes to the error file with ``error.code`` ``batch_expired``, and the batch ends ``expired`` with
``expired_at``. Here the workers' sweep (every sidecar, every few seconds) finds such a batch, moves
it from ``in_progress`` to ``expiring`` in one atomic step (so a cancel or a second sweep cannot
race it; the API shows it as ``finalizing`` meanwhile), writes off each line that has not ended
(each once, like any line's end, so two sidecars may do it side by side), and ``store.finalize``
then ends it ``expired``. A line still running live when that happens may still answer: its usage is
counted (it was billed) but the batch's files keep the write-off. Lines in a provider batch are
written off too, and ``provider_poller.py`` cancels that provider batch. A sweep interrupted by a
crash is picked up by the next one: an ``expiring`` batch is written off until none is left.
Neighbours: ``worker.py`` runs :func:`expire_if_due` from its sweep; ``store.py`` keeps the lines.
"""

from __future__ import annotations

import time

import orjson

from .objects import InputLine, expired_line
from .store import BatchStore, Kind

__all__ = ["expire_if_due"]

_CHUNK = 500

# KEYS: batch hash. ARGV: now. in_progress -> expiring, when the window has passed.
_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'in_progress' then return 0 end
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0')
if expires == nil or expires == 0 or expires > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'expiring')
return 1
"""


async def expire_if_due(store: BatchStore, batch_id: str, *, now: float | None = None) -> int:
    """Expire ``batch_id`` if its window has passed; returns how many lines this call wrote off."""
    key = f"{store.prefix}batch:{batch_id}"
    started = await store.redis.eval(_START, 1, key, int(now if now is not None else time.time()))
    counts = await store.counts(batch_id)
    if counts.status != "expiring":
        return 0
    if started:
        await store.redis.hset(key, "expiring_at", int(time.time()))
    done = {int(i) for i in await store.redis.hkeys(key + ":done")}
    missing = [i for i in range(counts.total) if i not in done]
    written = 0
    for start in range(0, len(missing), _CHUNK):
        chunk = missing[start : start + _CHUNK]
        raws = await store.redis.hmget(key + ":in", [str(i) for i in chunk])
        lines: list[tuple[int, Kind, bytes]] = []
        for index, raw in zip(chunk, raws, strict=True):
            custom_id = str(orjson.loads(raw)[0]) if raw is not None else str(index)
            lines.append((index, "err", expired_line(InputLine(index, custom_id, {}))))
        written += await store.record_many(batch_id, lines)
    return written

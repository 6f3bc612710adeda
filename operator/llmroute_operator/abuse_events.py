"""Abuse blocks as Kubernetes Events: a ``budgets.UsageConsumer`` that turns the usage records of
outcome ABUSE_BLOCK into a Warning Event ``AbuseBlocked`` on the route.

A sidecar that blocks a user or tenant (``spec.abuse``, the sidecar's ``abuse/``) sends one such
record per block; it arrives on the usage stream and is de-duplicated with the rest of the batch,
so each block becomes one Event (``kubectl describe llmroute`` and ``kubectl get events`` show who
was blocked, why, for how long, and what the window held). Events are best effort, like every
Event: they are written in the background, and a batch's acknowledgement never waits for them.
Only the leader receives usage, so only it writes these. Neighbours: ``app.py`` (composition),
``handlers/routes.py`` (the RouteBook, for the route's object reference).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from llmroute_proto.v1 import usage_pb2 as upb

__all__ = ["AbuseEvents", "describe"]

log = logging.getLogger(__name__)
Key = tuple[str, str]
Emit = Callable[[Mapping[str, Any], str], Awaitable[None]]  # (involved object, message)
_MAX_PENDING = 1000  # Events waiting to be written; past this they are dropped (and logged)


class _Entry(Protocol):
    def involved(self) -> dict[str, Any]: ...


class _Routes(Protocol):
    def entry(self, namespace: str, name: str) -> _Entry | None: ...


def describe(record: upb.UsageRecord) -> str:
    """The Event message for one block."""
    block = record.abuse_block
    if block.by_tenant:
        who = f"tenant {record.tenant!r}"
    elif record.WhichOneof("user") == "user_sha256":
        who = f"user sha256:{record.user_sha256[:16]}"
    else:
        who = f"user {record.user_raw!r}" if record.user_raw else "anonymous users"
    seconds = block.block_for.ToTimedelta().total_seconds()
    lasting = f"{seconds / 60:g}m" if seconds >= 60 else f"{seconds:g}s"
    why = block.reason.replace("_", " ") or "abuse"
    window = f" (window: {block.window})" if block.window else ""
    return f"{who} blocked for {lasting} by abuse protection: {why}{window}"[:1024]


class AbuseEvents:
    """Writes an ``AbuseBlocked`` Event for every abuse block a sidecar reports."""

    def __init__(self, *, routes: _Routes, emit: Emit) -> None:
        self._routes = routes
        self._emit = emit
        self._tasks: set[asyncio.Task[None]] = set()
        self.emitted = 0

    def count(
        self, namespace: str, instance: str, sequence: int, records: Sequence[upb.UsageRecord], now: datetime
    ) -> Mapping[Key, int]:
        for record in records:
            if record.outcome != upb.USAGE_OUTCOME_ABUSE_BLOCK:
                continue
            entry = self._routes.entry(namespace, record.route)
            if entry is None:
                continue  # a route deleted since: nothing to attach the Event to
            if len(self._tasks) >= _MAX_PENDING:
                log.warning("abuse Event dropped (%d pending): %s", len(self._tasks), describe(record))
                continue
            task = asyncio.get_running_loop().create_task(self._write(entry.involved(), describe(record)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {}

    async def _write(self, involved: Mapping[str, Any], message: str) -> None:
        try:
            await self._emit(involved, message)
            self.emitted += 1
        except Exception as exc:
            log.warning("writing the AbuseBlocked Event failed: %s (%s)", exc, message)

    def persisted(self, key: Key) -> int | None:
        return None  # nothing of ours to wait for

    def reset(self) -> None:
        return None  # nothing counted to forget

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)

"""Abuse protection on the request path (``spec.abuse``).

``admit`` runs first for every request of a route with ``spec.abuse``: it counts the request in
its key's window (the user, or the tenant) and refuses it with a 403 ``abuse_blocked`` (with
``Retry-After``) while the key is blocked. A request-rate spike blocks the key at once, this
request included. Tokens and cost are counted when a request ends, and policy refusals (PII
blocks, rate limits, budgets) when they happen (``observe``, in the background: the request that
is being answered does not wait for it); a spike or too many refusals there blocks the key's
following requests. A block lifts by itself after ``blockFor``. The sidecar that sets a block
counts it in ``llmroute_abuse_blocks_total{route,reason}``, logs it at warning level and hands it
to ``on_block`` (a usage record of outcome ABUSE_BLOCK, from which the operator makes a Warning Event
on the route); every refused request counts in ``llmroute_abuse_refused_total{route}``. Neighbours: ``detector.py``,
``counters.py``; ``request_policies.py`` calls these.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..openai_api.errors import ApiError
from .counters import AbuseCounters, Block, Seen
from .detector import verdict

if TYPE_CHECKING:
    from prometheus_client import Counter

    from ..request_policies import Request
    from ..route_policy import AbuseSpec

__all__ = ["ABUSE_CODE", "AbuseGuard"]

log = logging.getLogger(__name__)
ABUSE_CODE = "abuse_blocked"


#: ``on_block(request, key, reason, seconds, window)``: a block this sidecar just set.
OnBlock = Callable[["Request", str, str, float, str], None]


class AbuseGuard:
    def __init__(
        self,
        counters: AbuseCounters,
        *,
        blocks: Counter | None = None,
        refused: Counter | None = None,
        on_block: OnBlock | None = None,
    ) -> None:
        self.counters = counters
        self._blocks = blocks
        self._refused = refused
        self.on_block = on_block
        self._background: set[asyncio.Task[None]] = set()

    @staticmethod
    def _key(spec: AbuseSpec, request: Request) -> str:
        hints = request.hints
        return (hints.tenant if spec.by_tenant else hints.user) or "-"

    async def admit(self, request: Request) -> None:
        spec = request.policies.abuse
        if spec is None:
            return
        key = self._key(spec, request)
        seen = await self.counters.count(request.policies.scope, key, spec, {"requests": 1})
        block = seen.block
        if block is None and (reason := verdict(spec, seen.window, seen.previous)) is not None:
            await self._block(request, spec, key, reason, seen)
            block = Block(reason, spec.block_seconds)  # set now, here or by a sidecar just before
        if block is None:
            return
        if self._refused is not None:
            self._refused.labels(request.route).inc()
        who = "tenant" if spec.by_tenant else "user"
        wait = max(1, math.ceil(block.seconds_left))
        raise ApiError(
            403,
            f"{who} {key!r} is blocked on route {request.route!r} for {block.reason.replace('_', ' ')} "
            f"(abuse protection); the block lifts in {wait}s",
            code=ABUSE_CODE,
            headers={"retry-after": str(wait)},
            extra={"reason": block.reason},
        )

    def observe(self, request: Request, *, tokens: int = 0, cost: int = 0, blocks: int = 0) -> None:
        """Count what a request used or a refusal, in the background; block the key on abuse."""
        spec = request.policies.abuse
        if spec is None or not (tokens or cost or blocks):
            return
        task = asyncio.get_running_loop().create_task(self._observe(request, spec, tokens, cost, blocks))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _observe(self, request: Request, spec: AbuseSpec, tokens: int, cost: int, blocks: int) -> None:
        key = self._key(spec, request)
        try:
            seen = await self.counters.count(
                request.policies.scope, key, spec, {"tokens": tokens, "cost": cost, "blocks": blocks}
            )
            if seen.block is None and (reason := verdict(spec, seen.window, seen.previous)) is not None:
                await self._block(request, spec, key, reason, seen)
        except Exception:
            log.exception("abuse protection: counting a request of route %s failed", request.route)

    async def _block(self, request: Request, spec: AbuseSpec, key: str, reason: str, seen: Seen) -> None:
        if await self.counters.block(request.policies.scope, key, reason, spec.block_seconds):
            if self._blocks is not None:
                self._blocks.labels(request.route, reason).inc()
            who = "tenant" if spec.by_tenant else "user"
            log.warning(
                "abuse protection: %s %r blocked on route %s for %.0fs: %s (window: %s)",
                who, key, request.route, spec.block_seconds, reason, seen.window,
            )  # fmt: skip
            if self.on_block is not None:
                window = seen.window
                summary = (
                    f"requests={window.requests} tokens={window.tokens} cost={window.cost / 1e6:g} "
                    f"policy_blocks={window.blocks}"
                )
                self.on_block(request, key, reason, spec.block_seconds, summary)

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)

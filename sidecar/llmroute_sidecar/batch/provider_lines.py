"""Batch lines bound for a provider's batch API: admitted like live requests, gathered per backend,
then sealed into submissions.

:meth:`ProviderLines.offer` takes a line of a chat batch whose model has a backend with
``batchApi`` on. It admits the line once, exactly as a live request (``RouterService.admit``:
abuse screen, PII, plan with rules and residency, rate limits, budgets and their downgrade), then:

- the leading candidate has no batch API: the line runs live right away (``RouterService.answer``,
  the cache and the attempt loop, nothing admitted twice);
- the cache has the answer: that is the line's answer;
- else the line is translated for that backend (``provider_wire.request_line``), its estimated cost
  at the discounted price is reserved in its budgets (when they refuse, it runs live like a request
  refused on its first candidate: the next ones may fit), and it joins the group of its batch and
  backend, in memory.

Its stream entry stays pending meanwhile, renewed like a running line's, so a sidecar that dies
before sealing loses nothing: another sidecar plans the line again. A group is sealed when it is
full (``provider_max_lines``), when no more lines are waiting in the stream, or when its first line
has waited ``provider_flush_seconds``: ``Submissions.seal`` writes it to Redis in one step, then
the entries are acknowledged and the poller submits it. Neighbours: ``worker.py`` calls offer and
flush; ``provider_poller.py`` takes the sealed submissions; ``line_accounting.py`` prices lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..accounting import Usage, estimate_micro, usage_of
from ..adapters.errors import ProviderError
from ..budget import BudgetRefusal, Reservation
from ..config.snapshot import BackendEntry
from ..ids import new_id
from ..load import BATCH_TIER
from ..openai_api.errors import ApiError, bad_request
from ..openai_api.validate import parse_chat
from ..service import Hints, RouterService
from .line_accounting import discounted, restored, route_ref
from .objects import InputLine, LineResult
from .provider_wire import request_line
from .runner import answered
from .store import BatchInfo, Claimed
from .submissions import LineMeta, Submission, Submissions

__all__ = ["HELD", "Holds", "Offer", "ProviderLines"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
CHAT = "/v1/chat/completions"
HELD: Literal["held"] = "held"  # the line waits in a group for its provider batch
Offer = LineResult | Literal["held"] | None  # None: not for a provider batch; run it live


class Holds:
    """Budget reservations this sidecar holds for lines of submissions, until their answers come:
    per line for lines it admitted, or one for the rest of a submission it took over."""

    def __init__(self) -> None:
        self._lines: dict[str, dict[int, Reservation]] = {}
        self._whole: dict[str, tuple[Reservation, list[int]]] = {}

    def add(self, sub_id: str, reservations: dict[int, Reservation]) -> None:
        self._lines[sub_id] = reservations

    def adopt(self, sub_id: str, reservation: Reservation) -> None:
        self._whole[sub_id] = (reservation, [0])

    def take(self, sub_id: str, index: int) -> Reservation | None:
        """The line's own reservation, for the caller to settle or release."""
        return self._lines.get(sub_id, {}).pop(index, None)

    def spend(self, sub_id: str, cost: int) -> None:
        """A line of a taken-over submission cost this: settled against its whole reservation."""
        whole = self._whole.get(sub_id)
        if whole is not None:
            whole[1][0] += cost

    def close(self, sub_id: str) -> None:
        """The submission ended (or is no longer ours): give back what no line used."""
        for reservation in self._lines.pop(sub_id, {}).values():
            reservation.release()
        whole = self._whole.pop(sub_id, None)
        if whole is not None:
            whole[0].settle(whole[1][0])

    def close_all(self) -> None:
        for sub_id in [*self._lines, *self._whole]:
            self.close(sub_id)


@dataclass
class _Waiting:
    item: Claimed
    request: bytes
    meta: LineMeta
    reservation: Reservation | None


@dataclass
class _Group:
    info: BatchInfo
    backend: BackendEntry  # as admitted, at the list price
    lines: list[_Waiting] = field(default_factory=list)
    size: int = 0
    since: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class FormingSettings:
    max_lines: int = 10_000  # per provider batch (OpenAI takes 50,000, Anthropic 100,000)
    max_bytes: int = 64 * 2**20  # per provider batch (OpenAI takes 200 MB, Anthropic 256 MB)
    flush_seconds: float = 5.0  # a line waits at most this long for its group to fill
    owner_ttl_ms: int = 30_000  # a sealed submission's owner key lives this long unrenewed


class ProviderLines:
    def __init__(
        self,
        service: RouterService,
        subs: Submissions,
        holds: Holds,
        *,
        consumer: str,
        settings: FormingSettings,
        on_sealed: Callable[[str], None],
    ) -> None:
        self.service = service
        self.subs = subs
        self.holds = holds
        self.consumer = consumer
        self.settings = settings
        self.on_sealed = on_sealed  # the poller submits it
        self._groups: dict[tuple[str, str, str], _Group] = {}

    def held_entries(self) -> list[str]:
        return [w.item.entry_id for group in self._groups.values() for w in group.lines]

    def wants(self, line: InputLine, info: BatchInfo) -> bool:
        """Whether the line's model has any backend with a provider batch API (cheap, no side effects)."""
        if info.endpoint != CHAT:
            return False
        snapshot = self.service.store.current
        entry = snapshot.models.get(line.body.get("model", "")) if snapshot is not None else None
        return entry is not None and any(b.batch_api for b in entry.backends_by_name.values())

    async def offer(self, item: Claimed, line: InputLine, info: BatchInfo) -> Offer:
        if not self.wants(line, info):
            return None
        service = self.service
        policies = service.policies
        request_id = f"{item.batch_id}-{item.index}-1"
        hints = Hints(tier=BATCH_TIER, tenant=info.tenant, user=info.user, request_id=request_id)
        try:
            body = parse_chat(line.body)
            if body.get("stream"):
                raise bad_request("a batch line cannot stream", param="body.stream")
            request, decision = await service.admit(body, hints)
            lead = decision.candidates[0]
            if not lead.batch_api:
                response, route_meta = await service.answer(request, decision)
                return answered(response, route_meta, request_id, 1)
            cached = await policies.lookup(request, service.embed_for_cache)
            if cached is not None:
                usage = usage_of(cached.get("usage")) or Usage()
                await policies.finish(request, None, usage, outcome="ok", status=200, attempts=0)
                return LineResult(
                    200, restored(request, cached), request_id, 1, usage.input_tokens, usage.output_tokens
                )
            try:
                wire = request_line(lead.target, item.index, decision.body)
            except ProviderError as exc:
                await policies.finish(request, None, Usage(), outcome="invalid", status=400, attempts=0)
                raise ApiError(
                    400, f"the provider refused the request: {exc.message}", code="upstream_bad_request"
                ) from None
            price = discounted(lead)
            estimate = decision.estimate
            reservation: Reservation | None = None
            amount = estimate_micro(price, estimate.input_tokens, estimate.output_tokens)
            if request.charge is not None:
                held = await request.charge.reserve(amount)
                if isinstance(held, BudgetRefusal):
                    # As a live request refused on one backend: the next candidates, live (cheaper or
                    # free ones may fit); the budget's refusal if none does.
                    log.info(
                        "batch %s line %d: %s; tried live instead", item.batch_id, item.index, held.reason
                    )
                    response, route_meta = await service.answer(request, decision)
                    return answered(response, route_meta, request_id, 1)
                reservation = held
        except ApiError as exc:
            return LineResult(exc.status, exc.payload(), request_id, 1)
        meta = LineMeta(
            model=request.entry.name,
            input_tokens=estimate.input_tokens,
            output_tokens=estimate.output_tokens,
            rate_charged=request.rate_charged,
            strategy=decision.strategy,
            admitted_at=request.started_wall,
            reserved=amount if reservation is not None else 0,
            cache=request.cache,
        )
        key = (item.batch_id, route_ref(request.entry.route), lead.name)
        group = self._groups.setdefault(key, _Group(info, lead))
        group.lines.append(_Waiting(item, wire, meta, reservation))
        group.size += len(wire)
        if len(group.lines) >= self.settings.max_lines or group.size >= self.settings.max_bytes:
            await self._seal(key)
        return HELD

    async def flush(self, *, due_only: bool = False) -> None:
        """Seal every group (``due_only``: those whose first line waited long enough)."""
        limit = time.monotonic() - self.settings.flush_seconds
        for key in [k for k, g in self._groups.items() if not due_only or g.since <= limit]:
            await self._seal(key)

    async def _seal(self, key: tuple[str, str, str]) -> None:
        group = self._groups.pop(key, None)
        if group is None or not group.lines:
            return
        batch_id, route, _backend = key
        backend, info = group.backend, group.info
        price = discounted(backend)
        sub = Submission(
            id=f"sub_{new_id()[:24]}",
            batch_id=batch_id,
            route=route,
            backend=backend.name,
            provider=backend.provider,
            tenant=info.tenant,
            user=info.user,
            discount=backend.batch_discount_percent,
            input_price=price.input_per_million,
            output_price=price.output_per_million,
            cached_price=price.cached_input_per_million
            if price.cached_input_per_million is not None
            else -1.0,
            created_at=time.time(),
        )
        lines = [(w.item.index, w.request, w.meta) for w in group.lines]
        try:
            taken = set(
                await self.subs.seal(sub, lines, owner=self.consumer, ttl_ms=self.settings.owner_ttl_ms)
            )
        except Exception as exc:  # Redis away: the entries stay pending; another sidecar plans them again
            log.warning("batch %s: cannot seal %d lines for %s: %s", batch_id, len(lines), backend.name, exc)
            for waiting in group.lines:
                if waiting.reservation is not None:
                    waiting.reservation.release()
            return
        held: dict[int, Reservation] = {}
        for waiting in group.lines:
            if waiting.item.index in taken and waiting.reservation is not None:
                held[waiting.item.index] = waiting.reservation
            elif waiting.reservation is not None:  # ended meanwhile, or another sidecar sealed it
                waiting.reservation.release()
        if taken:
            self.holds.add(sub.id, held)
        try:
            await self.subs.ack_all([w.item.entry_id for w in group.lines])
        except Exception as exc:  # left pending: a sidecar that takes them over finds them assigned
            log.warning("batch %s: cannot acknowledge %d sealed lines: %s", batch_id, len(lines), exc)
        if taken:
            log.info("batch %s: %d lines sealed into %s for %s", batch_id, len(taken), sub.id, backend.name)
            self.on_sealed(sub.id)

    def drop(self) -> None:
        """Stopping: forget the groups (their entries stay pending for another sidecar)."""
        for group in self._groups.values():
            for waiting in group.lines:
                if waiting.reservation is not None:
                    waiting.reservation.release()
        self._groups.clear()

"""Accounting of the lines a provider batch API ran: the usage record, the budgets' settlement and
the rate limits' correction of each line, once, at the discounted price.

A line was admitted like a live request when it joined a submission (``provider_lines.py``), but its
answer may come hours later, on another sidecar. So the request that the policies account
(``request_policies.RequestPolicies.finish``, as for any request) is rebuilt here from the stored
line and its :class:`LineMeta`: the route's entry from the current config, the same tenant and user
(hence the same budgets), the planner's estimate the rate limits were charged with, and the same
redaction (placeholders are numbered deterministically, so redacting the stored line again gives
the table that restores its answer). The backend's prices come discounted (:func:`discounted`), so
the cost, the budgets and the usage record (``batch_api``, ``batch_discount_percent``) all say what
the provider charges. A line whose model has left the config meanwhile still gets its usage
record, priced as stored in the submission. Neighbours: ``provider_poller.py`` calls these once per
line; ``submissions.py`` keeps the once-only marks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb

from ..accounting import Usage, cost_micro, usage_of
from ..adapters.base import Target
from ..budget import Reservation
from ..config.snapshot import BackendEntry
from ..load import BATCH_TIER
from ..pii import redact_chat
from ..request_policies import Request
from ..routing import Decision
from ..routing.tokens import Estimate
from ..service import Hints, RouterService
from ..usage import UsageRecord
from .submissions import LineMeta, Submission

__all__ = [
    "LineBill",
    "bill",
    "cost_of",
    "discounted",
    "line_request_id",
    "restored",
    "route_ref",
    "settle_answer",
    "settle_failure",
    "stored_price",
]

Json = dict[str, Any]


def discounted(backend: BackendEntry) -> BackendEntry:
    """``backend`` priced as its provider's batch API charges (``batch_discount_percent`` off)."""
    share = 1.0 - backend.batch_discount_percent / 100.0
    cached = backend.cached_input_per_million
    return dataclasses.replace(
        backend,
        input_per_million=backend.input_per_million * share,
        output_per_million=backend.output_per_million * share,
        cached_input_per_million=cached * share if cached is not None else None,
    )


def stored_price(sub: Submission) -> BackendEntry:
    """The submission's backend as priced when its lines were admitted (already discounted)."""
    return BackendEntry(
        name=sub.backend,
        route=sub.route,
        provider=sub.provider,
        target=Target(provider=sub.provider, model="", endpoint=""),
        region="",
        input_per_million=sub.input_price,
        output_per_million=sub.output_price,
        context_window=0,
        tier=0,
        max_concurrency=0,
        capabilities=pb.Capabilities(chat=True),
        cached_input_per_million=sub.cached_price if sub.cached_price >= 0 else None,
        batch_api=True,
        batch_discount_percent=sub.discount,
    )


def line_request_id(sub: Submission, index: int) -> str:
    """The usage record's id: the operator drops a second record of it, should one ever be sent."""
    return f"{sub.batch_id}-{index}-{sub.id}"


@dataclasses.dataclass(frozen=True)
class LineBill:
    """What one line is accounted with: its rebuilt request (None when its model or backend left the
    config) and its backend at the price the provider's batch API charges."""

    request: Request | None
    price: BackendEntry


def bill(service: RouterService, sub: Submission, index: int, meta: LineMeta, body: Json | None) -> LineBill:
    """The line's request as admitted, with its backend at the discounted price."""
    snapshot = service.store.current
    entry = snapshot.models.get(meta.model) if snapshot is not None else None
    backend = entry.backends_by_name.get(sub.backend) if entry is not None else None
    if snapshot is None or entry is None or backend is None or route_ref(entry.route) != sub.route:
        return LineBill(None, stored_price(sub))
    hints = Hints(tier=BATCH_TIER, tenant=sub.tenant, user=sub.user, request_id=line_request_id(sub, index))
    policies = service.policies.for_route(entry.route)
    request = Request(
        entry=entry,
        policies=policies,
        hints=hints,
        body=body or {},
        kind="chat",
        config_version=snapshot.version,
    )
    request.started_wall = meta.admitted_at
    request.started = time.monotonic() - max(0.0, time.time() - meta.admitted_at)
    if body and policies.pii_types and not policies.pii_block:
        request.body, request.redaction = redact_chat(body, policies.pii_types)
    request.charge = service.policies.budgets.charge(route=entry.route.name, tenant=sub.tenant, user=sub.user)
    estimate = Estimate(meta.input_tokens, meta.output_tokens)
    request.decision = Decision(
        model=entry.name, candidates=(backend,), body={}, strategy=meta.strategy, estimate=estimate
    )
    request.estimated_tokens = estimate.total
    request.rate_charged = meta.rate_charged
    request.cache = meta.cache
    request.batch_api, request.batch_discount_percent = sub.provider, sub.discount
    # The discount as configured when the line was admitted: that is what its budgets reserved.
    return LineBill(request, discounted(dataclasses.replace(backend, batch_discount_percent=sub.discount)))


def route_ref(route: pb.Route) -> str:
    return f"{route.namespace}/{route.name}"


def restored(request: Request | None, response: Json) -> Json:
    """The answer as the app gets it: the line's personal data back where the route restores it."""
    if request is not None and request.redaction is not None and request.policies.pii_restore:
        return request.redaction.restore_response(response)
    return response


def cost_of(line_bill: LineBill, response: Json) -> tuple[Usage, int]:
    usage = usage_of(response.get("usage")) or Usage()
    return usage, cost_micro(line_bill.price, usage)


async def settle_answer(
    service: RouterService,
    sub: Submission,
    index: int,
    meta: LineMeta,
    line_bill: LineBill,
    response: Json,
    *,
    reservation: Reservation | None,
) -> int:
    """Account one answered line (once: ``Submissions.account`` decides who); returns its cost."""
    usage, cost = cost_of(line_bill, response)
    request = line_bill.request
    if request is None:
        if reservation is not None:
            reservation.settle(cost)
        service.usage.add(_bare(sub, index, meta, usage, cost, "ok", 200))
        return cost
    if isinstance(answer_id := response.get("id"), str):
        request.response_id = answer_id
    completion = _text(response) if request.policies.audit_text else None
    return await service.policies.finish(
        request, line_bill.price, usage, outcome="ok", status=200, attempts=1, reservation=reservation,
        completion=completion,
    )  # fmt: skip


async def settle_failure(
    service: RouterService, sub: Submission, index: int, meta: LineMeta, line_bill: LineBill, status: int
) -> None:
    """The usage record of a line the provider refused for good (nothing billed), as a live
    request that failed leaves one."""
    outcome = "invalid" if 400 <= status < 500 and status != 429 else "error"
    if line_bill.request is None:
        service.usage.add(_bare(sub, index, meta, Usage(), 0, outcome, status))
        return
    await service.policies.finish(
        line_bill.request, None, Usage(), outcome=outcome, status=status, attempts=1
    )


def _text(response: Json) -> str | None:
    choices = response.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _bare(
    sub: Submission, index: int, meta: LineMeta, usage: Usage, cost: int, outcome: str, status: int
) -> UsageRecord:
    return UsageRecord(
        request_id=line_request_id(sub, index),
        route=sub.route,
        model=meta.model,
        backend=sub.backend,
        provider=sub.provider,
        tenant=sub.tenant,
        user=sub.user,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_micro_usd=cost,
        outcome=outcome,
        latency_seconds=max(0.0, time.time() - meta.admitted_at),
        started_at=meta.admitted_at,
        cached_tokens=usage.cached_tokens,
        attempts=1,
        http_status=status,
        batch_api=sub.provider,
        batch_discount_percent=sub.discount,
    )

"""How a batch line reaches the router service: as a live request of the batch's tenant and user,
at the batch tier, with the same validation, policy, budgets, residency and fallback.

Neighbours: ``worker.py`` calls the :data:`RunLine` built here; ``service.py`` routes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..load import BATCH_TIER
from ..openai_api.errors import ApiError, bad_request
from ..openai_api.validate import parse_chat, parse_embeddings
from ..service import Hints, RouteMeta, RouterService
from .objects import InputLine, LineResult
from .store import BatchInfo

if TYPE_CHECKING:
    from .worker import RunLine

__all__ = ["answered", "service_runner"]


def _tokens(response: dict[str, Any]) -> tuple[int, int]:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    inputs, outputs = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (inputs if isinstance(inputs, int) else 0), (outputs if isinstance(outputs, int) else 0)


def service_runner(service: RouterService) -> RunLine:
    async def run(line: InputLine, batch: BatchInfo, request_id: str, attempt: int) -> LineResult:
        hints = Hints(tier=BATCH_TIER, tenant=batch.tenant, user=batch.user, request_id=request_id)
        try:
            if batch.endpoint == "/v1/embeddings":
                response, meta = await service.embeddings(parse_embeddings(line.body), hints)
            else:
                body = parse_chat(line.body)
                if body.get("stream"):
                    raise bad_request("a batch line cannot stream", param="body.stream")
                response, meta = await service.chat(body, hints)
        except ApiError as exc:
            return LineResult(exc.status, exc.payload(), request_id, attempt)
        return answered(response, meta, request_id, attempt)

    return run


def answered(response: dict[str, Any], meta: RouteMeta, request_id: str, attempt: int) -> LineResult:
    """A line the router answered, with its tokens and what it cost."""
    inputs, outputs = _tokens(response)
    cost = round((meta.cost_usd or 0.0) * 1e6)
    return LineResult(200, response, request_id, attempt, inputs, outputs, cost)

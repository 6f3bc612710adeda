"""``POST /v1/feedback``: the app scores an answer of an experiment, and the score is credited to the
arm that gave it.

Body: ``{"response_id": "<the completion's id>", "score": <number>, "label": "<optional>"}``; the
caller's tenant (``x-llmroute-tenant``) must be the one the response was given to. The score becomes a
usage record of outcome ``feedback`` (request id ``feedback:<response id>``) on the usage stream, so
the operator counts it into ``LLMRoute.status.experiment`` once, like any usage; it is also in the
``llmroute_feedback_score`` metric. A response is scored once: a second score finds nothing (404), as
does a score sent to another replica when the workload has no shared Redis.
Neighbours: ``responses.py`` (which arm answered which response), ``http_front.py`` (mounts this).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import web
from ..metrics import Metrics
from ..openai_api.errors import ApiError, bad_request
from ..openai_api.headers import check_headers
from ..openai_api.messages import type_name
from ..openai_api.validate import parse_json
from ..usage import UsageBuffer, UsageRecord
from .responses import ResponseArms

__all__ = ["Feedback", "add_feedback_routes", "parse_feedback"]

_MAX_ID = 256
_MAX_LABEL = 64
_MAX_SCORE = 1e9
_FIELDS = frozenset({"response_id", "score", "label"})


@dataclass(frozen=True)
class Feedback:
    response_id: str
    score: float
    label: str


def parse_feedback(body: dict[str, Any]) -> Feedback:
    """Check every field's type and range before use; a 400 names the field."""
    unknown = sorted(str(k) for k in body if k not in _FIELDS)
    if unknown:
        raise bad_request(
            f"unknown parameter {unknown[0]!r}; feedback takes response_id, score and label",
            param=unknown[0][:64],
            code="unknown_parameter",
        )
    response_id = body.get("response_id")
    if not isinstance(response_id, str) or not response_id:
        raise bad_request(
            "response_id must be the id of a completion, a non-empty string", param="response_id"
        )
    if len(response_id) > _MAX_ID or not response_id.isascii() or not response_id.isprintable():
        raise bad_request(
            f"response_id must be printable ASCII of at most {_MAX_ID} characters", param="response_id"
        )
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise bad_request(f"score must be a number, not {type_name(score)}", param="score")
    if (
        (isinstance(score, int) and abs(score) > _MAX_SCORE)
        or not math.isfinite(score)
        or abs(score) > _MAX_SCORE
    ):
        raise bad_request(
            f"score must be a finite number between -{_MAX_SCORE:g} and {_MAX_SCORE:g}", param="score"
        )
    value = float(score)
    label = body.get("label", "")
    if label is None:
        label = ""
    if not isinstance(label, str):
        raise bad_request(f"label must be a string, not {type_name(label)}", param="label")
    if len(label) > _MAX_LABEL:
        raise bad_request(f"label must be at most {_MAX_LABEL} characters", param="label")
    return Feedback(response_id, value, label)


@dataclass(frozen=True)
class _Context:
    responses: ResponseArms
    usage: UsageBuffer
    metrics: Metrics
    namespace: Callable[[], str]
    max_body: int


_CONTEXT: web.AppKey[_Context] = web.AppKey("feedback", _Context)


async def post_feedback(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    if request.content_length is not None and request.content_length > context.max_body:
        raise bad_request("the feedback body is too large", code="request_too_large")
    feedback = parse_feedback(parse_json(await request.read()))
    check_headers(request.headers)
    tenant = request.headers.get("x-llmroute-tenant", "")
    try:
        served = await context.responses.take(context.namespace(), tenant, feedback.response_id)
    except Exception as exc:  # the shared Redis is down: the score cannot be matched now
        raise ApiError(
            503,
            f"the feedback index is unavailable, retry: {type(exc).__name__}",
            code="feedback_unavailable",
        ) from None
    if served is None:
        raise ApiError(
            404,
            f"no experiment response {feedback.response_id!r} is waiting for feedback here: it was not "
            "part of an experiment, was already scored, expired, or belongs to another tenant",
            param="response_id",
            code="response_not_found",
        )
    context.usage.add(
        UsageRecord(
            request_id=f"feedback:{feedback.response_id}",
            route=served.route,
            model=served.model,
            backend=served.arm,
            provider="",
            tenant=tenant,
            user="",
            input_tokens=0,
            output_tokens=0,
            cost_micro_usd=0,
            outcome="feedback",
            latency_seconds=0.0,
            experiment_arm=served.arm,
            response_id=feedback.response_id,
            feedback_score=feedback.score,
            feedback_label=feedback.label,
        )
    )
    context.metrics.feedback.labels(served.route, served.arm).observe(feedback.score)
    body = {
        "object": "feedback",
        "response_id": feedback.response_id,
        "model": served.model,
        "arm": served.arm,
        "score": feedback.score,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def add_feedback_routes(
    app: web.Application,
    *,
    responses: ResponseArms,
    usage: UsageBuffer,
    metrics: Metrics,
    namespace: Callable[[], str],
    max_body: int = 64 * 1024,
) -> None:
    app[_CONTEXT] = _Context(responses, usage, metrics, namespace, max_body)
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/feedback", post_feedback)

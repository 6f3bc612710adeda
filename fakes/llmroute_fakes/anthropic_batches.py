"""The Anthropic Message Batches API of the fake Anthropic server.

Neighbours: ``anthropic_api.AnthropicProtocol`` mounts :class:`MessageBatchesApi` and answers each
request as its live ``POST /v1/messages`` would; ``batch_jobs`` runs the jobs. Endpoints:
``POST/GET /v1/messages/batches``, ``GET/DELETE /v1/messages/batches/{id}``,
``POST /v1/messages/batches/{id}/cancel`` and ``GET /v1/messages/batches/{id}/results``.

As on the real API: ``requests`` holds up to 100,000 ``{"custom_id", "params"}`` with unique ids of
``[a-zA-Z0-9_-]{1,64}``, each ``params`` a Messages request (model, max_tokens, messages); a bad one
refuses the whole create with a 400 naming it. A batch is ``in_progress`` (every request counted as
``processing``) until it ends, then ``ended`` with ``results_url`` and its counts by result type.
The results are JSON lines ``{"custom_id", "result": {"type": "succeeded", "message"}}``, or
``errored`` with an error response, ``canceled`` or ``expired``, in no promised order.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from .batch_jobs import BatchJob, Outcome, rfc3339
from .protocol import EXCHANGE, ApiError, Exchange, json_response

__all__ = ["MessageBatchesApi"]

Json = dict[str, Any]
_MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_WINDOW_SECONDS = 24 * 3600
_BASE = "/v1/messages/batches"


class MessageBatchesApi:
    """Message Batches for one fake; ``answer(exchange, params)`` is one live Messages answer, and
    ``error_body`` the API's error response for a status and message."""

    def __init__(
        self,
        *,
        answer: Callable[[Exchange, Json], Json],
        error_body: Callable[[ApiError], Json],
        check: Callable[[Json], None],
    ) -> None:
        self._answer = answer
        self._error_body = error_body
        self._check = check  # what the live endpoint refuses, checked at create time

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(_BASE, self.create),
            web.get(_BASE, self.list),
            web.get(_BASE + "/{batch_id}", self.get),
            web.delete(_BASE + "/{batch_id}", self.delete),
            web.post(_BASE + "/{batch_id}/cancel", self.cancel),
            web.get(_BASE + "/{batch_id}/results", self.results),
        ]

    async def create(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        items = body.get("requests")
        if not isinstance(items, list) or not 1 <= len(items) <= _MAX_REQUESTS:
            raise ApiError(400, f"requests: between 1 and {_MAX_REQUESTS} requests are required")
        requests: list[tuple[str, Json]] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            where = f"requests.{index}"
            if not isinstance(item, dict):
                raise ApiError(400, f"{where}: Input should be an object")
            custom_id, params = item.get("custom_id"), item.get("params")
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                raise ApiError(
                    400, f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if custom_id in seen:
                raise ApiError(400, f"{where}.custom_id: custom_id '{custom_id}' is used more than once")
            if not isinstance(params, dict):
                raise ApiError(400, f"{where}.params: Field required")
            if params.get("stream"):
                raise ApiError(400, f"{where}.params.stream: streaming is not supported in a message batch")
            try:
                self._check(params)
            except ApiError as exc:
                raise ApiError(400, f"{where}.params.{exc.message}") from None
            seen.add(custom_id)
            requests.append((custom_id, params))
        job = BatchJob.create(
            exchange.state.new_id("msgbatch_"),
            requests,
            lambda _custom_id, params: (200, self._answer(exchange, params)),
            exchange.faults,
        )
        if job.end == "failed":  # the API has no failed batches: every request errors instead
            job.end, job.fail = "completed", len(requests)
        exchange.state.batches.jobs[job.id] = job
        shown = self.batch_object(job, request, fresh=True)
        if exchange.faults.batch_ack_ms:  # created; the answer is late (a client may give up meanwhile)
            await asyncio.sleep(exchange.faults.batch_ack_ms / 1000)
        return json_response(shown)

    def _job(self, request: web.Request) -> BatchJob:
        batch_id = request.match_info["batch_id"]
        job = request[EXCHANGE].state.batches.jobs.get(batch_id)
        if job is None:
            raise ApiError(404, f"No message batch with id {batch_id}")
        return job

    async def get(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.batch_object(self._job(request), request))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        if not job.settle():
            job.cancel()
            return json_response(
                self.batch_object(job, request, fresh=True) | {"processing_status": "canceling"}
            )
        return json_response(self.batch_object(job, request))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        if not job.settle():
            raise ApiError(400, "Message batch is still in progress: cancel it before deleting it")
        del request[EXCHANGE].state.batches.jobs[job.id]
        return json_response({"id": job.id, "type": "message_batch_deleted"})

    async def list(self, request: web.Request) -> web.StreamResponse:
        book = request[EXCHANGE].state.batches
        raw = request.query.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ApiError(400, "limit: Input should be between 1 and 1000")
        limit = int(raw)
        jobs = [job for job in book.jobs.values() if job.id.startswith("msgbatch_")]
        page = book.page(jobs, after=request.query.get("after_id"), limit=limit, key=lambda j: j.id)
        data = [self.batch_object(job, request) for job in page[:limit]]
        return json_response(
            {
                "data": data,
                "has_more": len(page) > limit,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def results(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        if not job.settle():
            raise ApiError(404, f"Message batch {job.id} has not ended yet; results are not available")
        lines = [
            orjson.dumps({"custom_id": o.custom_id, "result": self._result(o)}) for o in job.outcomes or ()
        ]
        return web.Response(body=b"\n".join(lines) + b"\n", content_type="application/binary")

    def _result(self, outcome: Outcome) -> Json:
        if outcome.kind == "succeeded":
            return {"type": "succeeded", "message": outcome.body}
        if outcome.kind == "errored":
            return {
                "type": "errored",
                "error": self._error_body(ApiError(outcome.status, outcome.body.get("message"))),
            }
        return {"type": outcome.kind}

    def batch_object(self, job: BatchJob, request: web.Request, *, fresh: bool = False) -> Json:
        ended = False if fresh else job.settle()
        counts = job.counts()
        processing = 0 if ended else len(job.requests)
        results_url = f"{request.url.origin()}{_BASE}/{job.id}/results" if ended else None
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": processing, **counts},
            "ended_at": rfc3339(job.ended_at) if ended else None,
            "created_at": rfc3339(job.created_at),
            "expires_at": rfc3339(job.created_at + _WINDOW_SECONDS),
            "archived_at": None,
            "cancel_initiated_at": rfc3339(job.cancel_requested_at),
            "results_url": results_url,
        }

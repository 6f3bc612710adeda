"""The OpenAI Files and Batches API of the fake OpenAI and Azure OpenAI servers.

Neighbours: ``openai_api.OpenAIProtocol`` and ``azure_api.AzureOpenAIProtocol`` mount
:class:`OpenAIBatchApi` under their prefixes (``/v1``; Azure ``/openai`` and ``/openai/v1``);
``batch_jobs`` runs the jobs. Endpoints: ``POST/GET {prefix}/files``, ``GET/DELETE
{prefix}/files/{id}``, ``GET {prefix}/files/{id}/content``, ``POST/GET {prefix}/batches``,
``GET {prefix}/batches/{id}``, ``POST {prefix}/batches/{id}/cancel``.

As on the real API: an upload is multipart (``purpose``, ``file``); a batch names an uploaded file
of purpose ``batch`` whose lines are ``{"custom_id", "method": "POST", "url", "body"}`` with ``url``
equal to the batch's ``endpoint``; a batch with a bad line fails as a whole (``errors.data`` names
the line). A batch is ``validating`` when created, ``in_progress`` until it ends, then
``completed`` (or ``failed``, ``expired``, ``cancelled``) with an output file of the 2xx answers
and an error file of the rest: a request the model refused carries its ``response`` (status and
error body), one that never ran ``error.code`` ``batch_expired``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from .batch_jobs import BatchJob, StoredFile, multipart_fields
from .protocol import EXCHANGE, ApiError, Exchange, json_response

__all__ = ["OpenAIBatchApi"]

Json = dict[str, Any]
_WINDOW_SECONDS = 24 * 3600
_PURPOSES = ("batch", "batch_output", "assistants", "fine-tune", "vision", "user_data", "evals")
_EXPIRED = "This request could not be executed before the completion window expired."


class OpenAIBatchApi:
    """Files and Batches for one fake; ``answer(exchange, endpoint, body)`` serves one batch request
    the way the live endpoint would."""

    def __init__(
        self,
        *,
        prefixes: Sequence[str],
        endpoints: Sequence[str],
        answer: Callable[[Exchange, str, Json], tuple[int, Json]],
        error_object: Callable[[ApiError], Json],
        check: Callable[[web.Request], None] = lambda request: None,
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.endpoints = tuple(endpoints)
        self._answer = answer
        self._error_object = error_object
        self._check = check  # e.g. Azure's required api-version

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for prefix in self.prefixes:
            out += [
                web.post(f"{prefix}/files", self.create_file),
                web.get(f"{prefix}/files", self.list_files),
                web.get(prefix + "/files/{file_id}", self.get_file),
                web.delete(prefix + "/files/{file_id}", self.delete_file),
                web.get(prefix + "/files/{file_id}/content", self.file_content),
                web.post(f"{prefix}/batches", self.create_batch),
                web.get(f"{prefix}/batches", self.list_batches),
                web.get(prefix + "/batches/{batch_id}", self.get_batch),
                web.post(prefix + "/batches/{batch_id}/cancel", self.cancel_batch),
            ]
        return out

    # --- files ---

    @staticmethod
    def file_object(stored: StoredFile) -> Json:
        return {
            "id": stored.id,
            "object": "file",
            "bytes": len(stored.content),
            "created_at": stored.created_at,
            "filename": stored.filename,
            "purpose": stored.purpose,
            "status": "processed",
            "expires_at": stored.created_at + 30 * 86400 if stored.purpose == "batch" else None,
            "status_details": None,
        }

    def _exchange(self, request: web.Request) -> Exchange:
        self._check(request)
        return request[EXCHANGE]

    def _stored(self, request: web.Request) -> StoredFile:
        book = self._exchange(request).state.batches
        file_id = request.match_info["file_id"]
        stored = book.files.get(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    async def create_file(self, request: web.Request) -> web.StreamResponse:
        exchange = self._exchange(request)
        fields = multipart_fields(request.headers.get("content-type", ""), exchange.record.body)
        purpose = fields.get("purpose", ("", b""))[1].decode(errors="replace").strip()
        if purpose not in _PURPOSES:
            raise ApiError(400, f"'{purpose}' is not one of {list(_PURPOSES)} - 'purpose'", param="purpose")
        if "file" not in fields:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        filename, content = fields["file"]
        stored = StoredFile(
            exchange.state.new_id("file-"), filename or "upload.jsonl", purpose, content, int(time.time())
        )
        exchange.state.batches.files[stored.id] = stored
        return json_response(self.file_object(stored))

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        book = self._exchange(request).state.batches
        purpose = request.query.get("purpose")
        files = [f for f in book.files.values() if purpose is None or f.purpose == purpose]
        limit = _limit(request, 10_000)
        page = book.page(files, after=request.query.get("after"), limit=limit, key=lambda f: f.id)
        return json_response(_list([self.file_object(f) for f in page[:limit]], len(page) > limit))

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.file_object(self._stored(request)))

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._stored(request)
        del request[EXCHANGE].state.batches.files[stored.id]
        return json_response({"id": stored.id, "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._stored(request).content, content_type="application/octet-stream")

    # --- batches ---

    async def create_batch(self, request: web.Request) -> web.StreamResponse:
        exchange = self._exchange(request)
        body = exchange.json_object()
        book = exchange.state.batches
        endpoint = body.get("endpoint")
        if endpoint not in self.endpoints:
            raise ApiError(
                400, f"Invalid value for 'endpoint': use one of {list(self.endpoints)}.", param="endpoint"
            )
        if body.get("completion_window") != "24h":
            raise ApiError(400, "Invalid value for 'completion_window': only '24h' is supported.", param="completion_window")  # fmt: skip
        file_id = body.get("input_file_id")
        stored = book.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="input_file_id")
        if stored.purpose != "batch":
            raise ApiError(400, "The input file's purpose must be 'batch'.", param="input_file_id")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and len(metadata) <= 16 and all(isinstance(v, str) for v in metadata.values())
        ):  # fmt: skip
            raise ApiError(400, "Invalid 'metadata': up to 16 string values.", param="metadata")
        requests, errors = _requests(stored.content, str(endpoint))
        job = BatchJob.create(
            exchange.state.new_id("batch_"),
            requests,
            lambda _custom_id, line: self._answer(exchange, str(endpoint), line),
            exchange.faults,
            endpoint=endpoint,
            input_file_id=stored.id,
            metadata=metadata,
            errors=errors,
            model=str(requests[0][1].get("model", "")) if requests else None,
        )
        if errors:
            job.end = "failed"
        book.jobs[job.id] = job
        shown = self.batch_object(job, exchange, fresh=True)
        if exchange.faults.batch_ack_ms:  # created; the answer is late (a client may give up meanwhile)
            await asyncio.sleep(exchange.faults.batch_ack_ms / 1000)
        return json_response(shown)

    def _job(self, request: web.Request) -> tuple[Exchange, BatchJob]:
        exchange = self._exchange(request)
        batch_id = request.match_info["batch_id"]
        job = exchange.state.batches.jobs.get(batch_id)
        if job is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return exchange, job

    async def get_batch(self, request: web.Request) -> web.StreamResponse:
        exchange, job = self._job(request)
        return json_response(self.batch_object(job, exchange))

    async def cancel_batch(self, request: web.Request) -> web.StreamResponse:
        exchange, job = self._job(request)
        if job.outcomes is not None:
            raise ApiError(409, f"Cannot cancel a batch with status '{job.final}'.")
        job.cancel()
        shown = self.batch_object(job, exchange, fresh=True)
        shown |= {"status": "cancelling", "cancelled_at": None}
        return json_response(shown)

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        exchange = self._exchange(request)
        book = exchange.state.batches
        limit = _limit(request, 100)
        page = book.page(
            list(book.jobs.values()), after=request.query.get("after"), limit=limit, key=lambda j: j.id
        )
        data = [self.batch_object(job, exchange) for job in page[:limit]]
        return json_response(_list(data, len(page) > limit))

    def batch_object(self, job: BatchJob, exchange: Exchange, *, fresh: bool = False) -> Json:
        """The Batch object as it stands now; ending it (and writing its files) when its time came."""
        created = int(job.created_at)
        ended = False if fresh else job.settle()
        if ended and "output_file_id" not in job.info:
            self._write_files(job, exchange)
        status = "validating" if fresh else "in_progress"
        stamps: dict[str, int | None] = dict.fromkeys(
            ("finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at")
        )
        if job.cancel_requested_at is not None:
            stamps["cancelling_at"] = int(job.cancel_requested_at)
        if ended:
            status = job.final
            at = int(job.ended_at or time.time())
            stamps[f"{status}_at"] = at
            if status != "failed":
                stamps["finalizing_at"] = at
        counts = job.counts()
        usage = job.info.get("usage", (0, 0))
        errors = job.info.get("errors") or []
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.info["endpoint"],
            "model": job.info.get("model"),
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": job.info["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": job.info.get("output_file_id"),
            "error_file_id": job.info.get("error_file_id"),
            "created_at": created,
            "in_progress_at": None if fresh or errors else created,
            "expires_at": created + _WINDOW_SECONDS,
            **stamps,
            "request_counts": {
                "total": 0 if errors else len(job.requests),
                "completed": counts["succeeded"],
                "failed": counts["errored"] + counts["expired"],
            },
            "usage": {
                "input_tokens": usage[0],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage[1],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage[0] + usage[1],
            },
            "metadata": job.info.get("metadata"),
        }

    def _write_files(self, job: BatchJob, exchange: Exchange) -> None:
        """The output file (2xx answers) and the error file (the rest), as the job ends."""
        state = exchange.state
        output: list[bytes] = []
        failed: list[bytes] = []
        inputs = outputs = 0
        for outcome in job.outcomes or ():
            line: Json = {"id": state.new_id("batch_req_"), "custom_id": outcome.custom_id}
            if outcome.kind == "succeeded":
                usage = outcome.body.get("usage")
                if isinstance(usage, dict):
                    inputs += int(usage.get("prompt_tokens") or 0)
                    outputs += int(usage.get("completion_tokens") or 0)
                line |= {"response": _response(state.new_id("req_"), 200, outcome.body), "error": None}
                output.append(orjson.dumps(line))
            elif outcome.kind == "errored":
                error = self._error_object(ApiError(outcome.status, outcome.body.get("message")))
                response = _response(state.new_id("req_"), outcome.status, {"error": error})
                failed.append(orjson.dumps(line | {"response": response, "error": None}))
            elif outcome.kind == "expired":
                error = {"code": "batch_expired", "message": _EXPIRED}
                failed.append(orjson.dumps(line | {"response": None, "error": error}))
            # canceled: never ran, so neither file has it
        job.info["usage"] = (inputs, outputs)
        job.info["output_file_id"] = job.info["error_file_id"] = None
        for kind, lines in (("output_file_id", output), ("error_file_id", failed)):
            if lines:
                stored = StoredFile(
                    state.new_id("file-"), f"{job.id}_{kind[:-8]}.jsonl", "batch_output",
                    b"\n".join(lines) + b"\n", int(time.time()),
                )  # fmt: skip
                state.batches.files[stored.id] = stored
                job.info[kind] = stored.id


def _response(request_id: str, status: int, body: Json) -> Json:
    return {"status_code": status, "request_id": request_id, "body": body}


def _list(data: list[Json], has_more: bool) -> Json:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _limit(request: web.Request, most: int) -> int:
    raw = request.query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiError(400, f"Invalid 'limit': an integer from 1 to {most}.", param="limit")
    return int(raw)


def _requests(content: bytes, endpoint: str) -> tuple[list[tuple[str, Json]], list[Json]]:
    """The requests of an input file, or the errors that fail the batch (``line`` counts from 1)."""
    requests: list[tuple[str, Json]] = []
    errors: list[Json] = []
    seen: set[str] = set()

    def bad(number: int, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": number})

    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            bad(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        if not isinstance(item, dict):
            bad(number, "invalid_request", "Each line must be a JSON object.")
            continue
        custom_id, url, body = item.get("custom_id"), item.get("url"), item.get("body")
        if not isinstance(custom_id, str) or not custom_id or custom_id in seen:
            bad(number, "duplicate_custom_id" if custom_id in seen else "invalid_request",
                "The custom_id for this request is missing or used more than once.", "custom_id")  # fmt: skip
        elif item.get("method") != "POST":
            bad(number, "invalid_method", "The method must be POST.", "method")
        elif url != endpoint:
            bad(number, "mismatched_endpoint", f"The url must match the batch's endpoint {endpoint}.", "url")
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            bad(
                number, "missing_required_parameter", "The body must be an object with a model.", "body.model"
            )
        else:
            seen.add(custom_id)
            requests.append((custom_id, body))
    if not requests and not errors:
        bad(0, "empty_file", "The input file has no requests.")
    return requests, errors

"""The provider batch APIs' wire formats, as pure functions: a batch line as the provider's batch
request, the provider's batch object as :class:`RemoteBatch`, and its results as OpenAI answers.

Requests are built by the live adapters (``adapters/``), so a line sent through a batch API is the
request a live call would have sent: OpenAI and Azure OpenAI take JSON lines ``{"custom_id",
"method", "url", "body"}`` (Azure's ``url`` is ``/chat/completions`` and its ``model`` the
deployment), Anthropic ``{"custom_id", "params"}``. Our ``custom_id`` at the provider is ``l<index>``
(the line's place in the app's batch), whatever the app called it, so provider rules on ids never
refuse an app's line. Results come back per line as a :class:`LineAnswer` (an OpenAI chat
completion, through the same adapter's parser) or a :class:`LineFailure` (a classified
:class:`ProviderError` and the provider's body); a line the provider never ran (expired, cancelled)
has no result. Neighbours: ``provider_client.py`` sends and fetches these; ``provider_poller.py``
decides what each result means for the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ..adapters.base import Target
from ..adapters.errors import ErrorKind, ProviderError
from ..adapters.registry import adapter_for

__all__ = [
    "LineAnswer",
    "LineFailure",
    "RemoteBatch",
    "anthropic_batch",
    "anthropic_results",
    "custom_id",
    "index_of",
    "openai_batch",
    "openai_results",
    "request_line",
]

Json = dict[str, Any]
OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled", "batch_canceled"})
# Anthropic's error types and the status a live call would have answered them with.
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def custom_id(index: int) -> str:
    return f"l{index}"


def index_of(value: object) -> int | None:
    if isinstance(value, str) and value.startswith("l") and value[1:].isdigit():
        return int(value[1:])
    return None


def request_line(target: Target, index: int, body: Json) -> bytes:
    """The provider's batch request for one chat line (``body`` as planned: redacted, truncated);
    raises :class:`ProviderError` where the adapter cannot express the request."""
    adapter = adapter_for(target.provider)
    payload = orjson.loads(adapter.chat_request(target, body, stream=False).body)
    if target.provider == "anthropic":
        return orjson.dumps({"custom_id": custom_id(index), "params": payload})
    url = "/v1/chat/completions"
    if target.provider == "azure-openai":
        url = "/chat/completions"
        payload["model"] = target.azure_deployment or target.model  # a Global Batch deployment
    return orjson.dumps({"custom_id": custom_id(index), "method": "POST", "url": url, "body": payload})


@dataclass(frozen=True)
class RemoteBatch:
    """A batch at the provider, as far as the sidecar cares."""

    id: str
    status: str  # the provider's own word
    ended: bool
    created_at: float  # epoch seconds
    total: int  # requests in it
    marker: str = ""  # our submission id, where the provider keeps metadata (OpenAI, Azure)
    output_file: str = ""
    error_file: str = ""


def openai_batch(obj: object) -> RemoteBatch:
    """An OpenAI or Azure OpenAI Batch object."""
    data = _object(obj, "batch")
    counts = data.get("request_counts")
    metadata = data.get("metadata")
    status = str(data.get("status") or "")
    return RemoteBatch(
        id=str(data["id"]),
        status=status,
        ended=status in OPENAI_ENDED,
        created_at=_number(data.get("created_at")),
        total=int(_number(counts.get("total"))) if isinstance(counts, dict) else 0,
        marker=str(metadata.get("llmroute_submission") or "") if isinstance(metadata, dict) else "",
        output_file=str(data.get("output_file_id") or ""),
        error_file=str(data.get("error_file_id") or ""),
    )


def anthropic_batch(obj: object) -> RemoteBatch:
    """An Anthropic MessageBatch object."""
    data = _object(obj, "message batch")
    counts = data.get("request_counts")
    total = int(sum(_number(v) for v in counts.values())) if isinstance(counts, dict) else 0
    status = str(data.get("processing_status") or "")
    created = data.get("created_at")
    try:
        moment = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        moment = 0.0
    return RemoteBatch(
        id=str(data["id"]), status=status, ended=status == "ended", created_at=moment, total=total
    )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _object(obj: object, what: str) -> Json:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ProviderError(ErrorKind.PROTOCOL, f"the provider answered something that is not a {what}")
    return obj


@dataclass(frozen=True)
class LineAnswer:
    index: int
    response: Json  # an OpenAI chat.completion
    request_id: str = ""


@dataclass(frozen=True)
class LineFailure:
    index: int
    error: ProviderError
    status: int
    body: Json  # the provider's error body, for the dead letter

    @property
    def worth_another_try(self) -> bool:
        """What would make a live call retry or fall over makes the line run live."""
        return self.error.retryable or self.error.try_next_backend


def _lines(content: bytes) -> list[Json]:
    out: list[Json] = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a torn line: that request counts as not run, and runs live
        if isinstance(item, dict):
            out.append(item)
    return out


def openai_results(
    provider: str, output: bytes, errors: bytes, *, model: str
) -> dict[int, LineAnswer | LineFailure]:
    """The output and error files of an OpenAI or Azure OpenAI batch, per line index."""
    adapter = adapter_for(provider)
    out: dict[int, LineAnswer | LineFailure] = {}
    for item in _lines(output) + _lines(errors):
        index = index_of(item.get("custom_id"))
        if index is None or index in out:
            continue
        response = item.get("response")
        error = item.get("error")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            status = int(response["status_code"])
            body = response.get("body")
            raw = orjson.dumps(body if body is not None else {})
            request_id = str(response.get("request_id") or "")
            if 200 <= status < 300:
                try:
                    out[index] = LineAnswer(index, adapter.parse_chat(raw, model=model), request_id)
                except ProviderError as exc:  # an answer we cannot read: not a clean one
                    out[index] = LineFailure(index, exc, 502, {"error": {"message": exc.message}})
            else:
                failure = _classified(adapter.error(status, {}, raw), status, provider)
                out[index] = LineFailure(index, failure, status, body if isinstance(body, dict) else {})
        elif isinstance(error, dict) and str(error.get("code") or "") not in _NOT_RUN:
            message = str(error.get("message") or "the provider refused the request")
            code = str(error.get("code") or "invalid_request")
            failure = ProviderError(ErrorKind.BAD_REQUEST, message, status=400, provider=provider)
            out[index] = LineFailure(index, failure, 400, {"error": {"message": message, "code": code}})
        # else: expired or cancelled before it ran: no result
    return out


def anthropic_results(results: bytes, *, model: str) -> dict[int, LineAnswer | LineFailure]:
    """The results JSON lines of an Anthropic Message Batch, per line index."""
    adapter = adapter_for("anthropic")
    out: dict[int, LineAnswer | LineFailure] = {}
    for item in _lines(results):
        index = index_of(item.get("custom_id"))
        result = item.get("result")
        if index is None or index in out or not isinstance(result, dict):
            continue
        kind = result.get("type")
        if kind == "succeeded":
            try:
                answer = adapter.parse_chat(orjson.dumps(result.get("message")), model=model)
            except ProviderError as exc:
                out[index] = LineFailure(index, exc, 502, {"error": {"message": exc.message}})
            else:
                out[index] = LineAnswer(index, answer, str(answer.get("id") or ""))
        elif kind == "errored":
            body = result.get("error")
            body = body if isinstance(body, dict) else {}
            inner = body.get("error")
            status = _ANTHROPIC_STATUS.get(str(inner.get("type")) if isinstance(inner, Mapping) else "", 500)
            failure = _classified(adapter.error(status, {}, orjson.dumps(body)), status, "anthropic")
            out[index] = LineFailure(index, failure, status, body)
        # canceled, expired: never ran, no result
    return out


def _classified(error: Exception, status: int, provider: str) -> ProviderError:
    if isinstance(error, ProviderError):
        return error
    return ProviderError(ErrorKind.SERVER, str(error), status=status, provider=provider)

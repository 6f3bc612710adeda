"""The OpenAI Files and Batches objects, and the batch input and output line formats: pure logic.

What ``client.files.create``, ``client.batches.create`` and friends send and expect back, checked
field by field: every value is type-checked before it is used, and a bad one becomes an
:class:`ApiError` naming the field (never a ``TypeError``). Input lines are validated as OpenAI does
at ``validating`` time (JSON object, unique ``custom_id``, ``method`` POST, ``url`` equal to the
batch's endpoint, an object ``body`` with a ``model``); a batch with bad lines fails as a whole with
``errors.data`` naming each bad line. Neighbours: ``store.py`` keeps these objects in Redis,
``worker.py`` runs the lines, ``http.py`` serves the endpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..ids import new_id
from ..openai_api.errors import ApiError, bad_request
from ..openai_api.validate import check_nesting

__all__ = [
    "COMPLETION_WINDOW_SECONDS",
    "ENDPOINTS",
    "FILE_PURPOSES",
    "MAX_LINES",
    "TERMINAL",
    "InputLine",
    "LineError",
    "LineResult",
    "batch_request",
    "check_purpose",
    "error_line",
    "expired_line",
    "file_object",
    "output_line",
    "parse_input",
    "parse_list_query",
]

Json = dict[str, Any]

#: Endpoints a batch can run: the ones the sidecar serves.
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
FILE_PURPOSES = ("batch", "batch_output", "assistants", "fine-tune", "vision", "user_data")
COMPLETION_WINDOW_SECONDS = {"24h": 24 * 3600}
MAX_LINES = 50_000  # OpenAI's limit per batch
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_MAX_METADATA_KEYS, _MAX_KEY, _MAX_VALUE = 16, 64, 512
_MAX_CUSTOM_ID = 512
_MAX_ERRORS = 100  # a failed batch lists at most this many bad lines


def new_file_id() -> str:
    return f"file-{new_id()[:24]}"


def new_batch_id() -> str:
    return f"batch_{new_id()[:24]}"


def now() -> int:
    return int(time.time())


def check_purpose(value: object) -> str:
    if not isinstance(value, str) or value not in FILE_PURPOSES:
        raise bad_request(f"purpose must be one of {', '.join(FILE_PURPOSES)}", param="purpose")
    return value


def file_object(
    *, file_id: str, size: int, created_at: int, filename: str, purpose: str, expires_at: int | None = None
) -> Json:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created_at,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": expires_at,
        "status_details": None,
    }


@dataclass(frozen=True)
class BatchRequest:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None


def batch_request(body: object) -> BatchRequest:
    """The body of ``POST /v1/batches``, every field checked."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise bad_request("input_file_id must be the id of an uploaded file", param="input_file_id")
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or endpoint not in ENDPOINTS:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint")
    window = body.get("completion_window")
    if not isinstance(window, str) or window not in COMPLETION_WINDOW_SECONDS:
        raise bad_request("completion_window must be '24h'", param="completion_window")
    return BatchRequest(file_id, endpoint, window, _metadata(body.get("metadata")))


def _metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > _MAX_METADATA_KEYS:
        raise bad_request(
            f"metadata must be an object of at most {_MAX_METADATA_KEYS} keys", param="metadata"
        )
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > _MAX_KEY or len(item) > _MAX_VALUE:
            raise bad_request(
                f"metadata values must be strings (keys up to {_MAX_KEY}, values up to {_MAX_VALUE} characters)",
                param=f"metadata.{key[:_MAX_KEY]}",
            )
    return dict(value)


def parse_list_query(query: dict[str, str], *, default_limit: int = 20) -> tuple[str, int]:
    """``after`` and ``limit`` of a list call (``limit`` 1..100, like OpenAI's)."""
    after = query.get("after", "")
    raw = query.get("limit", str(default_limit))
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise bad_request("limit must be an integer from 1 to 100", param="limit")
    return after, int(raw)


@dataclass(frozen=True)
class InputLine:
    index: int
    custom_id: str
    body: Json


@dataclass(frozen=True)
class LineError:
    """One bad input line, as OpenAI's ``errors.data`` lists it (``line`` counts from 1)."""

    code: str
    message: str
    line: int
    param: str | None = None

    def json(self) -> Json:
        return {"code": self.code, "message": self.message, "line": self.line, "param": self.param}


def parse_input(content: bytes, endpoint: str) -> tuple[list[InputLine], list[LineError]]:
    """The lines of a batch input file, or the errors that fail the batch (capped)."""
    lines: list[InputLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) >= MAX_LINES:
            errors.append(
                LineError("too_many_requests", f"a batch holds at most {MAX_LINES} requests", number)
            )
            break
        problem = _check_line(raw, endpoint, seen, number)
        if isinstance(problem, LineError):
            errors.append(problem)
            if len(errors) >= _MAX_ERRORS:
                break
        else:
            lines.append(InputLine(len(lines), *problem))
    if not lines and not errors:
        errors.append(LineError("empty_file", "the input file has no requests", 0))
    return lines, errors


def _check_line(raw: bytes, endpoint: str, seen: set[str], number: int) -> LineError | tuple[str, Json]:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return LineError("invalid_json_line", "the line is not valid JSON", number)
    if not isinstance(item, dict):
        return LineError("invalid_request", "the line must be a JSON object", number)
    try:  # the same depth limit as a live request's body: the line is stored and sent re-encoded
        check_nesting(item, raw, "the line")
    except ApiError as exc:
        return LineError("invalid_json_line", exc.message, number)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > _MAX_CUSTOM_ID:
        return LineError("invalid_request", "custom_id must be a non-empty string", number, "custom_id")
    if custom_id in seen:
        return LineError("duplicate_custom_id", f"custom_id {custom_id!r} is used twice", number, "custom_id")
    method = item.get("method")
    if not isinstance(method, str) or method.upper() != "POST":
        return LineError("invalid_method", "method must be POST", number, "method")
    url = item.get("url")
    if not isinstance(url, str) or url != endpoint:
        return LineError("mismatched_endpoint", f"url must be the batch's endpoint {endpoint}", number, "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_request", "body must be a JSON object", number, "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return LineError(
            "missing_required_parameter", "body.model must be a model name", number, "body.model"
        )
    seen.add(custom_id)
    return custom_id, body


@dataclass(frozen=True)
class LineResult:
    """How one line ended: the answer (2xx) or the error that made it fail for good."""

    status: int
    body: Json
    request_id: str
    attempts: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micro_usd: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def output_line(line: InputLine, result: LineResult) -> bytes:
    """A line of the output file (OpenAI's shape)."""
    return orjson.dumps(
        {
            "id": f"batch_req_{new_id()[:24]}",
            "custom_id": line.custom_id,
            "response": {"status_code": result.status, "request_id": result.request_id, "body": result.body},
            "error": None,
        }
    )


def error_line(line: InputLine, result: LineResult, reason: str) -> bytes:
    """A line of the error file: the dead letter, with the reason it failed for good and the
    attempts it got; ``response`` carries the last answer when there was one."""
    error = result.body.get("error")
    if not isinstance(error, dict):
        error = {}
    code = error.get("code") if isinstance(error.get("code"), str) else reason
    message = error.get("message") if isinstance(error.get("message"), str) else reason
    return orjson.dumps(
        {
            "id": f"batch_req_{new_id()[:24]}",
            "custom_id": line.custom_id,
            "response": {"status_code": result.status, "request_id": result.request_id, "body": result.body},
            "error": {"code": code, "message": f"{message} ({reason} after {result.attempts} attempts)"},
        }
    )


def expired_line(line: InputLine) -> bytes:
    """A line of the error file for a request the batch's completion window ran out on, as
    OpenAI writes it."""
    return orjson.dumps(
        {
            "id": f"batch_req_{new_id()[:24]}",
            "custom_id": line.custom_id,
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window expired.",
            },
        }
    )


def not_found(kind: str, object_id: str, param: str) -> ApiError:
    return ApiError(404, f"No such {kind}: {object_id!r}", param=param, code=f"{kind}_not_found")

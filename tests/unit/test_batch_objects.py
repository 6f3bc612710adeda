"""The pure half of batches (``batch/objects.py``, ``batch/worker.retryable``): any input is either
read or refused with an :class:`ApiError` / a line error, never another exception."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute_sidecar.batch.objects import LineResult, batch_request, error_line, parse_input
from llmroute_sidecar.batch.worker import retryable
from llmroute_sidecar.openai_api.errors import ApiError

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELD_NAMES = ("input_file_id", "endpoint", "completion_window", "metadata")
FIELDS = st.sampled_from(FIELD_NAMES)


@given(body=JSON | st.dictionaries(FIELDS, JSON | st.sampled_from(["24h", "/v1/embeddings", "file-1"])))
def test_a_batch_request_is_read_or_refused_naming_the_field(body: Any) -> None:
    error: ApiError | None = None
    try:
        wanted = batch_request(body)
    except ApiError as exc:
        error = exc
    if error is not None:
        assert error.status == 400 and error.message
        assert error.param is None or error.param.split(".")[0] in FIELD_NAMES
    else:
        assert wanted.completion_window == "24h" and wanted.endpoint in (
            "/v1/chat/completions",
            "/v1/embeddings",
        )


@given(
    content=st.binary(max_size=200)
    | st.lists(JSON, max_size=5).map(lambda v: b"\n".join(orjson.dumps(x) for x in v))
)
def test_any_input_file_gives_lines_or_line_errors(content: bytes) -> None:
    lines, errors = parse_input(content, "/v1/chat/completions")
    assert bool(lines) or bool(errors)
    assert len({line.custom_id for line in lines}) == len(lines)
    assert all(e.line >= 0 and e.code and e.message for e in errors)


def test_a_line_nested_deeper_than_a_live_request_may_be_is_refused_naming_it() -> None:
    deep = b'{"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "x": '
    content = deep + b"[" * 300 + b"]" * 300 + b"}}"
    lines, errors = parse_input(content, "/v1/chat/completions")
    assert lines == [] and [(e.line, e.code) for e in errors] == [(1, "invalid_json_line")]
    assert "levels deep" in errors[0].message


def test_a_good_file_keeps_its_order_and_skips_blank_lines() -> None:
    rows = [
        {
            "custom_id": f"r{i}",
            "method": "post",
            "url": "/v1/embeddings",
            "body": {"model": "e", "input": "x"},
        }
        for i in range(3)
    ]
    content = b"\n\n".join(orjson.dumps(r) for r in rows)
    lines, errors = parse_input(content, "/v1/embeddings")
    assert errors == [] and [(line.index, line.custom_id) for line in lines] == [
        (0, "r0"),
        (1, "r1"),
        (2, "r2"),
    ]


@pytest.mark.parametrize(
    ("status", "code", "again"),
    [(429, "rate_limited", True), (429, "budget_exceeded", False), (503, None, True), (500, None, True),
     (408, None, True), (400, "invalid_value", False), (404, "model_not_found", False),
     (400, "context_length_exceeded", False)],
)  # fmt: skip
def test_what_is_retried(status: int, code: str | None, again: bool) -> None:
    result = LineResult(status, {"error": {"message": "m", "code": code}}, "rid")
    assert retryable(result) is again


def test_a_dead_letter_says_why_and_how_often() -> None:
    from llmroute_sidecar.batch.objects import InputLine

    result = LineResult(503, {"not": "an error object"}, "rid", attempts=3)
    line = orjson.loads(error_line(InputLine(0, "c-1", {}), result, "retries_exhausted"))
    assert line["custom_id"] == "c-1" and line["response"]["status_code"] == 503
    assert line["error"] == {
        "code": "retries_exhausted",
        "message": "retries_exhausted (retries_exhausted after 3 attempts)",
    }

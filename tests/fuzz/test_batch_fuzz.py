"""Generated bad input at the Files and Batches endpoints of a real sidecar (with its Redis): never
a 5xx, always an OpenAI object or an OpenAI error with a 4xx status.

What is sent: multipart uploads with any purpose, any file bytes, missing or extra parts, and
bodies that are not multipart at all; ``POST /v1/batches`` bodies with any JSON value in each field
and whole bodies of any JSON; batch input files whose lines are generated (structure-aware chat
lines with mutations at any depth, lines of any JSON, bytes that are not JSON), which the sidecar
must either refuse at create time, naming the line, or run, line by line, through the router
(lines of ``chat-anthropic`` through the fake Anthropic's Message Batches API) without a traceback
(the session's sidecar log is checked at the end, ``conftest.py``), and every such batch must end;
and reads,
cancels, deletes and list queries with any ids and any ``after``/``limit``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .bodies import JSON, TEXT, chat_requests
from .conftest import Tally
from .test_policy_fuzz import SETTINGS, _check

pytestmark = pytest.mark.timeout(600)

ENDPOINT = "/v1/chat/completions"
PURPOSES = st.sampled_from(["batch", "batch_output", "user_data", "", "fine-tune"]) | TEXT
IDS = st.sampled_from(["", "file-x", "batch_x", "..", "%2e%2e", "a/b", "batch_" + "0" * 24]) | TEXT


def _upload(
    client: httpx.Client, tally: Tally, content: bytes, purpose: str = "batch", **extra: Any
) -> httpx.Response:
    response = client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": purpose, **extra}
    )
    _check_any(tally, "files", response)
    return response


def _check_any(tally: Tally, surface: str, response: httpx.Response) -> None:
    """Like the chat check: 200 is a file, batch, list or deletion object, else a 4xx OpenAI error."""
    if response.status_code == 200 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        tally.add(surface, 200, None)
        assert response.json()["object"] in (
            "file",
            "batch",
            "list",
            "conversation",
            "conversation.deleted",
            "feedback",
        ), response.text[:500]
        return
    if response.status_code == 200:  # file content
        tally.add(surface, 200, None)
        return
    _check(tally, surface, None, response)


@settings(SETTINGS, max_examples=150)
@given(purpose=PURPOSES, content=st.binary(max_size=300), extra=st.dictionaries(TEXT, TEXT, max_size=2))
def test_uploads_with_any_purpose_and_bytes(
    client: httpx.Client, tally: Tally, purpose: str, content: bytes, extra: dict[str, str]
) -> None:
    _upload(client, tally, content, purpose, **extra)


@settings(SETTINGS, max_examples=100)
@given(body=st.binary(max_size=200), content_type=st.sampled_from(
    ["multipart/form-data", "multipart/form-data; boundary=x", "application/json", "text/plain", ""]
))  # fmt: skip
def test_uploads_that_are_not_multipart(
    client: httpx.Client, tally: Tally, body: bytes, content_type: str
) -> None:
    response = client.post("/v1/files", content=body, headers={"content-type": content_type})
    _check_any(tally, "files-raw", response)


@settings(SETTINGS, max_examples=250)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "input_file_id": JSON | IDS,
            "endpoint": JSON | st.sampled_from([ENDPOINT, "/v1/embeddings", "/v1/completions"]),
            "completion_window": JSON | st.just("24h"),
            "metadata": JSON | st.dictionaries(TEXT, TEXT, max_size=3),
        },
    ),
    whole=st.none() | JSON,
)
def test_batch_create_any_field_any_type(
    client: httpx.Client, tally: Tally, fields: dict[str, Any], whole: Any
) -> None:
    body = fields if whole is None else whole
    response = client.post(
        "/v1/batches", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    _check_any(tally, "batches", response)


def _line(body: Any) -> dict[str, Any]:
    return {"custom_id": "c", "method": "POST", "url": ENDPOINT, "body": body}


def _encode(value: Any) -> bytes:
    """The line as a client's JSON encoder writes it; nested past orjson's limit, as Python's
    writes it, and past that too, as hand-written deep brackets (which the reader must refuse)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        try:
            return json.dumps(value).encode()
        except RecursionError:
            return b"[" * 1100 + b"]" * 1100


LINES = st.lists(
    chat_requests().map(_line).map(_encode) | JSON.map(_encode) | st.binary(max_size=40),
    min_size=1,
    max_size=4,
)


#: Batches the generated lines made, for the check that every one of them ends.
CREATED: list[str] = []


@settings(SETTINGS, max_examples=200)
@given(lines=LINES, unique=st.booleans(), model=st.sampled_from(["chat", "chat-anthropic"]))
def test_batches_of_generated_lines_are_refused_or_run(
    client: httpx.Client, tally: Tally, lines: list[bytes], unique: bool, model: str
) -> None:
    if unique:  # distinct custom ids, so structure-aware lines reach the router
        lines = [
            line.replace(b'"custom_id":"c"', f'"custom_id":"c{i}"'.encode(), 1)
            for i, line in enumerate(lines)
        ]
    # chat-anthropic's backend has a batch API: its lines are translated, submitted to the fake
    # Anthropic's Message Batches, polled, and their results translated back (or run live).
    lines = [line.replace(b'"model":"chat"', f'"model":"{model}"'.encode(), 1) for line in lines]
    uploaded = _upload(client, tally, b"\n".join(lines))
    if uploaded.status_code != 200:
        return
    response = client.post(
        "/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": ENDPOINT, "completion_window": "24h"},
    )
    _check_any(tally, "batches", response)
    if response.status_code == 200:
        assert response.json()["status"] in ("failed", "in_progress", "completed"), response.text[:500]
        CREATED.append(response.json()["id"])


@settings(SETTINGS, max_examples=100)
@given(bodies=st.lists(chat_requests(), min_size=1, max_size=4))
def test_generated_chat_lines_through_a_provider_batch_api(
    client: httpx.Client, tally: Tally, bodies: list[Any]
) -> None:
    """Well-formed lines with generated bodies for the model whose backend has a batch API: each is
    admitted, translated and submitted, or refused with a 4xx of its own; never a traceback."""
    rows = [
        {"custom_id": f"p{i}", "method": "POST", "url": ENDPOINT, "body": {**body, "model": "chat-anthropic"}}
        for i, body in enumerate(bodies)
    ]
    uploaded = _upload(client, tally, b"\n".join(_encode(row) for row in rows))
    if uploaded.status_code != 200:
        return
    response = client.post(
        "/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": ENDPOINT, "completion_window": "24h"},
    )
    _check_any(tally, "batches", response)
    if response.status_code == 200:
        CREATED.append(response.json()["id"])


def test_every_generated_batch_ends(client: httpx.Client) -> None:
    """Whatever its lines, through a provider batch or live, every batch ends: none is stuck."""
    assert CREATED, "no batch was created"
    deadline = time.monotonic() + 120
    pending = list(CREATED)
    while pending:
        batch = client.get(f"/v1/batches/{pending[0]}").json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, f"batch stuck: {batch}"
        time.sleep(0.2)


@settings(SETTINGS, max_examples=200)
@given(
    object_id=IDS,
    action=st.sampled_from(
        ["file", "content", "delete", "batch", "cancel", "files", "batches", "conversation", "erase"]
    ),
    query=st.dictionaries(st.sampled_from(["after", "limit", "purpose", "order"]), TEXT, max_size=3),
)
def test_reads_cancels_and_lists_with_any_ids(
    client: httpx.Client, tally: Tally, object_id: str, action: str, query: dict[str, str]
) -> None:
    quoted = urllib.parse.quote(object_id, safe="") or "x"  # any text, as one path segment
    request = {
        "file": ("GET", f"/v1/files/{quoted}"),
        "content": ("GET", f"/v1/files/{quoted}/content"),
        "delete": ("DELETE", f"/v1/files/{quoted}"),
        "batch": ("GET", f"/v1/batches/{quoted}"),
        "cancel": ("POST", f"/v1/batches/{quoted}/cancel"),
        "files": ("GET", "/v1/files"),
        "batches": ("GET", "/v1/batches"),
        "conversation": ("GET", f"/v1/conversations/{quoted}"),
        "erase": ("DELETE", f"/v1/conversations/{quoted}"),
    }[action]
    response = client.request(*request, params=query)
    _check_any(tally, f"batch-{action}", response)


def _answered(client: httpx.Client, user: str) -> str:
    """The id of a fresh answer of the experiment's model, which feedback may score."""
    response = client.post(
        ENDPOINT,
        json={"model": "chat-ab", "messages": [{"role": "user", "content": f"rate me {user}"}], "user": user},
    )
    assert response.status_code == 200, response.text[:500]
    return str(response.json()["id"])


@settings(SETTINGS, max_examples=300)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "response_id": JSON | IDS,
            "score": JSON | st.floats() | st.integers() | st.sampled_from([0, 1, -1, 0.5, 1e9, 1e10]),
            "label": JSON | TEXT,
        },
    ),
    whole=st.none() | JSON,
    real=st.booleans(),
    user=TEXT,
)
def test_feedback_any_field_any_type(
    client: httpx.Client, tally: Tally, fields: dict[str, Any], whole: Any, real: bool, user: str
) -> None:
    """Scores of real answers (half the time) and of anything else, with any value in each field."""
    body = fields if whole is None else whole
    if real and isinstance(body, dict):
        body = {**body, "response_id": _answered(client, user)}
    try:
        content = json.dumps(body)
    except ValueError:  # a NaN or an infinity: sent as the non-standard literal Python writes
        content = json.dumps(body, allow_nan=True)
    response = client.post("/v1/feedback", content=content, headers={"content-type": "application/json"})
    _check_any(tally, "feedback", response)

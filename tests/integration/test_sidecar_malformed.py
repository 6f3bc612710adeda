"""Whatever an app sends, the sidecar answers with an OpenAI error object and the right status, naming
the offending field, and never a stack trace. Raw HTTP here (not the SDK), so garbage can be sent."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from .conftest import FakeFactory, SidecarFactory, route_yaml

pytestmark = pytest.mark.timeout(60)

MSG = [{"role": "user", "content": "hi"}]


def _chat(**fields: Any) -> bytes:
    body: dict[str, Any] = {"model": "chat", "messages": MSG}
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()

# (id, method, path, body bytes, extra headers, expected status, expected fragment of the message, expected param)
CASES: list[tuple[str, str, str, bytes, dict[str, str], int, str, str | None]] = [
    (
        "garbage-bytes",
        "POST",
        "/v1/chat/completions",
        b"\x00\xff\xfe garbage",
        {},
        400,
        "not valid JSON",
        None,
    ),
    ("empty-body", "POST", "/v1/chat/completions", b"", {}, 400, "empty", None),
    (
        "truncated-json",
        "POST",
        "/v1/chat/completions",
        b'{"model": "chat", "messages": [',
        {},
        400,
        "not valid JSON",
        None,
    ),
    ("json-array", "POST", "/v1/chat/completions", b"[1, 2, 3]", {}, 400, "must be a JSON object", None),
    ("json-string", "POST", "/v1/chat/completions", b'"hello"', {}, 400, "must be a JSON object", None),
    (
        "missing-model",
        "POST",
        "/v1/chat/completions",
        _chat(model=_DROP),
        {},
        400,
        "model is required",
        "model",
    ),
    (
        "model-not-string",
        "POST",
        "/v1/chat/completions",
        _chat(model=42),
        {},
        400,
        "model must be a non-empty string",
        "model",
    ),
    (
        "unknown-model",
        "POST",
        "/v1/chat/completions",
        _chat(model="gpt-9"),
        {},
        404,
        "Known models: chat",
        "model",
    ),
    (
        "missing-messages",
        "POST",
        "/v1/chat/completions",
        _chat(messages=_DROP),
        {},
        400,
        "messages is required",
        "messages",
    ),
    (
        "messages-not-array",
        "POST",
        "/v1/chat/completions",
        _chat(messages="hi"),
        {},
        400,
        "messages must be an array",
        "messages",
    ),
    (
        "messages-empty",
        "POST",
        "/v1/chat/completions",
        _chat(messages=[]),
        {},
        400,
        "at least one message",
        "messages",
    ),
    (
        "message-not-object",
        "POST",
        "/v1/chat/completions",
        _chat(messages=["hi"]),
        {},
        400,
        "must be an object",
        "messages[0]",
    ),
    (
        "bad-role",
        "POST",
        "/v1/chat/completions",
        _chat(messages=[{"role": "wizard", "content": "x"}]),
        {},
        400,
        "role must be one of",
        "messages[0].role",
    ),
    (
        "content-wrong-type",
        "POST",
        "/v1/chat/completions",
        _chat(messages=[{"role": "user", "content": 5}]),
        {},
        400,
        "content must be a string or an array",
        "messages[0].content",
    ),
    (
        "bad-part-type",
        "POST",
        "/v1/chat/completions",
        _chat(messages=[{"role": "user", "content": [{"type": "video"}]}]),
        {},
        400,
        "type must be one of",
        "messages[0].content[0].type",
    ),
    (
        "image-without-url",
        "POST",
        "/v1/chat/completions",
        _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        {},
        400,
        "image_url.url",
        "messages[0].content[0].image_url.url",
    ),
    (
        "tool-without-call-id",
        "POST",
        "/v1/chat/completions",
        _chat(messages=[{"role": "tool", "content": "42"}]),
        {},
        400,
        "tool_call_id is required",
        "messages[0].tool_call_id",
    ),
    (
        "temperature-string",
        "POST",
        "/v1/chat/completions",
        _chat(temperature="hot"),
        {},
        400,
        "temperature must be a number",
        "temperature",
    ),
    (
        "temperature-range",
        "POST",
        "/v1/chat/completions",
        _chat(temperature=3.5),
        {},
        400,
        "between 0 and 2",
        "temperature",
    ),
    (
        "max-tokens-negative",
        "POST",
        "/v1/chat/completions",
        _chat(max_tokens=-1),
        {},
        400,
        "at least 1",
        "max_tokens",
    ),
    (
        "max-tokens-float",
        "POST",
        "/v1/chat/completions",
        _chat(max_completion_tokens=1.5),
        {},
        400,
        "must be an integer",
        "max_completion_tokens",
    ),
    (
        "stream-not-bool",
        "POST",
        "/v1/chat/completions",
        _chat(stream="yes"),
        {},
        400,
        "stream must be a boolean",
        "stream",
    ),
    (
        "stream-options-without-stream",
        "POST",
        "/v1/chat/completions",
        _chat(stream_options={"include_usage": True}),
        {},
        400,
        "only allowed when stream",
        "stream_options",
    ),
    (
        "too-many-stops",
        "POST",
        "/v1/chat/completions",
        _chat(stop=["a", "b", "c", "d", "e"]),
        {},
        400,
        "at most 4",
        "stop",
    ),
    (
        "tool-bad-type",
        "POST",
        "/v1/chat/completions",
        _chat(tools=[{"type": "retrieval"}]),
        {},
        400,
        'must be "function"',
        "tools[0].type",
    ),
    (
        "tool-bad-name",
        "POST",
        "/v1/chat/completions",
        _chat(tools=[{"type": "function", "function": {"name": "has spaces"}}]),
        {},
        400,
        "function.name",
        "tools[0].function.name",
    ),
    (
        "tool-choice-unknown-function",
        "POST",
        "/v1/chat/completions",
        _chat(
            tools=[{"type": "function", "function": {"name": "a"}}],
            tool_choice={"type": "function", "function": {"name": "b"}},
        ),
        {},
        400,
        "not in tools",
        "tool_choice.function.name",
    ),
    (
        "response-format-bad",
        "POST",
        "/v1/chat/completions",
        _chat(response_format={"type": "yaml"}),
        {},
        400,
        "response_format.type",
        "response_format.type",
    ),
    ("n-above-one", "POST", "/v1/chat/completions", _chat(n=3), {}, 400, "n must be 1", "n"),
    (
        "seed-string",
        "POST",
        "/v1/chat/completions",
        _chat(seed="x"),
        {},
        400,
        "seed must be an integer",
        "seed",
    ),
    (
        "embeddings-no-input",
        "POST",
        "/v1/embeddings",
        orjson.dumps({"model": "chat"}),
        {},
        400,
        "input is required",
        "input",
    ),
    (
        "embeddings-bad-input",
        "POST",
        "/v1/embeddings",
        orjson.dumps({"model": "chat", "input": [1, "a"]}),
        {},
        400,
        "input must be",
        "input",
    ),
    ("unknown-path", "POST", "/v1/completions-xyz", b"{}", {}, 404, "no such endpoint", None),
    ("wrong-method", "GET", "/v1/chat/completions", b"", {}, 405, "not allowed", None),
    (
        "huge-body",
        "POST",
        "/v1/chat/completions",
        b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}]}',
        {},
        413,
        "exceeds the limit of 200000 bytes",
        None,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment", "param"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_malformed_request_gets_an_openai_error(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
    param: str | None,
) -> None:
    provider = await fake("openai")
    instance = await sidecar(
        route_yaml([{"name": "a", "provider": "openai", "model": "gpt-4o", "endpoint": provider.base_url}]),
        max_body=200_000,
    )
    url = f"http://127.0.0.1:{instance.http_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers) as response,
    ):
        raw = await response.read()
    assert response.status == status, raw
    assert response.content_type == "application/json"
    error = orjson.loads(raw)["error"]
    assert fragment in error["message"]
    assert error["param"] == param
    assert error["type"]
    assert "Traceback" not in raw.decode("utf-8", errors="replace")
    assert provider.requests == [], "nothing malformed reaches the provider"


async def test_chunked_huge_body_is_refused(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    """Without Content-Length the limit still holds (the body is streamed in chunks)."""
    provider = await fake("openai")
    instance = await sidecar(
        route_yaml([{"name": "a", "provider": "openai", "model": "m", "endpoint": provider.base_url}]),
        max_body=100_000,
    )

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(50):
            yield b"y" * 10_000
        yield b'"}]}'

    url = f"http://127.0.0.1:{instance.http_port}/v1/chat/completions"
    async with aiohttp.ClientSession() as session, session.post(url, data=chunks()) as response:
        raw = await response.read()
    assert response.status == 413
    assert orjson.loads(raw)["error"]["code"] == "request_too_large"

"""Generated bad input against a real sidecar with every request-path policy on: never a 5xx.

The sidecar and five fake providers run as processes (``conftest.py``); requests go over real
sockets through one keep-alive ``httpx.Client`` (and a gRPC channel). What is sent:

- structure-aware chat bodies (``bodies.py``: real-looking requests with a few values, at any depth,
  replaced by any JSON value), each sent to every chat model, one per provider protocol, so every
  adapter translates what validated; streamed and not;
- structure-aware embeddings bodies, each sent to every embeddings model;
- any JSON value in any top-level field (chat and embeddings), as this tier's first version did;
- x-llmroute-* hint headers holding any text, or bytes that are not UTF-8;
- gRPC ``llmroute.v1.Router`` requests with any roles, parts, tools, JSON-text fields and numbers.

Every answer must be an OpenAI answer (200, a stream ending in ``[DONE]``) or an OpenAI error object
with a 4xx status; gRPC answers must never be INTERNAL, UNKNOWN or UNAVAILABLE. At the end the
sidecar must still be running and its log must hold no traceback (``conftest.py``), and the run must
have sent at least :data:`MINIMUM_REQUESTS` requests, some of them answered 200 by every provider.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmroute_proto.v1 import router_pb2 as pb
from llmroute_proto.v1 import router_pb2_grpc

from .bodies import CHAT_FIELDS, EMBEDDING_FIELDS, JSON, TEXT, chat_requests, embedding_requests
from .conftest import CHAT_MODELS, EMBEDDING_MODELS, Sidecar, Tally

pytestmark = pytest.mark.timeout(600)

MINIMUM_REQUESTS = 10_000
SETTINGS = settings(
    deadline=None,
    database=None,  # a fuzz run explores; failures print their example to reproduce
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
HEADERS = [
    "x-llmroute-tenant",
    "x-llmroute-user",
    "x-llmroute-task",
    "x-llmroute-tier",
    "x-llmroute-no-cache",
    "x-llmroute-debug",
    "x-request-id",
    "idempotency-key",
    "x-llmroute-conversation",
]
# Header values as a client can send them: visible ASCII, no surrounding spaces.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
# Raw bytes a client may put in a header (h11 takes tab, space, visible ASCII and 0x80-0xFF): often
# not UTF-8, which the sidecar must refuse with a 400 rather than carry into its records.
HEADER_BYTES = st.binary(max_size=12).map(
    lambda raw: bytes(b for b in raw if b == 9 or (b >= 0x20 and b != 0x7F)).strip()
)
PII = ["", " mail me at ann@example.org", " card 4111 1111 1111 1111", " ip 10.0.0.1"]


def _check(tally: Tally, surface: str, model: object, response: httpx.Response) -> None:
    """One answer: an OpenAI answer or a 4xx OpenAI error object, never a 5xx."""
    status = response.status_code
    tally.add(surface, status, model)
    assert status < 500, (surface, model, status, response.text[:800])
    if status == 200:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            text = response.text
            # No fault is injected, so a stream that ends in an error event is the sidecar's failure.
            assert text.rstrip().endswith("data: [DONE]"), (surface, model, text[-800:])
        else:
            assert response.json()["object"] in ("chat.completion", "list"), response.text[:500]
        return
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error


def _send(
    client: httpx.Client, tally: Tally, surface: str, path: str, body: Any, headers: dict[str, Any]
) -> None:
    model = body.get("model") if isinstance(body, dict) else None
    streamed = isinstance(body, dict) and body.get("stream") is True
    response = client.post(path, content=json.dumps(body), headers=headers)
    _check(tally, f"{surface}{'-stream' if streamed else ''}", model, response)


def _for_model(body: Any, model: str) -> Any:
    """``body`` sent to ``model``, unless a mutation already replaced its model with something else."""
    if isinstance(body, dict) and body.get("model") in ("chat", "embed"):
        return {**body, "model": model}
    return body


HINTS = st.dictionaries(st.sampled_from(HEADERS), HEADER_TEXT, max_size=3)


@settings(SETTINGS, max_examples=900)
@given(body=chat_requests(), headers=HINTS)
def test_structured_chat_every_provider(
    client: httpx.Client, tally: Tally, body: Any, headers: dict[str, str]
) -> None:
    for model in CHAT_MODELS:
        _send(client, tally, "chat", "/v1/chat/completions", _for_model(body, model), headers)


@settings(SETTINGS, max_examples=400)
@given(body=chat_requests(stream=True), headers=HINTS)
def test_structured_chat_streams_every_provider(
    client: httpx.Client, tally: Tally, body: Any, headers: dict[str, str]
) -> None:
    for model in CHAT_MODELS:
        _send(client, tally, "chat", "/v1/chat/completions", _for_model(body, model), headers)


@settings(SETTINGS, max_examples=500)
@given(body=embedding_requests(), headers=HINTS)
def test_structured_embeddings_every_provider(
    client: httpx.Client, tally: Tally, body: Any, headers: dict[str, str]
) -> None:
    for model in EMBEDDING_MODELS:
        _send(client, tally, "embeddings", "/v1/embeddings", _for_model(body, model), headers)


@settings(SETTINGS, max_examples=1200)
@given(
    fields=st.dictionaries(st.sampled_from(CHAT_FIELDS), JSON, max_size=4),
    content=JSON,
    headers=HINTS,
    pii=st.sampled_from(PII),
    model=st.sampled_from(CHAT_MODELS),
)
def test_chat_any_field_any_type(
    client: httpx.Client,
    tally: Tally,
    fields: dict[str, Any],
    content: Any,
    headers: dict[str, str],
    pii: str,
    model: str,
) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content if not isinstance(content, str) else content + pii}],
    }
    body.update(fields)
    _send(client, tally, "chat-any", "/v1/chat/completions", body, headers)


@settings(SETTINGS, max_examples=500)
@given(
    fields=st.dictionaries(st.sampled_from(EMBEDDING_FIELDS), JSON),
    model=st.sampled_from(EMBEDDING_MODELS),
)
def test_embeddings_any_field_any_type(
    client: httpx.Client, tally: Tally, fields: dict[str, Any], model: str
) -> None:
    body: dict[str, Any] = {"model": model, "input": "reach me at ann@example.org"}
    body.update(fields)
    _send(client, tally, "embeddings-any", "/v1/embeddings", body, {})


@settings(SETTINGS, max_examples=700)
@given(
    headers=st.dictionaries(st.sampled_from(HEADERS), HEADER_BYTES, min_size=1, max_size=3),
    model=st.sampled_from(CHAT_MODELS),
)
def test_hint_headers_any_bytes(
    client: httpx.Client, tally: Tally, headers: dict[str, bytes], model: str
) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = client.post(
        "/v1/chat/completions",
        content=json.dumps(body),
        headers=[(name.encode(), value) for name, value in headers.items()],
    )
    _check(tally, "headers", model, response)
    if any(not _is_utf8(value) for value in headers.values()):
        assert response.status_code == 400, response.text[:500]
        assert response.json()["error"]["code"] == "invalid_header"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- gRPC ------------------------------------------------------------------------------------------

_JSON_TEXT = JSON.map(json.dumps) | st.sampled_from(["", "{", "[" * 300 + "]" * 300, '{"type": "object"}'])
_NUMBER = st.floats(width=32) | st.integers(-5, 5).map(float)
_PART = st.one_of(
    st.builds(pb.ContentPart, text=TEXT),
    st.builds(
        pb.ContentPart, image_url=st.builds(pb.ImageUrl, url=TEXT, detail=st.sampled_from(["", "low", "x"]))
    ),
    st.builds(
        pb.ContentPart,
        image_data=st.builds(
            pb.ImageData, data=st.binary(max_size=8), media_type=st.sampled_from(["image/png", "", "text/x"])
        ),
    ),
    st.just(pb.ContentPart()),
)


def _mostly(draw: st.DrawFn, valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> Any:
    """A valid value three times in four, else anything (so some requests get past validation)."""
    return draw(valid) if draw(st.integers(0, 3)) != 2 else draw(anything)


@st.composite
def _grpc_chat(draw: st.DrawFn) -> pb.ChatRequest:
    messages = []
    for _ in range(_mostly(draw, st.integers(1, 3), st.integers(0, 3))):
        role = _mostly(draw, st.sampled_from([pb.ROLE_USER, pb.ROLE_SYSTEM, pb.ROLE_USER]), st.integers(0, 6))
        message = pb.ChatMessage(
            role=cast("pb.Role.ValueType", role), name=draw(st.sampled_from(["", "ann"]))
        )
        if draw(st.booleans()):
            message.content = draw(TEXT)
        else:
            message.content_parts.extend(draw(st.lists(_PART, max_size=2)))
        if draw(st.integers(0, 3)) == 2:
            message.tool_calls.append(
                pb.ToolCall(
                    id=draw(TEXT), function=pb.FunctionCall(name=draw(TEXT), arguments=draw(_JSON_TEXT))
                )
            )
        message.tool_call_id = draw(st.sampled_from(["", "call_1"]))
        messages.append(message)
    request = pb.ChatRequest(model=draw(st.sampled_from([*CHAT_MODELS, "", "nope"])), messages=messages)
    if draw(st.booleans()):
        name = _mostly(draw, st.sampled_from(["get_weather", "lookup"]), TEXT)
        parameters = _mostly(draw, st.just('{"type": "object"}'), _JSON_TEXT)
        request.tools.append(pb.Tool(function=pb.FunctionDefinition(name=name, parameters_json=parameters)))
    if draw(st.booleans()):
        request.tool_choice.CopyFrom(
            _mostly(
                draw,
                st.builds(pb.ToolChoice, mode=st.sampled_from([1, 2]))
                | st.just(pb.ToolChoice(function_name="lookup")),
                st.builds(pb.ToolChoice, mode=st.integers(0, 4))
                | st.builds(pb.ToolChoice, function_name=TEXT),
            )
        )
    if draw(st.booleans()):
        kind = _mostly(draw, st.sampled_from([1, 2, 3]), st.integers(0, 4))
        schema = _mostly(draw, st.just('{"type": "object"}'), _JSON_TEXT)
        request.response_format.CopyFrom(
            pb.ResponseFormat(
                type=cast("pb.ResponseFormatType.ValueType", kind),
                json_schema=pb.JsonSchema(name=_mostly(draw, st.just("answer"), TEXT), schema_json=schema),
            )
        )
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if draw(st.integers(0, 3)) == 2:
            setattr(request, name, _mostly(draw, st.sampled_from([0.0, 0.5, 1.0]), _NUMBER))
    if draw(st.booleans()):
        request.max_tokens = _mostly(draw, st.integers(1, 4096), st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        request.routing.CopyFrom(pb.RoutingHints(tenant=draw(TEXT), user=draw(TEXT), task=draw(TEXT)))
    request.stop.extend(draw(st.lists(TEXT, max_size=5)))
    return request


_BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}


@pytest.fixture(scope="module")
def router(sidecar: Sidecar) -> Any:
    with grpc.insecure_channel(sidecar.grpc) as channel:
        yield router_pb2_grpc.RouterStub(channel)


@settings(SETTINGS, max_examples=600)
@given(request=_grpc_chat(), stream=st.booleans())
def test_grpc_any_request(router: Any, tally: Tally, request: pb.ChatRequest, stream: bool) -> None:
    surface = "grpc-stream" if stream else "grpc"
    code, details = grpc.StatusCode.OK, ""
    try:
        if stream:
            for _ in router.ChatStream(request, timeout=30):
                pass
        else:
            router.Chat(request, timeout=30)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
    tally.add(surface, code.name, request.model)
    assert code not in _BAD_CODES, (code, details, request)


def test_the_run_sent_enough_requests(sidecar: Sidecar, tally: Tally) -> None:
    """Runs last (file order): the tier's volume, and proof the valid paths ran for every provider."""
    seconds = time.monotonic() - tally.started
    report = ", ".join(
        f"{surface} {status}: {n}" for (surface, status), n in sorted(tally.statuses.items(), key=str)
    )
    print(f"\nfuzz tier: {tally.total} requests in {seconds:.0f}s; {report}")
    assert tally.total >= MINIMUM_REQUESTS, report
    for model in (*CHAT_MODELS, *EMBEDDING_MODELS):
        assert tally.by_model[model, 200] > 0, f"no request to {model} was answered 200: {report}"
    assert tally.statuses["grpc", "OK"] + tally.statuses["grpc-stream", "OK"] > 0, report
    if any(surface == "feedback" for surface, _ in tally.statuses):  # the batch file's feedback test ran
        assert tally.statuses["feedback", 200] > 0, f"no generated feedback was accepted: {report}"
    assert sidecar.process.poll() is None, "the sidecar exited"

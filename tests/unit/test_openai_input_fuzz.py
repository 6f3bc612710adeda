"""Generated requests through the validator and every pure reader behind it: ApiError or nothing.

The bodies are structure-aware: they look like real chat-completions and embeddings requests (messages
of every role, content parts of every type, tool calls, tools, tool_choice, response_format, ...), and
then a few mutations put any JSON value at any depth, drop a field or add an unknown one. Each body
goes through ``parse_json`` (as the HTTP front decodes it) and ``parse_chat``/``parse_embeddings``:
only an :class:`ApiError` with a 4xx status may escape. A body that validated is then read by
everything downstream that is pure - token estimates, complexity, context truncation, capabilities,
the planner, cache keys, PII scanning, redaction and restore, the audit encoding, and every
provider adapter's request translation - and none of them may raise, except an adapter's
``ProviderError`` for a feature its provider cannot express (the sidecar answers that with a 400).
The readers that promise to take any JSON are also run on bodies that did not validate, the gRPC
front's JSON-text fields go through the same checks, and hint headers that are not UTF-8 are refused.

The sidecar-level twin, over real sockets, is ``tests/fuzz/test_policy_fuzz.py``.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmroute_proto.v1 import router_pb2 as rpb
from llmroute_sidecar.adapters.base import AwsKeys, Target
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.adapters.registry import PROVIDERS, adapter_for
from llmroute_sidecar.cache.keys import exact_key, partition_of, semantic_partition, semantic_text
from llmroute_sidecar.grpc_convert import chat_body
from llmroute_sidecar.openai_api.errors import ApiError
from llmroute_sidecar.openai_api.headers import check_headers
from llmroute_sidecar.openai_api.validate import parse_chat, parse_embeddings, parse_json
from llmroute_sidecar.pii import PII_TYPES as TYPES
from llmroute_sidecar.pii import redact_chat, redact_texts, scan_chat
from llmroute_sidecar.routing import context, plan
from llmroute_sidecar.routing.capabilities import needs
from llmroute_sidecar.routing.complexity import score
from llmroute_sidecar.routing.tokens import estimate_chat, estimate_embeddings
from llmroute_sidecar.service import Hints

from ..fuzz.bodies import chat_requests, embedding_requests
from . import routing_support as rs

pytestmark = pytest.mark.timeout(120)

PII_TYPES = frozenset(TYPES)

TARGETS = {
    name: Target(
        provider=name,
        model="amazon.titan-embed-text-v2" if name == "bedrock" else "m",
        endpoint="https://example.test/v1",
        region="eu-west-1",
        api_key="k",
        aws=AwsKeys("AKID", "secret") if name == "bedrock" else None,
        azure_deployment="dep",
    )
    for name in PROVIDERS
}
COHERE_EMBED = Target(provider="bedrock", model="cohere.embed-english-v3", endpoint="", aws=AwsKeys("a", "b"))
# One entry per planner path that reads the body: complexity scoring, and truncation of a conversation
# that does not fit (a window small enough that most generated conversations overflow it).
ENTRIES = [
    rs.entry([rs.backend("a", tier="small"), rs.backend("b", tier="large")], strategy="complexity"),
    rs.entry(
        [rs.backend("a", window=60, vision=True), rs.backend("b", window=40)],
        overflow="truncate-oldest",
        rules=[rs.rule(["b"], complexity_above=0.2)],
    ),
]
EMBED_ENTRY = rs.entry([rs.backend("e", chat=False, embeddings=True)], model="embed")
RESPONSE = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "<EMAIL_1> <PHONE_1>"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _decoded(body: Any) -> Any:
    """``body`` as the HTTP front sees it: encoded by an app, decoded by ``parse_json`` (stdlib JSON
    encodes any depth, so bodies deeper than orjson's limits reach the parser)."""
    return parse_json(json.dumps(body).encode())


def _refused(error: ApiError) -> None:
    assert 400 <= error.status < 500, error.status
    payload = orjson.loads(error.body())["error"]
    assert isinstance(payload["message"], str) and payload["message"]
    assert isinstance(payload["type"], str) and payload["type"]
    assert payload["param"] is None or isinstance(payload["param"], str)
    assert payload["code"] is None or isinstance(payload["code"], str)


def _translate(call: Any) -> None:
    """An adapter's request: bytes that are JSON, or a ProviderError it raised on purpose."""
    try:
        request = call()
    except ProviderError as exc:
        refused: ProviderError | None = exc
    else:
        refused = None
        assert isinstance(request.body, bytes)
        orjson.loads(request.body)
    assert refused is None or refused.kind is ErrorKind.BAD_REQUEST, refused


def _downstream_chat(body: dict[str, Any]) -> None:
    estimate = estimate_chat(body)
    assert estimate.input_tokens >= 0 and len(estimate.per_message) == len(body["messages"])
    score(body, estimate.input_tokens)
    needs(body, "chat", images=estimate.images)
    context.truncate_oldest(body["messages"], estimate.per_message, 30)
    for entry in ENTRIES:
        status = 200
        try:
            plan(entry, body, rs.hints({"x-task": "t"}, task="code"), kind="chat")
        except ApiError as exc:  # refused before any upstream call: a 4xx or 503 the app can read
            status = exc.status
        assert status in (200, 400, 404, 503), status
    for deterministic in (True, False):
        semantic_text(body, deterministic_only=deterministic)
    exact_key(body, namespace="ns", tenant="t", route="r")
    semantic_partition(body, namespace="ns", tenant="t", route="r", embedding_backend="e")
    scan_chat(body, PII_TYPES)
    redacted, redaction = redact_chat(body, PII_TYPES)
    redaction.restore_response(json.loads(json.dumps(RESPONSE)))
    # The audit line of a route that logs text carries the prompt as sent.
    orjson.dumps({"prompt": redacted.get("messages")})
    for name in PROVIDERS:
        adapter = adapter_for(name)
        for stream in (False, True):
            _translate(partial(adapter.chat_request, TARGETS[name], redacted, stream=stream))


def _downstream_embeddings(body: dict[str, Any]) -> None:
    estimate_embeddings(body)
    plan(EMBED_ENTRY, body, rs.hints(), kind="embeddings")
    value = body["input"]
    texts = [value] if isinstance(value, str) else value
    if all(isinstance(t, str) for t in texts):
        redact_texts(list(texts), PII_TYPES)
    for name in PROVIDERS:
        adapter = adapter_for(name)
        _translate(partial(adapter.embeddings_request, TARGETS[name], body))
    _translate(partial(adapter_for("bedrock").embeddings_request, COHERE_EMBED, body))


def _tolerant_readers(body: Any) -> None:
    """The readers whose contract is to take any JSON (``cache/keys.py``, ``pii/chat.py``), and the
    estimates, which are as defensive: they must not raise even on a body that did not validate."""
    if not isinstance(body, dict):
        return
    exact_key(body, namespace="ns", tenant="t", route="r")
    semantic_partition(body, namespace="ns", tenant="t", route="r", embedding_backend="e")
    semantic_text(body, deterministic_only=False)
    scan_chat(body, PII_TYPES)
    redact_chat(body, PII_TYPES)
    score(body, estimate_chat(body).input_tokens)
    estimate_embeddings(body)


@settings(
    max_examples=1800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(chat_requests())
def test_chat_bodies_validate_or_refuse_and_then_never_raise(body: Any) -> None:
    try:
        decoded = _decoded(body)
    except ApiError as exc:
        _refused(exc)
        return
    _tolerant_readers(decoded)
    try:
        parse_chat(decoded)
    except ApiError as exc:
        _refused(exc)
        return
    _downstream_chat(decoded)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(embedding_requests())
def test_embedding_bodies_validate_or_refuse_and_then_never_raise(body: Any) -> None:
    try:
        decoded = _decoded(body)
        parse_embeddings(decoded)
    except ApiError as exc:
        _refused(exc)
        return
    _downstream_embeddings(decoded)


JSON_TEXT = st.sampled_from(
    ["", "{}", "[]", "5", '"s"', "null", '{"type": "object"}', "[" * 300 + "]" * 300, "{", '{"a": [1, {}]}']
)


@settings(max_examples=300, deadline=None)
@given(parameters=JSON_TEXT, schema=JSON_TEXT, name=st.text(max_size=70), choice=st.text(max_size=10))
def test_grpc_json_fields_validate_or_refuse(parameters: str, schema: str, name: str, choice: str) -> None:
    """The gRPC front's free-form JSON fields (tool parameters, response schema) reach the same checks."""
    request = rpb.ChatRequest(
        model="chat",
        messages=[rpb.ChatMessage(role=rpb.ROLE_USER, content="hi")],
        tools=[rpb.Tool(function=rpb.FunctionDefinition(name=name, parameters_json=parameters))],
        tool_choice=rpb.ToolChoice(function_name=choice),
        response_format=rpb.ResponseFormat(
            type=rpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=rpb.JsonSchema(name="s", schema_json=schema),
        ),
    )
    try:
        body = parse_chat(chat_body(request, stream=False))
    except ApiError as exc:
        _refused(exc)
        return
    _downstream_chat(body)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=12), name=st.sampled_from(["x-llmroute-tenant", "x-request-id", "x-other"]))
def test_hint_headers_are_text_or_refused(raw: bytes, name: str) -> None:
    """A header value as aiohttp decodes it (UTF-8, other bytes as lone surrogates): refused with a
    400, or text that the records it travels into (cache partitions, usage, the audit log) can encode."""
    value = raw.decode("utf-8", "surrogateescape")
    try:
        check_headers({name: value})
    except ApiError as exc:
        _refused(exc)
        refused = True
    else:
        refused = False
    assert refused == (name != "x-other" and not _utf8(raw))
    hints = Hints.from_headers({name: value}, {})
    if not refused:
        partition_of(namespace="ns", tenant=hints.tenant, route="r")
        orjson.dumps({"tenant": hints.tenant, "request_id": hints.request_id})


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

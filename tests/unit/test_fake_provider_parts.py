"""The fake providers' pure parts: fault knobs, event-stream framing, SigV4, schemas, replies, vectors.

The wire formats themselves are proven against the official SDKs in
``tests/integration/test_fake_providers.py``; these tests pin the logic those rely on.
"""

from __future__ import annotations

import math

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from llmroute_fakes.conversation import Conversation, Reply, ToolDef, ToolMode, Turn
from llmroute_fakes.embeddings import embed
from llmroute_fakes.faults import (
    FaultPlan,
    FaultPolicy,
    FaultSpec,
    FaultSyntaxError,
    parse_faults,
)
from llmroute_fakes.replies import plan_reply
from llmroute_fakes.schemas import schema_instance
from llmroute_fakes.sigv4 import check_sigv4
from llmroute_sidecar.aws.eventstream import (
    EventStreamError,
    decode_messages,
    event_message,
    exception_message,
)


def test_fault_syntax() -> None:
    spec = parse_faults("status=429, retry_after=2.5; latency_ms=10,error_event,tool_call=lookup,reset")
    assert spec == FaultSpec(
        status=429, retry_after=2.5, latency_ms=10, error_event=1, tool_call="lookup", reset=True
    )
    assert parse_faults(str(spec)) == spec
    assert parse_faults("none").isolated
    batch = parse_faults("batch_ms=300,batch_fail=2,batch_fail_status=529,batch_end=expired,batch_ack_ms=50")
    assert batch == FaultSpec(
        batch_ms=300, batch_fail=2, batch_fail_status=529, batch_end="expired", batch_ack_ms=50
    )
    assert parse_faults(str(batch)) == batch
    for bad in (
        "stauts=429", "status=200", "cut_after=-1", "latency_ms", "retry_after=soon", "hang=maybe",
        "batch_end=sometime", "batch_fail_status=200", "batch_ms=-5",
    ):  # fmt: skip
        with pytest.raises(FaultSyntaxError):
            parse_faults(bad)


def test_fault_layers_and_seeded_draws() -> None:
    plan = FaultPlan(FaultPolicy(defaults=FaultSpec(latency_ms=5, status=500), fail_rate=0.0))
    plan.queue(FaultSpec(status=429), parse_faults("none"))
    assert plan.decide("retry_after=1") == FaultSpec(latency_ms=5, status=429, retry_after=1)
    assert plan.decide(None) == FaultSpec(isolated=True)  # a queued clean request
    assert plan.decide("none,slow_stream_ms=3") == FaultSpec(slow_stream_ms=3, isolated=True)
    assert plan.decide(None) == FaultSpec(latency_ms=5, status=500)

    def draws(header: str | None) -> list[int | None]:
        seeded = FaultPlan(FaultPolicy(fail_rate=0.5, failure=FaultSpec(status=503), seed=3))
        return [seeded.decide(header).status for _ in range(30)]

    # The n-th request's draw does not depend on headers that opt earlier requests out.
    assert draws(None) == draws(None)
    assert set(draws(None)) == {None, 503}
    assert draws("none") == [None] * 30


def test_event_stream_round_trip_and_checksums() -> None:
    frames = event_message("contentBlockDelta", {"delta": {"text": "hi"}}) + exception_message(
        "throttlingException", {"message": "slow down"}
    )
    first, second = decode_messages(frames)
    assert first.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert first.payload == b'{"delta":{"text":"hi"}}'
    assert second.headers[":exception-type"] == "throttlingException"
    assert second.headers[":message-type"] == "exception"

    corrupted = bytearray(frames)
    corrupted[20] ^= 0xFF
    with pytest.raises(EventStreamError):
        decode_messages(bytes(corrupted))
    with pytest.raises(EventStreamError):
        decode_messages(frames[:-3])


def _signed(body: bytes, path: str = "/model/anthropic.claude-v2%3A1/converse") -> AWSRequest:
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:9/{path.lstrip('/')}", data=body)
    request.headers["Content-Type"] = "application/json"
    SigV4Auth(Credentials("AKID", "secret"), "bedrock", "eu-west-1").add_auth(request)
    return request


def test_sigv4_matches_botocore_signer() -> None:
    request = _signed(b'{"messages":[]}')
    # botocore signs the Host header its HTTP client will send; the fake sees it on the wire.
    headers = {"host": "127.0.0.1:9", **{name.lower(): value for name, value in request.headers.items()}}
    common = {
        "method": "POST",
        "raw_path": "/model/anthropic.claude-v2%3A1/converse",
        "headers": headers,
        "service": "bedrock",
    }
    assert check_sigv4(**common, body=b'{"messages":[]}', secrets={"AKID": "secret"}) is None
    assert check_sigv4(**common, body=b'{"messages":[]}', secrets=None) is None

    tampered = check_sigv4(**common, body=b'{"messages":[1]}', secrets={"AKID": "secret"})
    assert tampered is not None and tampered.code == "InvalidSignatureException"
    unknown = check_sigv4(**common, body=b"", secrets={"OTHER": "secret"})
    assert unknown is not None and unknown.code == "UnrecognizedClientException"
    missing = check_sigv4(**{**common, "headers": {}}, body=b"", secrets=None)
    assert missing is not None and missing.code == "MissingAuthenticationTokenException"
    wrong_service = check_sigv4(**{**common, "service": "s3"}, body=b"", secrets=None)
    assert wrong_service is not None and wrong_service.code == "InvalidSignatureException"


def test_schema_instances() -> None:
    pydantic_style = {
        "$defs": {"Kind": {"enum": ["a", "b"], "type": "string"}},
        "properties": {
            "kind": {"$ref": "#/$defs/Kind"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "tags": {"type": "array", "items": {"type": "integer", "minimum": 3}},
            "when": {"type": "string", "format": "date"},
            "ratio": {"type": ["null", "number"]},
        },
        "type": "object",
    }
    assert schema_instance(pydantic_style) == {
        "kind": "a",
        "note": "fake-note",
        "tags": [3],
        "when": "2025-01-01",
        "ratio": 1.0,
    }
    gemini_style = {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}}
    assert schema_instance(gemini_style) == {"ok": True}
    assert schema_instance({"$ref": "#/$defs/Loop", "$defs": {"Loop": {"$ref": "#/$defs/Loop"}}}) is None


def _ids() -> str:
    return "id-1"


def test_reply_rules() -> None:
    weather = ToolDef(
        "get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}}
    )
    lookup = ToolDef("lookup")

    def reply(text: str, mode: ToolMode = "auto") -> Reply:
        conversation = Conversation(turns=(Turn("user", text),), tools=(lookup, weather), tool_mode=mode)
        return plan_reply(conversation, protocol="p", tool_knob=None, new_id=_ids)

    named = reply("what does get_weather say?")
    assert named.tool_calls[0].name == "get_weather" and named.tool_calls[0].arguments == {
        "city": "fake-city"
    }
    assert reply("use a tool").tool_calls[0].name == "lookup"
    assert reply("just chat").tool_calls == ()
    assert reply("use a tool", mode="none").tool_calls == ()
    assert reply("chat", mode="required").finish == "tool_calls"

    cut = plan_reply(
        Conversation(turns=(Turn("user", "x" * 80),), max_tokens=3), protocol="p", tool_knob=None, new_id=_ids
    )
    assert (cut.text, cut.finish, cut.completion_tokens) == ("fake-p reply", "length", 3)
    after_tool = Conversation(turns=(Turn("user", "q"), Turn("tool", "42")), tools=(lookup,))
    assert (
        plan_reply(after_tool, protocol="p", tool_knob="lookup", new_id=_ids).text
        == "fake-p got tool result: 42"
    )


def test_embeddings_are_deterministic_unit_vectors() -> None:
    a, b, c = embed("the red apple", 256), embed("the red apple pie", 256), embed("quantum tunnelling", 256)
    assert a == embed("the red apple", 256)
    assert math.isclose(sum(v * v for v in a), 1.0)

    def cosine(x: list[float], y: list[float]) -> float:
        return sum(p * q for p, q in zip(x, y, strict=True))

    assert cosine(a, b) > 0.7 > cosine(a, c)
    assert len(embed("", 8)) == 8

"""Pure pieces of the sidecar: SSE parsing, the OpenAI stream decoder, error classification,
backoff bounds, config validation and secret redaction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest

from llmroute_proto.api.loader import load_paths
from llmroute_proto.compiler import compile_config
from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.adapters.base import Target
from llmroute_sidecar.adapters.common import retry_after
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError, kind_for_status
from llmroute_sidecar.adapters.openai import AzureOpenAIAdapter, OpenAIAdapter
from llmroute_sidecar.adapters.sse import SseParser
from llmroute_sidecar.attempts import Policy
from llmroute_sidecar.audit import AuditLog
from llmroute_sidecar.config.redact import REDACTED, redacted_dict
from llmroute_sidecar.config.snapshot import ConfigError, build_snapshot

ROOT = Path(__file__).resolve().parents[2]


def test_sse_parser_handles_any_split() -> None:
    stream = b'event: a\ndata: {"x": 1}\n\n: comment\ndata: line1\ndata: line2\n\r\ndata: [DONE]\n\n'
    whole = SseParser().feed(stream)
    for size in (1, 2, 3, 7):
        parser = SseParser()
        events = []
        for i in range(0, len(stream), size):
            events += parser.feed(stream[i : i + size])
        assert events == whole
    assert [(e.event, e.data) for e in whole] == [("a", '{"x": 1}'), ("", "line1\nline2"), ("", "[DONE]")]


def _sse(*objects: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objects) + b"data: [DONE]\n\n"


def test_openai_decoder_hides_usage_chunk_unless_asked() -> None:
    body = _sse(
        {"id": "1", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"id": "1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    )
    hidden = OpenAIAdapter().chat_stream_decoder(model="m", include_usage=False)
    assert len(hidden.feed(body)) == 1
    assert hidden.finished and hidden.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    shown = OpenAIAdapter().chat_stream_decoder(model="m", include_usage=True)
    assert len(shown.feed(body)) == 2


def test_openai_decoder_not_finished_without_done() -> None:
    decoder = OpenAIAdapter().chat_stream_decoder(model="m", include_usage=False)
    decoder.feed(b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n')
    assert not decoder.finished


def test_openai_decoder_raises_on_error_event() -> None:
    decoder = OpenAIAdapter().chat_stream_decoder(model="m", include_usage=False)
    with pytest.raises(ProviderError) as caught:
        decoder.feed(b'data: {"error": {"message": "server overloaded"}}\n\n')
    assert caught.value.kind == ErrorKind.OVERLOADED


def test_openai_request_forces_usage_and_replaces_model() -> None:
    target = Target(provider="openai", model="gpt-4o", endpoint="", api_key="sk-1")
    request = OpenAIAdapter().chat_request(
        target, {"model": "chat", "messages": [], "stream": True}, stream=True
    )
    body = json.loads(request.body)
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert body["model"] == "gpt-4o" and body["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == "Bearer sk-1"


def test_azure_url_and_auth() -> None:
    target = Target(
        provider="azure-openai",
        model="gpt-4o",
        endpoint="https://x.openai.azure.com/",
        api_key="k",
        azure_deployment="dep",
        azure_api_version="2024-10-21",
    )
    request = AzureOpenAIAdapter().chat_request(target, {"model": "chat", "messages": []}, stream=False)
    assert (
        request.url
        == "https://x.openai.azure.com/openai/deployments/dep/chat/completions?api-version=2024-10-21"
    )
    assert request.headers["api-key"] == "k" and "authorization" not in request.headers


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (429, "", ErrorKind.RATE_LIMITED),
        (401, "", ErrorKind.AUTH),
        (403, "", ErrorKind.AUTH),
        (503, "", ErrorKind.OVERLOADED),
        (529, "", ErrorKind.OVERLOADED),
        (500, "", ErrorKind.SERVER),
        (504, "", ErrorKind.TIMEOUT),
        (400, "This model's maximum context length is 8192 tokens", ErrorKind.CONTEXT_TOO_LONG),
        (400, "bad", ErrorKind.BAD_REQUEST),
    ],
)
def test_kind_for_status(status: int, message: str, kind: ErrorKind) -> None:
    assert kind_for_status(status, message) == kind


def test_error_retryability() -> None:
    assert ProviderError(ErrorKind.RATE_LIMITED, "x").retryable
    assert not ProviderError(ErrorKind.AUTH, "x").retryable
    assert ProviderError(ErrorKind.AUTH, "x").try_next_backend
    assert not ProviderError(ErrorKind.BAD_REQUEST, "x").try_next_backend


def test_retry_after_forms() -> None:
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None


def test_backoff_is_full_jitter_within_bounds_and_honours_retry_after() -> None:
    policy = Policy(backoff_base=0.2, backoff_max=5.0)
    assert policy.backoff(0, None, rng=lambda lo, hi: hi) == pytest.approx(0.2)
    assert policy.backoff(3, None, rng=lambda lo, hi: hi) == pytest.approx(1.6)
    assert policy.backoff(10, None, rng=lambda lo, hi: hi) == 5.0
    assert policy.backoff(10, None, rng=lambda lo, hi: lo) == 0.0
    assert policy.backoff(0, 7.0, rng=lambda lo, hi: hi) == 7.0


def test_policy_from_route_maps_retry_on() -> None:
    res = load_paths([ROOT / "examples"], environ={})
    config = compile_config(namespace="team-eu", routes=res.routes, secrets=res.secrets).config
    policy = Policy.from_route(config.routes[0])
    assert policy.per_attempt == 30 and policy.total == 60 and policy.retries == 1
    assert ErrorKind.CONNECTION in policy.retry_on and ErrorKind.RATE_LIMITED in policy.retry_on


def _example_config() -> pb.RouterConfig:
    res = load_paths([ROOT / "examples"], environ={})
    return compile_config(namespace="team-a", routes=res.routes, secrets=res.secrets).config


def test_snapshot_indexes_examples() -> None:
    snapshot = build_snapshot(_example_config())
    assert {"chat", "embed", "summarize", "assistant"} <= set(snapshot.models)
    chat = snapshot.models["chat"]
    assert [b.name for b in chat.backends][:2] == ["gpt4o-us", "claude-us"]
    assert chat.backends[0].target.api_key == "sk-placeholder-replace-me"
    assert "sk-placeholder" not in repr(chat.backends[0].target)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.credentials.pop(0), "needs credential"),
        (lambda c: c.routes[0].models[0].backends.append("ghost"), "unknown backends"),
        (lambda c: setattr(c.routes[0].backends[0], "provider", 99), "unknown provider"),
    ],
)
def test_snapshot_refuses_bad_configs(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    config = _example_config()
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        build_snapshot(config)


def test_redaction_covers_every_secret() -> None:
    config = _example_config()
    dumped = json.dumps(redacted_dict(config))
    for credential in config.credentials:
        for value in (credential.api_key.key, credential.aws.access_key_id, credential.aws.secret_access_key):
            if value:
                assert value not in dumped
    assert REDACTED in dumped
    assert config.credentials[0].WhichOneof("secret") is not None, "the original is untouched"
    assert any(c.api_key.key == "sk-placeholder-replace-me" for c in config.credentials)


async def test_the_audit_log_buffers_lines_and_writes_them_whole_within_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), namespace="ns", workload="w", flush_seconds=0.05)
    for index in range(3):
        audit.write({**audit.head(), "request_id": f"r{index}"})
    assert path.read_bytes() == b""  # buffered: no write per request
    await asyncio.sleep(0.2)
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert all(line["namespace"] == "ns" and line["workload"] == "w" and "ts" in line for line in lines)
    audit.write({"request_id": "r3"})  # without head(): its fields are added
    audit.close()  # a clean stop writes what is buffered
    audit = AuditLog(str(path), flush_seconds=60)
    audit.write({"note": "x" * 70_000})  # past the size bound: out at once, whatever the timer
    assert path.read_bytes().count(b"\n") == 5
    audit.close()
    last = orjson.loads(path.read_bytes().splitlines()[3])
    assert last["request_id"] == "r3" and last["namespace"] == "ns"


def test_the_audit_log_without_an_event_loop_writes_each_line_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.write({"request_id": "r0"})
    assert orjson.loads(path.read_bytes())["request_id"] == "r0"
    audit.close()

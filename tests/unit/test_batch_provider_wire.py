"""The provider batch APIs' formats (``batch/provider_wire.py``) and the pure parts around them: a
line becomes the provider's batch request through the live adapters, every kind of result comes back
as an OpenAI answer, a classified refusal, or no result; prices are discounted; what is stored in
Redis reads back the same; reservations are settled or given back once."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.adapters.base import Target
from llmroute_sidecar.batch.line_accounting import discounted, stored_price
from llmroute_sidecar.batch.provider_lines import Holds
from llmroute_sidecar.batch.provider_wire import (
    LineAnswer,
    LineFailure,
    anthropic_batch,
    anthropic_results,
    index_of,
    openai_batch,
    openai_results,
    request_line,
)
from llmroute_sidecar.batch.submissions import LineMeta, Submission
from llmroute_sidecar.config.snapshot import BackendEntry

BODY = {
    "model": "chat",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
    "max_tokens": 12,
    "temperature": 1.5,
}


def target(provider: str, **extra: Any) -> Target:
    return Target(
        provider=provider, model="m-1", endpoint="https://example.test/v1", api_key="sk-secret", **extra
    )


def test_an_openai_line_is_the_live_request_with_our_custom_id() -> None:
    line = orjson.loads(request_line(target("openai"), 7, {**BODY, "stream": True}))
    assert (line["custom_id"], line["method"], line["url"]) == ("l7", "POST", "/v1/chat/completions")
    assert line["body"]["model"] == "m-1" and "stream" not in line["body"]
    assert line["body"]["messages"] == BODY["messages"]
    assert b"sk-secret" not in request_line(target("openai"), 7, BODY)


def test_an_azure_line_names_the_deployment_and_azures_url() -> None:
    line = orjson.loads(request_line(target("azure-openai", azure_deployment="batch-dep"), 0, BODY))
    assert (line["url"], line["body"]["model"]) == ("/chat/completions", "batch-dep")


def test_an_anthropic_line_is_a_messages_request() -> None:
    line = orjson.loads(request_line(target("anthropic"), 3, BODY))
    assert line["custom_id"] == "l3" and set(line) == {"custom_id", "params"}
    params = line["params"]
    assert params["model"] == "m-1" and params["max_tokens"] == 12 and params["temperature"] == 1.0
    assert params["system"] == [{"type": "text", "text": "be brief"}]
    assert params["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def _jsonl(*rows: Any) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def test_openai_results_answers_refusals_and_lines_never_run() -> None:
    output = _jsonl(
        {
            "custom_id": "l0",
            "response": {"status_code": 200, "request_id": "req_1", "body": _completion("a")},
        },
        {"custom_id": "l1", "response": {"status_code": 200, "body": {"no": "choices"}}},
    )
    errors = (
        _jsonl(
            {
                "custom_id": "l2",
                "response": {"status_code": 400, "body": {"error": {"message": "bad", "code": "x"}}},
            },
            {"custom_id": "l3", "response": {"status_code": 500, "body": {"error": {"message": "oops"}}}},
            {"custom_id": "l4", "response": None, "error": {"code": "batch_expired", "message": "late"}},
            {"custom_id": "l5", "response": None, "error": {"code": "invalid_request", "message": "no"}},
            {"custom_id": "someone-else", "response": {"status_code": 200, "body": _completion("b")}},
        )
        + b"{torn"
    )
    results = openai_results("openai", output, errors, model="m-1")
    assert sorted(results) == [0, 1, 2, 3, 5]  # l4 never ran: no result, it runs live
    answer = results[0]
    assert isinstance(answer, LineAnswer) and answer.request_id == "req_1"
    assert answer.response["choices"][0]["message"]["content"] == "a"
    unreadable = results[1]  # a 200 without choices is a fault, never a clean empty answer
    assert isinstance(unreadable, LineFailure) and unreadable.worth_another_try
    refused, failed, invalid = results[2], results[3], results[5]
    assert isinstance(refused, LineFailure) and not refused.worth_another_try and refused.status == 400
    assert isinstance(failed, LineFailure) and failed.worth_another_try and failed.status == 500
    assert isinstance(invalid, LineFailure) and not invalid.worth_another_try


def test_anthropic_results_of_every_type() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 4, "output_tokens": 3, "cache_read_input_tokens": 2},
    }

    def errored(kind: str) -> dict[str, Any]:
        return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": kind}}}

    results = anthropic_results(
        _jsonl(
            {"custom_id": "l0", "result": {"type": "succeeded", "message": message}},
            {"custom_id": "l1", "result": errored("invalid_request_error")},
            {"custom_id": "l2", "result": errored("overloaded_error")},
            {"custom_id": "l3", "result": {"type": "expired"}},
            {"custom_id": "l4", "result": {"type": "canceled"}},
        ),
        model="m-1",
    )
    assert sorted(results) == [0, 1, 2]
    answer = results[0]
    assert isinstance(answer, LineAnswer)
    assert answer.response["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "hello", "refusal": None},
        "finish_reason": "length",
        "logprobs": None,
    }
    assert answer.response["usage"]["prompt_tokens"] == 6  # cache reads are prompt tokens too
    assert answer.response["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    bad, busy = results[1], results[2]
    assert isinstance(bad, LineFailure) and bad.status == 400 and not bad.worth_another_try
    assert isinstance(busy, LineFailure) and busy.status == 529 and busy.worth_another_try


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Results shaped like the providers' (any field may hold anything), beside lines of any JSON or bytes.
RESULT = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["succeeded", "errored", "expired", "canceled", "other"]) | JSON,
        "message": st.fixed_dictionaries({}, optional={"content": JSON, "usage": JSON, "stop_reason": JSON})
        | JSON,
        "error": st.fixed_dictionaries({}, optional={"type": JSON, "error": JSON, "code": JSON}) | JSON,
        "status_code": st.sampled_from([200, 201, 400, 429, 500, 529]) | JSON,
        "body": st.fixed_dictionaries({}, optional={"choices": JSON, "usage": JSON, "error": JSON}) | JSON,
    },
)
LINE = st.builds(
    lambda i, result, error: orjson.dumps(
        {"custom_id": f"l{i}", "result": result, "response": result, "error": error}
    ),
    st.integers(0, 5),
    RESULT | JSON,
    RESULT | JSON,
)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.binary(max_size=60) | JSON.map(orjson.dumps) | LINE, max_size=6))
def test_any_result_bytes_give_results_or_nothing_never_an_exception(lines: list[bytes]) -> None:
    content = b"\n".join(lines)
    for results in (
        openai_results("openai", content, content, model="m"),
        openai_results("azure-openai", content, b"", model="m"),
        anthropic_results(content, model="m"),
    ):
        assert all(isinstance(r, LineAnswer | LineFailure) and r.index == i for i, r in results.items())


def test_provider_batch_objects() -> None:
    gpt = openai_batch(
        {
            "id": "batch_1",
            "status": "in_progress",
            "created_at": 10,
            "request_counts": {"total": 3},
            "metadata": {"llmroute_submission": "sub_x"},
            "output_file_id": None,
        }
    )
    assert (gpt.ended, gpt.total, gpt.marker, gpt.output_file) == (False, 3, "sub_x", "")
    assert openai_batch({"id": "b", "status": "expired"}).ended
    claude = anthropic_batch(
        {
            "id": "msgbatch_1",
            "processing_status": "ended",
            "created_at": "2025-01-01T00:00:00Z",
            "request_counts": {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 1},
        }
    )
    assert (claude.ended, claude.total, claude.created_at) == (True, 4, 1735689600.0)
    assert index_of("l12") == 12 and index_of("x12") is None and index_of(3) is None


def _backend(**prices: Any) -> BackendEntry:
    return BackendEntry(
        name="b", route="r", provider="openai", target=Target("openai", "m", ""), region="",
        input_per_million=prices.get("input", 2.0), output_per_million=prices.get("output", 8.0), context_window=0,
        tier=0, max_concurrency=0, capabilities=pb.Capabilities(chat=True),
        cached_input_per_million=prices.get("cached"), batch_api=True, batch_discount_percent=prices.get("discount", 50.0),
    )  # fmt: skip


def test_the_batch_price_is_the_discounted_list_price() -> None:
    half = discounted(_backend(cached=1.0))
    assert (half.input_per_million, half.output_per_million, half.cached_input_per_million) == (1.0, 4.0, 0.5)
    assert discounted(_backend(discount=0.0)).output_per_million == 8.0
    assert discounted(_backend(discount=40.0)).input_per_million == 2.0 * 0.6


def test_what_is_stored_reads_back_the_same() -> None:
    meta = LineMeta("chat", 10, 20, True, "weighted", 1700000000.5, 1234, "miss")
    assert LineMeta.loads(meta.dumps()) == meta
    sub = Submission(
        id="sub_1", batch_id="batch_1", route="demo/bulk", backend="gpt", provider="openai", tenant="acme",
        user="ann", discount=50.0, input_price=1.0, output_price=4.0, cached_price=-1.0, created_at=5.5,
        state="submitted", count=3, sent_at=6.5, tries=2, remote_id="batch_x", cancel_sent=True,
    )  # fmt: skip
    pairs = sub.pairs()
    raw = {pairs[i].encode(): pairs[i + 1].encode() for i in range(0, len(pairs), 2)} | {b"count": b"3"}
    parsed = Submission.parse(raw)
    assert parsed is not None and parsed == Submission(**{**sub.__dict__, "id": ""})
    assert Submission.parse({b"other": b"1"}) is None
    price = stored_price(sub)
    assert (price.input_per_million, price.cached_input_per_million, price.batch_discount_percent) == (
        1.0,
        None,
        50.0,
    )


class _Reservation:
    def __init__(self) -> None:
        self.settled: list[int] = []
        self.released = 0

    def settle(self, actual: int) -> None:
        self.settled.append(actual)

    def release(self) -> None:
        self.released += 1


def test_holds_settle_each_reservation_once_and_give_back_the_rest() -> None:
    holds = Holds()
    mine = {0: _Reservation(), 1: _Reservation()}
    holds.add("s1", dict(mine))  # type: ignore[arg-type]
    assert holds.take("s1", 0) is mine[0] and holds.take("s1", 0) is None
    whole = _Reservation()
    holds.adopt("s2", whole)  # type: ignore[arg-type]
    holds.spend("s2", 30)
    holds.spend("s2", 12)
    holds.close_all()
    assert mine[1].released == 1 and mine[0].released == 0  # the taken one is the caller's
    assert whole.settled == [42]
    holds.close("s2")
    assert whole.settled == [42]


def test_the_usage_record_on_the_wire_says_which_batch_api_ran_the_line() -> None:
    from llmroute_sidecar.usage import UsageRecord
    from llmroute_sidecar.usage_reporter import to_proto

    def record(**extra: Any) -> UsageRecord:
        return UsageRecord("r", "demo/bulk", "chat", "gpt", "openai", "", "", 10, 5, 30, "ok", 0.1, **extra)

    batch = to_proto(record(batch_api="openai", batch_discount_percent=50.0))
    assert (batch.batch_api, batch.batch_discount_percent, batch.cost_micro_usd) == ("openai", 50.0, 30)
    live = to_proto(record())
    assert (live.batch_api, live.batch_discount_percent) == ("", 0.0)

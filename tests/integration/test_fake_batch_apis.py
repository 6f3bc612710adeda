"""The fakes' batch APIs, judged by the official SDKs (as ``test_fake_providers.py`` judges the rest).

OpenAI and Azure OpenAI: ``client.files.create``, ``client.batches.create/retrieve/list/cancel`` and
``client.files.content`` of the ``openai`` SDK; Anthropic: ``client.messages.batches.create/retrieve/
list/cancel/results`` of the ``anthropic`` SDK, which parses every object and result line into its
own types. The batch fault knobs (``batch_ms``, ``batch_fail``, ``batch_end``, ``batch_ack_ms``) and
the ordinary ``status`` knob reach the SDK the way a real provider's behaviour would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from anthropic.types.messages import MessageBatch
from openai.types import Batch
from openai.types.chat import ChatCompletion

from llmroute_fakes import FakeProvider

KEY = "test-key"


@pytest.fixture(scope="module")
def running() -> Iterator[dict[str, FakeProvider]]:
    with (
        FakeProvider("openai", api_key=KEY) as gpt,
        FakeProvider("azure-openai", api_key=KEY) as azure,
        FakeProvider("anthropic", api_key=KEY) as claude,
    ):
        yield {"openai": gpt, "azure-openai": azure, "anthropic": claude}


@pytest.fixture
def fakes(running: dict[str, FakeProvider]) -> dict[str, FakeProvider]:
    for fake in running.values():
        fake.clear()
        fake.set_faults(None)
    return running


def fault(spec: str) -> dict[str, str]:
    return {"x-fake-fault": spec}


def jsonl(url: str, model: str, count: int) -> bytes:
    rows = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": url,
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 9,
            },
        }
        for i in range(count)
    ]
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def until_done(client: openai.OpenAI, batch_id: str) -> Batch:
    deadline = time.monotonic() + 10
    while (batch := client.batches.retrieve(batch_id)).status not in (
        "completed",
        "failed",
        "expired",
        "cancelled",
    ):
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.05)
    return batch


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [orjson.loads(line) for line in client.files.content(file_id).text.splitlines()]


@pytest.mark.parametrize("protocol", ["openai", "azure-openai"])
def test_openai_files_and_batches_through_the_sdk(fakes: dict[str, FakeProvider], protocol: str) -> None:
    fake = fakes[protocol]
    if protocol == "openai":
        client: openai.OpenAI = openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
        url = "/v1/chat/completions"
    else:
        client = openai.AzureOpenAI(
            azure_endpoint=fake.url, api_key=KEY, api_version="2024-10-21", max_retries=0
        )
        url = "/chat/completions"
    data = jsonl(url, "gpt-4o", 5)
    upload = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert (upload.purpose, upload.bytes, upload.status) == ("batch", len(data), "processed")
    assert client.files.retrieve(upload.id).id == upload.id
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint=url,  # type: ignore[arg-type]  # Azure's own endpoint name
        completion_window="24h",
        metadata={"llmroute": "sub-1"},
        extra_headers=fault("batch_ms=300,batch_fail=1,batch_fail_status=400"),
    )
    assert batch.status == "validating" and batch.metadata == {"llmroute": "sub-1"}
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress" and running.request_counts is not None
    assert running.request_counts.total == 5 and running.output_file_id is None
    assert client.batches.list(limit=10).data[0].id == batch.id
    done = until_done(client, batch.id)
    assert done.status == "completed" and done.completed_at is not None and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 1)
    assert done.usage is not None and done.usage.input_tokens > 0 and done.usage.output_tokens > 0
    output = lines_of(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(1, 5)]
    for line in output:
        answer = ChatCompletion.model_validate(line["response"]["body"])  # the SDK's own type
        assert (
            answer.choices[0].message.content and answer.usage is not None and answer.usage.prompt_tokens > 0
        )
    errors = lines_of(client, done.error_file_id)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("req-0", 400)]
    assert errors[0]["response"]["body"]["error"]["message"]
    assert client.files.delete(upload.id).deleted


def test_openai_batch_faults_reach_the_sdk(fakes: dict[str, FakeProvider]) -> None:
    fake = fakes["openai"]
    client = openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    upload = client.files.create(
        file=("in.jsonl", jsonl("/v1/chat/completions", "gpt-4o", 4)), purpose="batch"
    )

    def create(spec: str) -> Batch:
        return client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_headers=fault(spec),
        )

    with pytest.raises(openai.InternalServerError):
        create("status=500")
    expired = until_done(client, create("batch_end=expired").id)
    assert expired.status == "expired" and expired.expired_at is not None
    assert [line["custom_id"] for line in lines_of(client, expired.output_file_id)] == ["req-0", "req-1"]
    assert [(e["custom_id"], e["error"]["code"]) for e in lines_of(client, expired.error_file_id)] == [
        ("req-2", "batch_expired"),
        ("req-3", "batch_expired"),
    ]
    failed = until_done(client, create("batch_end=failed").id)
    assert failed.status == "failed" and failed.output_file_id is None and failed.failed_at is not None
    slow = create("batch_ms=5000")
    cancelling = client.batches.cancel(slow.id)
    assert cancelling.status == "cancelling"
    cancelled = until_done(client, slow.id)
    assert cancelled.status == "cancelled" and cancelled.output_file_id is None
    started = time.monotonic()
    late = create("batch_ack_ms=400")  # created at once, answered late: a client may give up first
    assert time.monotonic() - started >= 0.4 and late.status == "validating"
    bad = client.files.create(file=("bad.jsonl", b'{"custom_id": "x"}\nnot json\n'), purpose="batch")
    refused = until_done(
        client,
        client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert refused.status == "failed" and refused.errors is not None and refused.errors.data is not None
    assert [(e.line, e.code) for e in refused.errors.data] == [
        (1, "invalid_method"),
        (2, "invalid_json_line"),
    ]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def claude_client(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)


def message_requests(count: int) -> list[Any]:
    return [
        {
            "custom_id": f"req-{i}",
            "params": {
                "model": "claude-sonnet-4-6",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"question {i}"}],
            },
        }
        for i in range(count)
    ]


def until_ended(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    deadline = time.monotonic() + 10
    while (batch := client.messages.batches.retrieve(batch_id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return batch


def test_anthropic_message_batches_through_the_sdk(fakes: dict[str, FakeProvider]) -> None:
    client = claude_client(fakes["anthropic"])
    batch = client.messages.batches.create(
        requests=message_requests(4), extra_headers=fault("batch_ms=300,batch_fail=1,batch_fail_status=529")
    )
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4
    assert batch.results_url is None and batch.expires_at > batch.created_at
    assert client.messages.batches.list(limit=5).data[0].id == batch.id
    ended = until_ended(client, batch.id)
    assert ended.ended_at is not None and ended.results_url is not None
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 3, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {f"req-{i}" for i in range(4)}
    failure = results["req-0"]
    assert failure.type == "errored" and failure.error.error.type == "overloaded_error"
    for custom_id in ("req-1", "req-2", "req-3"):
        result = results[custom_id]
        assert result.type == "succeeded"
        assert result.message.content[0].type == "text" and result.message.content[0].text
        assert result.message.usage.input_tokens > 0 and result.message.usage.output_tokens > 0
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"


def test_anthropic_batch_faults_and_refusals_reach_the_sdk(fakes: dict[str, FakeProvider]) -> None:
    client = claude_client(fakes["anthropic"])
    with pytest.raises(anthropic.InternalServerError):
        client.messages.batches.create(requests=message_requests(2), extra_headers=fault("status=500"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.batches.create(requests=[{"custom_id": "bad id!", "params": {}}])  # type: ignore[typeddict-item]
    assert "custom_id" in str(refused.value)
    expired = client.messages.batches.create(
        requests=message_requests(4), extra_headers=fault("batch_end=expired")
    )
    until_ended(client, expired.id)
    kinds = {r.custom_id: r.result.type for r in client.messages.batches.results(expired.id)}
    assert kinds == {"req-0": "succeeded", "req-1": "succeeded", "req-2": "expired", "req-3": "expired"}
    slow = client.messages.batches.create(requests=message_requests(2), extra_headers=fault("batch_ms=5000"))
    assert client.messages.batches.cancel(slow.id).processing_status == "canceling"
    cancelled = until_ended(client, slow.id)
    assert cancelled.cancel_initiated_at is not None and cancelled.request_counts.canceled == 2
    assert {r.result.type for r in client.messages.batches.results(slow.id)} == {"canceled"}
    failed = client.messages.batches.create(
        requests=message_requests(2), extra_headers=fault("batch_end=failed")
    )
    until_ended(client, failed.id)
    assert {r.result.type for r in client.messages.batches.results(failed.id)} == {"errored"}
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")

"""Batch jobs through the official OpenAI SDK: Files and Batches endpoints of a real sidecar, its
lines in a real Redis (Debian's redis-server), answered by fake providers on real sockets.

A 200-line batch is split across two providers by the route's weighted policy and one line is
dead-lettered with its reason; retryable answers are retried up to the attempt limit and then
dead-lettered; a cancelled batch stops taking lines; files and batches are the caller tenant's only.
Interactive latency beside a running batch, and sidecars stopped mid-batch, are measured on real
processes in ``tests/reliability/test_batch_faults.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import openai
import orjson
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.batch import WorkerSettings
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.asyncio

FAST = WorkerSettings(
    concurrency=4,
    claim_idle_seconds=2.0,
    max_attempts=3,
    backoff_seconds=0.05,
    poll_ms=200,
    sweep_seconds=0.5,
)
TERMINAL = {"completed", "failed", "cancelled", "expired"}


def batch_route(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider | None = None, *, extra: str = ""
) -> str:
    """Model ``chat``: a 50/50 weighted split over an OpenAI-compatible and an Anthropic fake (or the
    first alone), no route-level retries, so the batch worker's own retries are what is tested."""
    two = anthropic_fake is not None
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        "metadata: {name: batchy, namespace: demo}",
        "spec:",
        "  models:",
        "  - name: chat",
    ]
    if two:
        lines += [
            "    strategy: weighted",
            "    split:",
            "    - {backend: gpt, weight: 50}",
            "    - {backend: claude, weight: 50}",
        ]
    else:
        lines.append("    backends: [gpt]")
    lines += [
        "  backends:",
        "  - name: gpt",
        "    provider: openai-compatible",
        "    model: model-gpt",
        f"    endpoint: {openai_fake.base_url}",
        "    pricing: {inputPerMillion: 2, outputPerMillion: 8}",
        extra,
    ]
    if two:
        assert anthropic_fake is not None
        lines += [
            "  - name: claude",
            "    provider: anthropic",
            "    model: claude-test",
            f"    endpoint: {anthropic_fake.base_url}",
            "    credentialsRef: {name: keys, key: claude-key}",
            "    pricing: {inputPerMillion: 3, outputPerMillion: 15}",
            "    batchApi: 'off'",  # live calls here; test_provider_batches.py covers the batch API
        ]
    lines += [
        "  resilience:",
        "    timeout: {perAttempt: 5s, total: 10s}",
        "    retries: {attempts: 0, backoff: {base: 5ms, max: 10ms}}",
        "---",
        "apiVersion: v1",
        "kind: Secret",
        "metadata: {name: keys, namespace: demo}",
        "stringData: {claude-key: sk-ant-test}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def chat_line(custom_id: str, text: str, model: str = "chat") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8},
    }


async def run_batch(
    client: openai.AsyncOpenAI, rows: list[dict[str, Any]], *, within: float = 60.0, **extra: Any
) -> Any:
    uploaded = await client.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch", **extra)
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", **extra
    )
    return await wait_for(client, batch.id, within=within, **extra)


async def wait_for(client: openai.AsyncOpenAI, batch_id: str, *, within: float = 60.0, **extra: Any) -> Any:
    deadline = time.monotonic() + within
    while True:
        batch = await client.batches.retrieve(batch_id, **extra)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < deadline, (
            f"batch still {batch.status} after {within}s: {batch.request_counts}"
        )
        await asyncio.sleep(0.1)


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None, **extra: Any) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id, **extra)
    return [orjson.loads(line) for line in content.text.splitlines() if line.strip()]


async def with_batches(sidecar: SidecarFactory, yaml_text: str, redis_url: str, **settings: Any) -> Sidecar:
    return await sidecar(yaml_text, redis_url=redis_url, batch=settings.pop("batch", FAST), **settings)


async def test_a_200_line_batch_completes_across_two_providers_with_one_dead_letter(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt, claude = await fake("openai-compatible"), await fake("anthropic")
    instance = await with_batches(sidecar, batch_route(gpt, claude), redis_url)
    rows = [chat_line(f"req-{i}", f"question {i}") for i in range(199)]
    rows.insert(120, chat_line("req-unknown-model", "who serves me?", model="no-such-model"))
    async with client_for(instance) as client:
        batch = await run_batch(client, rows)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
            200,
            199,
            1,
        )
        assert batch.completed_at is not None and batch.in_progress_at is not None
        assert batch.usage is not None and batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0
        output = await lines_of(client, batch.output_file_id)
        errors = await lines_of(client, batch.error_file_id)
    ids = [line["custom_id"] for line in output]
    assert sorted(ids) == sorted(r["custom_id"] for r in rows if r["custom_id"] != "req-unknown-model")
    assert ids == [r["custom_id"] for r in rows if r["custom_id"] != "req-unknown-model"]  # input order
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["content"]
    # The dead letter, with its reason: the model does not exist, so retrying would not help.
    assert [line["custom_id"] for line in errors] == ["req-unknown-model"]
    assert errors[0]["error"]["code"] == "model_not_found"
    assert "not_retryable after 1 attempts" in errors[0]["error"]["message"]
    assert errors[0]["response"]["status_code"] == 404
    # Both providers served lines (the weighted split), and each line reached a provider once.
    gpt_calls, claude_calls = len(gpt.requests), len(claude.requests)
    assert gpt_calls + claude_calls == 199
    assert gpt_calls > 40 and claude_calls > 40, (gpt_calls, claude_calls)
    assert (
        instance.metrics.registry.get_sample_value("llmroute_batch_lines_total", {"event": "completed"})
        == 199
    )
    assert instance.metrics.registry.get_sample_value("llmroute_batch_lines_total", {"event": "failed"}) == 1


async def test_retryable_answers_are_retried_then_dead_lettered_with_the_attempts(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai-compatible")
    one_at_a_time = WorkerSettings(
        concurrency=1, claim_idle_seconds=2.0, max_attempts=3, backoff_seconds=0.02, poll_ms=200
    )
    instance = await with_batches(sidecar, batch_route(gpt), redis_url, batch=one_at_a_time)
    async with client_for(instance) as client:
        gpt.queue_faults("status=503", "status=503")  # the first line's first two attempts
        batch = await run_batch(client, [chat_line(f"a-{i}", "hi") for i in range(3)])
        assert batch.status == "completed" and batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 0)
        assert len(gpt.requests) == 5  # 3 lines + 2 retries
        gpt.clear()
        gpt.queue_faults("status=429", "status=503", "status=500")  # the first line, all 3 attempts
        batch = await run_batch(client, [chat_line(f"b-{i}", "hi") for i in range(3)])
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
        errors = await lines_of(client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == ["b-0"]
    assert "retries_exhausted after 3 attempts" in errors[0]["error"]["message"]
    assert errors[0]["response"]["status_code"] >= 500
    assert len(gpt.requests) == 5


async def test_a_cancelled_batch_stops_taking_lines_and_keeps_what_was_answered(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai-compatible", faults="latency_ms=100")
    slow = WorkerSettings(concurrency=2, claim_idle_seconds=2.0, poll_ms=200, sweep_seconds=0.3)
    instance = await with_batches(sidecar, batch_route(gpt), redis_url, batch=slow)
    async with client_for(instance) as client:
        uploaded = await client.files.create(
            file=("in.jsonl", jsonl([chat_line(f"c-{i}", "hi") for i in range(100)])), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(400):  # until a few lines have been answered
            counts = (await client.batches.retrieve(batch.id)).request_counts
            if counts is not None and counts.completed >= 4:
                break
            await asyncio.sleep(0.05)
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        done = await wait_for(client, batch.id, within=30)
        calls_at_end = len(gpt.requests)
        await asyncio.sleep(0.5)
        output = await lines_of(client, done.output_file_id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.request_counts is not None and 4 <= done.request_counts.completed < 20
    assert len(output) == done.request_counts.completed == calls_at_end  # nothing ran after the end
    assert len(gpt.requests) == calls_at_end


async def test_files_and_batches_belong_to_the_callers_tenant(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai-compatible")
    instance = await with_batches(sidecar, batch_route(gpt), redis_url)
    acme_h, globex_h = {"x-llmroute-tenant": "acme"}, {"x-llmroute-tenant": "globex"}
    async with client_for(instance) as client:
        mine = await client.files.create(
            file=("in.jsonl", jsonl([chat_line("t-1", "hi")])), purpose="batch", extra_headers=acme_h
        )
        batch = await client.batches.create(
            input_file_id=mine.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_headers=acme_h,
        )
        assert (await client.files.retrieve(mine.id, extra_headers=acme_h)).bytes == len(
            jsonl([chat_line("t-1", "hi")])
        )
        for call in (
            client.files.retrieve(mine.id, extra_headers=globex_h),
            client.files.content(mine.id, extra_headers=globex_h),
            client.batches.retrieve(batch.id, extra_headers=globex_h),
            client.batches.cancel(batch.id, extra_headers=globex_h),
            client.batches.create(
                input_file_id=mine.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                extra_headers=globex_h,
            ),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [f.id for f in (await client.files.list(purpose="batch", extra_headers=acme_h)).data] == [
            mine.id
        ]
        assert (await client.files.list(extra_headers=globex_h)).data == []
        assert [b.id for b in (await client.batches.list(extra_headers=acme_h)).data] == [batch.id]
        assert (await client.batches.list(extra_headers=globex_h)).data == []
        done = await wait_for(client, batch.id, extra_headers=acme_h)
        assert done.status == "completed"
        outputs = (await client.files.list(purpose="batch_output", extra_headers=acme_h)).data
        assert [f.id for f in outputs] == [done.output_file_id]  # the output file is acme's too
        with pytest.raises(openai.NotFoundError):
            await client.files.content(done.output_file_id or "", extra_headers=globex_h)
        deleted = await client.files.delete(mine.id, extra_headers=acme_h)
        assert deleted.deleted
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(mine.id, extra_headers=acme_h)


async def test_a_batch_with_bad_lines_fails_at_once_naming_each_line(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai-compatible")
    instance = await with_batches(sidecar, batch_route(gpt), redis_url)
    bad = (
        jsonl([chat_line("ok-1", "hi"), chat_line("ok-1", "again")])
        + b"not json\n"
        + jsonl(
            [
                {**chat_line("x", "hi"), "url": "/v1/embeddings"},
                {**chat_line("y", "hi"), "body": {"messages": []}},
            ]
        )
    )
    async with client_for(instance) as client:
        uploaded = await client.files.create(file=("in.jsonl", bad), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        with pytest.raises(openai.BadRequestError) as refused:
            await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
            )
        assert refused.value.body["param"] == "endpoint"  # type: ignore[index]
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [
        (2, "duplicate_custom_id"),
        (3, "invalid_json_line"),
        (4, "mismatched_endpoint"),
        (5, "missing_required_parameter"),
    ]
    assert gpt.requests == []


async def test_without_redis_the_endpoints_say_what_is_missing(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    gpt = await fake("openai-compatible")
    instance = await sidecar(batch_route(gpt))
    async with client_for(instance) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.files.create(file=("in.jsonl", jsonl([chat_line("a", "hi")])), purpose="batch")
        assert refused.value.code == "batches_unavailable"
        assert "--redis-url" in refused.value.message


async def test_an_ended_batch_and_its_output_expire_after_the_retention(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai-compatible")
    short = dataclasses.replace(FAST, retention_seconds=2.0)
    instance = await with_batches(sidecar, batch_route(gpt), redis_url, batch=short)
    async with client_for(instance) as client:
        batch = await run_batch(client, [chat_line(f"r-{i}", "hi") for i in range(3)])
        assert batch.status == "completed" and batch.output_file_id is not None
        output = await client.files.retrieve(batch.output_file_id)
        assert output.expires_at is not None and output.expires_at - output.created_at == 2
        listed = [f.id async for f in client.files.list()]
        assert batch.output_file_id in listed and batch.input_file_id in listed
        await asyncio.sleep(3.1)
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(batch.output_file_id)
        assert [b.id async for b in client.batches.list()] == []
        assert [f.id async for f in client.files.list()] == [batch.input_file_id]  # the app's own stays
    assert instance.batches is not None
    index = await instance.batches.redis.zrange(instance.batches.prefix + "files", 0, -1)
    assert [i.decode() for i in index] == [batch.input_file_id]  # expired ids left the index

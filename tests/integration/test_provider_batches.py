"""Batch lines through the providers' own batch APIs, judged through the official OpenAI SDK as the
app, against a real sidecar, the fake OpenAI, Azure OpenAI and Anthropic servers (whose batch APIs
the official SDKs accept, ``test_fake_batch_apis.py``) and a real Redis.

Lines routed to a backend with a batch API are submitted there (a JSONL upload and a batch, or a
Message Batch), polled and collected: the fakes get no live call for them, each line costs the
discounted price, and its usage record says which batch API ran it. A provider batch that fails
sends its lines back to run live, or dead-letters them with the provider's reason; a submission
whose sidecar stops is taken over by another without being submitted twice; a batch whose
completion window passes ends ``expired``; a hard budget holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.batch import WorkerSettings
from llmroute_sidecar.runtime import Settings, Sidecar
from llmroute_sidecar.usage import UsageRecord

from .conftest import FakeFactory, SidecarFactory, client_for
from .test_batches import chat_line, jsonl, lines_of, run_batch, wait_for

pytestmark = pytest.mark.asyncio

QUICK = WorkerSettings(
    concurrency=4,
    claim_idle_seconds=2.0,
    max_attempts=3,
    backoff_seconds=0.05,
    poll_ms=200,
    sweep_seconds=0.3,
    provider_poll_seconds=0.2,
    provider_flush_seconds=0.5,
)
PRICES = {
    "gpt": (Fraction(2), Fraction(8)),
    "claude": (Fraction(3), Fraction(15)),
    "azure": (Fraction(1), Fraction(4)),
}


def route(backends: list[tuple[str, FakeProvider, str]], *, model: str = "", extra: str = "") -> str:
    """Model ``chat`` over ``backends`` (name, fake, extra YAML of the backend), no route retries."""
    kinds = {
        "openai": ("openai", "gpt-4o"),
        "anthropic": ("anthropic", "claude-test"),
        "azure-openai": ("azure-openai", "gpt-4o-batch"),
    }
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        "metadata: {name: bulk, namespace: demo}",
        "spec:",
        "  models:",
        "  - name: chat",
        model or f"    backends: [{', '.join(name for name, _, _ in backends)}]",
        "  backends:",
    ]
    for name, fake, more in backends:
        provider, model_id = kinds.get(fake.protocol.name, ("openai-compatible", "local-model"))
        price_in, price_out = PRICES.get(name, (Fraction(1), Fraction(1)))
        endpoint = fake.url if provider == "azure-openai" else fake.base_url
        lines += [
            f"  - name: {name}",
            f"    provider: {provider}",
            f"    model: {model_id}",
            f"    endpoint: {endpoint}",
            f"    pricing: {{inputPerMillion: {price_in}, outputPerMillion: {price_out}{more}}}",
        ]
        if provider != "openai-compatible":
            lines.append(f"    credentialsRef: {{name: keys, key: {name}}}")
        if provider == "azure-openai":
            lines.append("    azure: {deployment: gpt-4o-batch}")
    lines += [
        "  resilience:",
        "    timeout: {perAttempt: 5s, total: 10s}",
        "    retries: {attempts: 0, backoff: {base: 5ms, max: 10ms}}",
        extra,
        "---",
        "apiVersion: v1",
        "kind: Secret",
        "metadata: {name: keys, namespace: demo}",
        "stringData: {gpt: sk-gpt, claude: sk-ant, azure: az-key, dear: sk-dear}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


async def start(sidecar: SidecarFactory, yaml_text: str, redis_url: str, **batch: Any) -> Sidecar:
    return await sidecar(yaml_text, redis_url=redis_url, batch=dataclasses.replace(QUICK, **batch))


def calls(fake: FakeProvider, method: str, suffix: str) -> list[Any]:
    return [r for r in fake.requests if r.method == method and r.path.endswith(suffix)]


def uploaded_lines(fake: FakeProvider) -> list[dict[str, Any]]:
    """The JSONL lines the sidecar uploaded to an OpenAI-protocol fake."""
    out: list[dict[str, Any]] = []
    for stored in fake._state.batches.files.values():
        if stored.purpose == "batch":
            out += [orjson.loads(line) for line in stored.content.splitlines() if line.strip()]
    return out


def batch_records(instance: Sidecar) -> list[UsageRecord]:
    return [r for r in list(instance.usage._records) if r.batch_api]


def metric(instance: Sidecar, event: str) -> float:
    return instance.metrics.registry.get_sample_value("llmroute_batch_lines_total", {"event": event}) or 0.0


async def test_a_batch_across_openai_and_anthropic_goes_through_both_batch_apis_at_the_discount(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai", faults="batch_ms=400")
    claude = await fake("anthropic", faults="batch_ms=400")
    split = "    strategy: weighted\n    split: [{backend: gpt, weight: 50}, {backend: claude, weight: 50}]"
    yaml_text = route([("gpt", gpt, ""), ("claude", claude, ", batchDiscountPercent: 40")], model=split)
    instance = await start(sidecar, yaml_text, redis_url)
    rows = [chat_line(f"q-{i}", f"bulk question {i}") for i in range(40)]
    async with client_for(instance) as client:
        batch = await run_batch(client, rows, within=30)
        output = await lines_of(client, batch.output_file_id)
    assert batch.status == "completed" and batch.request_counts is not None, batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        40,
        40,
        0,
    )
    assert [line["custom_id"] for line in output] == [r["custom_id"] for r in rows]  # input order
    for line in output:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] and body["usage"]["prompt_tokens"] > 0
    # Both providers got one batch each and not a single live call.
    assert calls(gpt, "POST", "/chat/completions") == [] and calls(claude, "POST", "/v1/messages") == []
    assert len(calls(gpt, "POST", "/v1/files")) == 1 and len(calls(gpt, "POST", "/v1/batches")) == 1
    assert len(calls(claude, "POST", "/v1/messages/batches")) == 1
    sent_gpt = uploaded_lines(gpt)
    sent_claude = calls(claude, "POST", "/v1/messages/batches")[0].json()["requests"]
    assert len(sent_gpt) + len(sent_claude) == 40 and len(sent_gpt) > 5 and len(sent_claude) > 5
    assert {(line["url"], line["body"]["model"]) for line in sent_gpt} == {("/v1/chat/completions", "gpt-4o")}
    assert {(r["params"]["model"], r["params"]["max_tokens"]) for r in sent_claude} == {("claude-test", 8)}
    # What each line says it was asked, as the provider saw it: line i went as l<i>.
    questions = {line["custom_id"]: line["body"]["messages"][0]["content"] for line in sent_gpt}
    questions |= {r["custom_id"]: r["params"]["messages"][0]["content"][0]["text"] for r in sent_claude}
    assert questions == {f"l{i}": f"bulk question {i}" for i in range(40)}
    # Usage: one record per line, marked with its batch API and priced at the discount.
    records = batch_records(instance)
    assert len(records) == 40 and len({r.request_id for r in records}) == 40
    by_api = {r.batch_api for r in records}
    assert by_api == {"openai", "anthropic"}
    total = 0
    for record in records:
        price_in, price_out = PRICES[record.backend]
        share = Fraction(60, 100) if record.backend == "claude" else Fraction(50, 100)
        assert record.batch_discount_percent == (40.0 if record.backend == "claude" else 50.0)
        expected = (record.input_tokens * price_in + record.output_tokens * price_out) * share
        assert record.cost_micro_usd == round(expected) and record.outcome == "ok", record
        total += record.cost_micro_usd
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(r.input_tokens for r in records)
    listed = sum(
        round(r.input_tokens * PRICES[r.backend][0] + r.output_tokens * PRICES[r.backend][1]) for r in records
    )
    print(f"40 lines: ${total / 1e6:.6f} through the batch APIs, ${listed / 1e6:.6f} at list prices")
    assert 0 < total < listed
    assert metric(instance, "submitted") == 40 and metric(instance, "completed") == 40


def errors_by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in lines}


async def test_a_failing_provider_batch_falls_back_live_or_dead_letters_with_the_providers_reason(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai")
    instance = await start(sidecar, route([("gpt", gpt, "")]), redis_url)
    rows = [chat_line(f"f-{i}", f"question {i}") for i in range(6)]
    async with client_for(instance) as client:
        # The provider refuses two lines for good (400): dead letters naming its batch, no live call.
        gpt.set_faults("batch_fail=2,batch_fail_status=400")
        refused = await run_batch(client, rows)
        assert refused.request_counts is not None
        assert (refused.request_counts.completed, refused.request_counts.failed) == (4, 2)
        dead = errors_by_id(await lines_of(client, refused.error_file_id))
        assert set(dead) == {"f-0", "f-1"}
        for line in dead.values():
            assert line["response"]["status_code"] == 400
            assert line["error"]["message"].startswith("the openai batch batch_fake")
            assert "refused the line" in line["error"]["message"]
            assert "not_retryable after 1 attempts" in line["error"]["message"]
        assert calls(gpt, "POST", "/chat/completions") == []
        # Two lines fail with a 500: they run live at the batch tier instead, and answer.
        gpt.clear()
        gpt.set_faults("batch_fail=2,batch_fail_status=500")
        retried = await run_batch(client, rows)
        assert retried.request_counts is not None
        assert (retried.request_counts.completed, retried.request_counts.failed) == (6, 0)
        live = calls(gpt, "POST", "/chat/completions")
        assert sorted(r.json()["messages"][0]["content"] for r in live) == ["question 0", "question 1"]
        assert len(calls(gpt, "POST", "/v1/batches")) == 1
        # The whole provider batch fails: every line runs live.
        gpt.clear()
        gpt.set_faults("batch_end=failed")
        failed = await run_batch(client, rows)
        assert failed.request_counts is not None and failed.request_counts.completed == 6
        assert len(calls(gpt, "POST", "/chat/completions")) == 6
        # The create call is refused (nothing created): every line runs live, nothing is sent twice.
        gpt.clear()
        gpt.set_faults(None)
        gpt.queue_faults("none", "status=400")  # the upload passes, the create is refused
        turned_down = await run_batch(client, rows)
        assert turned_down.request_counts is not None and turned_down.request_counts.completed == 6
        assert (
            len(calls(gpt, "POST", "/v1/batches")) == 1 and len(calls(gpt, "POST", "/chat/completions")) == 6
        )
        output = await lines_of(client, turned_down.output_file_id)
    assert [line["custom_id"] for line in output] == [r["custom_id"] for r in rows]
    assert metric(instance, "fallback") == 2 + 6 + 6 and metric(instance, "failed") == 2
    live_records = [r for r in list(instance.usage._records) if not r.batch_api and r.outcome == "ok"]
    assert len(live_records) == 2 + 6 + 6  # the lines that ran live are billed at the list price
    for record in live_records:
        assert record.cost_micro_usd == round(record.input_tokens * 2 + record.output_tokens * 8)


async def test_anthropic_lines_the_batch_never_ran_or_overloaded_run_live(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    claude = await fake("anthropic", faults="batch_end=expired")
    instance = await start(sidecar, route([("claude", claude, "")]), redis_url)
    rows = [chat_line(f"a-{i}", f"question {i}") for i in range(8)]
    async with client_for(instance) as client:
        expired = await run_batch(client, rows)
        assert expired.request_counts is not None and expired.request_counts.completed == 8
        live = calls(claude, "POST", "/v1/messages")
        assert sorted(r.json()["messages"][0]["content"][0]["text"] for r in live) == [
            f"question {i}" for i in range(4, 8)
        ]  # the second half expired at the provider
        claude.clear()
        claude.set_faults("batch_fail=3,batch_fail_status=529")
        overloaded = await run_batch(client, rows)
        assert overloaded.request_counts is not None and overloaded.request_counts.completed == 8
        assert len(calls(claude, "POST", "/v1/messages")) == 3
    records = batch_records(instance)
    assert len(records) == 4 + 5 and {r.batch_api for r in records} == {"anthropic"}


async def test_azure_openai_lines_go_to_the_deployments_batch_api(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    azure = await fake("azure-openai")
    instance = await start(sidecar, route([("azure", azure, "")]), redis_url)
    rows = [chat_line(f"z-{i}", f"question {i}") for i in range(5)]
    async with client_for(instance) as client:
        batch = await run_batch(client, rows)
        assert batch.request_counts is not None and batch.request_counts.completed == 5
    upload, create = calls(azure, "POST", "/openai/files"), calls(azure, "POST", "/openai/batches")
    assert len(upload) == 1 and len(create) == 1
    assert create[0].query["api-version"] == "2024-10-21" and create[0].headers["api-key"] == "az-key"
    assert create[0].json()["endpoint"] == "/chat/completions"
    assert {(line["url"], line["body"]["model"]) for line in uploaded_lines(azure)} == {
        ("/chat/completions", "gpt-4o-batch")
    }
    assert calls(azure, "POST", "/chat/completions") == []
    records = batch_records(instance)
    assert len(records) == 5 and all(r.batch_api == "azure-openai" for r in records)
    assert all(r.cost_micro_usd == round((r.input_tokens * 1 + r.output_tokens * 4) / 2) for r in records)


async def test_personal_data_never_reaches_the_batch_api_and_comes_back_in_the_answer(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    claude = await fake("anthropic")
    restore = "  privacy:\n    pii: {action: redact, restore: true}"
    instance = await start(sidecar, route([("claude", claude, "")], extra=restore), redis_url)
    rows = [chat_line("p-0", "jane.doe@example.com: write back")]
    rows[0]["body"]["max_tokens"] = 100
    async with client_for(instance) as client:
        batch = await run_batch(client, rows)
        (line,) = await lines_of(client, batch.output_file_id)
    (created,) = calls(claude, "POST", "/v1/messages/batches")
    assert b"jane.doe@example.com" not in created.body and b"<EMAIL_1>" in created.body
    assert "jane.doe@example.com" in line["response"]["body"]["choices"][0]["message"]["content"]


async def test_a_cancelled_batch_cancels_its_provider_batch(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai", faults="batch_ms=60000")
    instance = await start(sidecar, route([("gpt", gpt, "")]), redis_url)
    async with client_for(instance) as client:
        uploaded = await client.files.create(
            file=("in.jsonl", jsonl([chat_line(f"c-{i}", "hi") for i in range(10)])), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(200):
            if metric(instance, "submitted") == 10:
                break
            await asyncio.sleep(0.05)
        await client.batches.cancel(batch.id)
        done = await wait_for(client, batch.id, within=20)
    assert done.status == "cancelled" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 0)
    assert len(calls(gpt, "POST", "/cancel")) == 1 and calls(gpt, "POST", "/chat/completions") == []
    assert metric(instance, "skipped") == 10 and batch_records(instance) == []


async def solo(tmp_path: Path, yaml_text: str, redis_url: str) -> Sidecar:
    """A sidecar the test stops itself (the one that goes away)."""
    path = tmp_path / "first.yaml"
    path.write_text(yaml_text)
    instance = Sidecar(
        Settings(
            config_path=path, http_addr="127.0.0.1:0", admin_addr="127.0.0.1:0", grpc_addr="127.0.0.1:0",
            watch_seconds=0, redis_url=redis_url, batch=QUICK,
        )
    )  # fmt: skip
    await instance.start()
    return instance


async def until(check: Any, within: float = 20.0) -> None:
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize(
    ("protocol", "when"),
    [("openai", "submitted"), ("openai", "creating"), ("anthropic", "submitted"), ("anthropic", "creating")],
)
async def test_a_sidecar_that_stops_mid_provider_batch_hands_it_over_without_sending_it_twice(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str, tmp_path: Path, protocol: str, when: str
) -> None:
    # "creating": the provider creates the batch but answers late, and the sidecar stops before the
    # answer (with the provider's id) arrives; "submitted": it stops while the batch runs.
    faults = "batch_ms=500,batch_ack_ms=3000" if when == "creating" else "batch_ms=1500"
    provider = await fake(protocol, faults=faults)
    name = "gpt" if protocol == "openai" else "claude"
    yaml_text = route([(name, provider, "")])
    create_path = "/v1/batches" if protocol == "openai" else "/v1/messages/batches"
    first = await solo(tmp_path, yaml_text, redis_url)
    rows = [chat_line(f"h-{i}", f"question {i}") for i in range(12)]
    try:
        async with client_for(first) as client:
            uploaded = await client.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            await until(lambda: len(calls(provider, "POST", create_path)) == 1)
            if when == "submitted":
                await until(lambda: metric(first, "submitted") == 12)
    finally:
        await first.stop(grace=0.2)  # gives its submission up; the other sidecar takes it over
    second = await start(sidecar, yaml_text, redis_url)
    async with client_for(second) as client:
        done = await wait_for(client, batch.id, within=30)
        output = await lines_of(client, done.output_file_id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (12, 0)
    assert [line["custom_id"] for line in output] == [r["custom_id"] for r in rows]
    assert len(calls(provider, "POST", create_path)) == 1  # never submitted twice
    live = calls(provider, "POST", "/chat/completions") + calls(provider, "POST", "/v1/messages")
    assert live == []
    assert metric(second, "adopted") == 1 and len(batch_records(second)) == 12
    if when == "creating":  # it looked for the batch before creating it again
        assert any(r.method == "GET" and r.path == create_path for r in provider.requests)


async def test_a_batch_past_its_completion_window_ends_expired(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    slow = await fake("openai-compatible", faults="latency_ms=150")
    gpt = await fake("openai", faults="batch_ms=60000")  # its batch would not end in the window
    yaml_text = route(
        [("local", slow, ""), ("gpt", gpt, "")],
        model="    backends: [local]\n  - name: bulk-api\n    backends: [gpt]",
    )
    instance = await start(sidecar, yaml_text, redis_url, concurrency=1, window_seconds=2)
    live_rows = [chat_line(f"e-{i}", f"question {i}") for i in range(30)]
    api_rows = [chat_line(f"b-{i}", f"question {i}", model="bulk-api") for i in range(6)]
    async with client_for(instance) as client:
        uploaded = await client.files.create(file=("api.jsonl", jsonl(api_rows)), purpose="batch")
        created = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        await until(lambda: metric(instance, "submitted") == 6)  # in the provider's batch, which runs on
        live = await run_batch(client, live_rows, within=20)
        api = await wait_for(client, created.id, within=20)
        for batch, rows in ((live, live_rows), (api, api_rows)):
            assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
            assert batch.expired_at - batch.created_at <= 4
            counts = batch.request_counts
            assert counts is not None and counts.completed + counts.failed == len(rows)
            output = await lines_of(client, batch.output_file_id) if counts.completed else []
            errors = await lines_of(client, batch.error_file_id)
            assert len(output) == counts.completed and len(errors) == counts.failed
            assert {line["custom_id"] for line in output + errors} == {r["custom_id"] for r in rows}
            assert all(e["error"]["code"] == "batch_expired" and e["response"] is None for e in errors)
    assert 3 <= live.request_counts.completed < 30  # type: ignore[union-attr]
    assert api.request_counts.failed == 6  # type: ignore[union-attr]
    # The provider batch was cancelled when the window closed; nothing of it ran live.
    await until(lambda: len(calls(gpt, "POST", "/cancel")) == 1)
    assert calls(gpt, "POST", "/chat/completions") == []
    assert metric(instance, "expired") == live.request_counts.failed + 6  # type: ignore[union-attr]


async def test_a_hard_budget_holds_for_lines_sent_to_a_provider_batch(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    gpt = await fake("openai", faults="batch_ms=300")
    budget = (
        "---\napiVersion: llmroute.io/v1alpha1\nkind: LLMBudget\nmetadata: {name: cap, namespace: demo}\n"
        "spec:\n  scope: {routes: [bulk]}\n  period: {type: daily}\n  limits: {hard: '0.05', currency: USD}\n"
    )
    PRICES["dear"] = (Fraction(1000), Fraction(1000))  # 0.001 USD a token, 0.0005 at the discount
    instance = await start(sidecar, route([("dear", gpt, "")]) + budget, redis_url)
    rows = [chat_line(f"d-{i}", "hi") for i in range(20)]
    async with client_for(instance) as client:
        batch = await run_batch(client, rows)
        errors = await lines_of(client, batch.error_file_id)
    counts = batch.request_counts
    assert counts is not None and counts.completed > 0 and counts.failed > 0, counts
    assert {e["error"]["code"] for e in errors} == {"budget_exceeded"}
    assert calls(gpt, "POST", "/chat/completions") == []  # live, at the list price, fits even less
    records = batch_records(instance)
    assert len(records) == counts.completed
    spent = sum(r.cost_micro_usd for r in records)
    print(
        f"hard limit $0.05: {counts.completed} lines answered for ${spent / 1e6:.6f}, {counts.failed} refused"
    )
    assert spent <= 50_000  # the hard limit
    assert all(r.budgets == ("cap",) for r in records)

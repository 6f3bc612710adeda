"""Spend equals the pricing of the reported usage, to the cent, over 1,000 mixed requests across
providers, streams included.

One LLMRoute serves a logical model per provider (OpenAI, Azure OpenAI, Anthropic, Gemini, Bedrock,
Cohere, an OpenAI-compatible server), each backend priced differently, all behind fake providers that
speak the real wire protocols. The official ``openai.AsyncOpenAI`` SDK sends 1,000 requests (16 at a
time): plain, streamed with ``include_usage`` and streamed without, with varied prompt lengths and
``max_tokens``. For every request the expected cost is computed here, exactly, from the usage the
provider reported (as the SDK parsed it; from the usage record when a stream carried none) and that
backend's pricing; the sidecar's per-request cost (header, or the SSE comment before ``[DONE]``), its
usage records and its Prometheus counters must all agree with it.

The fakes report no cached tokens (every protocol's usage carries a zero cache-read count), so the
``cachedInputPerMillion`` prices configured here are never applied; the cached branch of the pricing is
covered by unit tests, not by this end-to-end test.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar
from llmroute_sidecar.usage import UsageRecord

from .conftest import FakeFactory, SidecarFactory
from .spend_support import (
    BACKENDS,
    ROUTE,
    Backend,
    TeeTransport,
    fake_tokens,
    metric_sum,
    scrape,
    spend_route_yaml,
    start_fake,
    teed_client,
)

pytestmark = pytest.mark.timeout(60)

N_REQUESTS = 1_000
CONCURRENCY = 16
MODES = ("plain", "stream_usage", "stream_bare")
MAX_TOKENS: tuple[int | None, ...] = (None, 1, 3, 7, 16, 256, 4096)
TENANTS = ("acme", "globex", "initech")
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
]
MICRO = Fraction(10**6)
CENT_HALF = Fraction(5, 1000)  # "to the cent": |measured - expected| < $0.005


@dataclass
class Exchange:
    """One request as sent, and what came back to the app."""

    request_id: str
    backend: Backend
    mode: str
    tenant: str
    system: str | None
    user: str
    max_tokens: int | None
    cost: str = ""  # the sidecar's cost, as it wrote it (header or SSE comment)
    usage: CompletionUsage | None = None  # as the SDK parsed it; None for a stream without usage
    text: str = ""
    finish: str | None = None

    @property
    def messages(self) -> list[ChatCompletionMessageParam]:
        out: list[ChatCompletionMessageParam] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": self.user})
        return out


def _prose(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    length = -1
    while length < chars:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars].rstrip() or "hi"


def _plan(rng: random.Random) -> list[Exchange]:
    plan = []
    for i in range(N_REQUESTS):
        backend = BACKENDS[i % len(BACKENDS)]
        # Mostly short prompts, some long (up to ~3,000 tokens): the cost spread is realistic.
        chars = int(rng.choice((rng.uniform(5, 200), rng.uniform(200, 2_000), rng.uniform(2_000, 12_000))))
        plan.append(
            Exchange(
                request_id=f"spend-{i:04d}",
                backend=backend,
                mode=MODES[(i // len(BACKENDS)) % len(MODES)],
                tenant=rng.choice(TENANTS),
                system=_prose(rng, rng.randint(5, 400)) if rng.random() < 0.5 else None,
                user=_prose(rng, chars),
                max_tokens=rng.choice(MAX_TOKENS),
            )
        )
    return plan


async def _send(client: openai.AsyncOpenAI, tee: TeeTransport, ex: Exchange) -> None:
    headers = {"x-request-id": ex.request_id, "x-llmroute-tenant": ex.tenant}
    max_tokens = ex.max_tokens if ex.max_tokens is not None else openai.omit
    if ex.mode == "plain":
        raw = await client.chat.completions.with_raw_response.create(
            model=ex.backend.logical, messages=ex.messages, max_tokens=max_tokens, extra_headers=headers
        )
        completion = raw.parse()
        assert raw.headers["x-llmroute-backend"] == ex.backend.name
        ex.cost = raw.headers["x-llmroute-cost-usd"]
        ex.usage = completion.usage
        ex.text = completion.choices[0].message.content or ""
        ex.finish = completion.choices[0].finish_reason
        assert ex.usage is not None, f"{ex.request_id}: a plain answer without usage"
        return

    include_usage = ex.mode == "stream_usage"
    stream = await client.chat.completions.create(
        model=ex.backend.logical,
        messages=ex.messages,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True} if include_usage else openai.omit,
        extra_headers=headers,
    )
    usages: list[CompletionUsage] = []
    pieces: list[str] = []
    last_had_choices = True
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            ex.finish = chunk.choices[0].finish_reason or ex.finish
        if chunk.usage is not None:
            usages.append(chunk.usage)
        last_had_choices = bool(chunk.choices)
    ex.text = "".join(pieces)
    if include_usage:
        assert len(usages) == 1 and not last_had_choices, (
            f"{ex.request_id}: include_usage gives exactly one usage chunk, the last, without choices"
        )
        ex.usage = usages[0]
    else:
        assert not usages, f"{ex.request_id}: usage the app did not ask for"
    captured = tee.captured[ex.request_id]
    assert captured.status == 200
    assert "x-llmroute-cost-usd" not in captured.headers, "a stream's cost is unknown at header time"
    comments = captured.cost_comments()
    assert len(comments) == 1, f"{ex.request_id}: cost comments {comments}"
    assert bytes(captured.body).endswith(
        f": x-llmroute-cost-usd={comments[0]}\n\ndata: [DONE]\n\n".encode()
    ), f"{ex.request_id}: the cost comment must come right before [DONE]"
    ex.cost = comments[0]


async def _start(fake: FakeFactory, sidecar: SidecarFactory) -> tuple[dict[Backend, FakeProvider], Sidecar]:
    fakes = {b: await start_fake(fake, b) for b in BACKENDS}
    return fakes, await sidecar(spend_route_yaml(fakes))


async def test_spend_equals_pricing_of_reported_usage_over_1000_mixed_requests(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    started = time.monotonic()
    fakes, instance = await _start(fake, sidecar)
    tee = TeeTransport()
    client = teed_client(instance, tee)
    plan = _plan(random.Random(20240611))
    records: dict[str, list[UsageRecord]] = defaultdict(list)
    gate = asyncio.Semaphore(CONCURRENCY)

    def collect() -> None:
        # Standalone keeps only the last 1,000 records: drain as we go, never near the bound.
        for record in instance.usage.drain(limit=10_000):
            records[record.request_id].append(record)

    async def one(ex: Exchange) -> None:
        async with gate:
            await _send(client, tee, ex)
            collect()

    await asyncio.gather(*(one(ex) for ex in plan))
    await client.close()
    collect()
    sending = time.monotonic() - started

    # -- every request: exactly one record, provider-reported tokens, the exact price ---------------
    assert instance.usage.dropped == 0
    assert set(records) == {ex.request_id for ex in plan}, "a record for every request and no other"
    duplicated = {rid: len(r) for rid, r in records.items() if len(r) != 1}
    assert not duplicated, f"requests with more than one usage record: {duplicated}"
    assert sum(len(fk.requests) for fk in fakes.values()) == N_REQUESTS, "one upstream call each"

    expected: dict[str, Fraction] = {}
    tokens: dict[tuple[str, str], int] = defaultdict(int)
    mismatches: list[str] = []
    for ex in plan:
        record = records[ex.request_id][0]
        assert (record.backend, record.model, record.provider) == (
            ex.backend.name,
            ex.backend.logical,
            ex.backend.protocol,
        )
        assert (record.outcome, record.http_status, record.tenant) == ("ok", 200, ex.tenant)
        assert not record.estimated, f"{ex.request_id} ({ex.backend.protocol} {ex.mode}): estimated"
        if ex.usage is not None:  # what the provider reported, as the SDK parsed it
            details = ex.usage.prompt_tokens_details
            reported = (
                ex.usage.prompt_tokens,
                ex.usage.completion_tokens,
                (details.cached_tokens or 0) if details is not None else 0,
            )
            assert ex.usage.total_tokens == reported[0] + reported[1]
            assert (record.input_tokens, record.output_tokens, record.cached_tokens) == reported, (
                f"{ex.request_id} ({ex.backend.protocol} {ex.mode}): the record differs from the usage "
                f"the app received"
            )
        else:  # a stream without include_usage: the usage record is the only report
            reported = (record.input_tokens, record.output_tokens, record.cached_tokens)
        prompt, completion, cached = reported
        # Independently of the sidecar, the fakes' documented token rule: ceil(characters / 4).
        assert prompt == fake_tokens(ex.system or "") + fake_tokens(ex.user), ex.request_id
        assert completion == fake_tokens(ex.text), (ex.request_id, ex.text)
        full = f"fake-{ex.backend.protocol} reply to: {ex.user[:40]}"
        if ex.max_tokens is not None and fake_tokens(full) > ex.max_tokens:
            assert (ex.text, ex.finish) == (full[: ex.max_tokens * 4], "length"), ex.request_id
        else:
            assert (ex.text, ex.finish) == (full, "stop"), ex.request_id
        cost = ex.backend.pricing.micro(prompt, completion, cached)
        expected[ex.request_id] = cost
        charged = Fraction(ex.cost) * MICRO  # the header/comment has 6 decimals: whole micro-USD
        if abs(charged - cost) > Fraction(1, 2) or record.cost_micro_usd != charged:
            mismatches.append(
                f"{ex.request_id} {ex.backend.name} {ex.mode}: expected {float(cost):.3f} micro-USD, "
                f"charged {ex.cost} USD, recorded {record.cost_micro_usd} micro-USD"
            )
        for kind, count in (("input", prompt), ("output", completion), ("cached_input", cached)):
            tokens[(ex.backend.name, kind)] += count
    assert not mismatches, f"{len(mismatches)} requests mispriced, e.g. {mismatches[:5]}"

    # -- the sums: headers, records and the metric, to the cent --------------------------------------
    samples = await scrape(instance)
    expected_usd = sum(expected.values(), Fraction(0)) / MICRO
    headers_usd = sum((Fraction(ex.cost) for ex in plan), Fraction(0))
    records_usd = Fraction(sum(records[ex.request_id][0].cost_micro_usd for ex in plan)) / MICRO
    metric_usd = metric_sum(samples, "llmroute_usage_cost_usd_total", route=ROUTE)
    figures = (
        f"expected ${float(expected_usd):.6f}, headers ${float(headers_usd):.6f}, "
        f"records ${float(records_usd):.6f}, metric ${metric_usd:.6f}"
    )
    print(f"\n{N_REQUESTS} requests in {sending:.1f}s: {figures}")
    assert expected_usd > 1, "the prices make a dropped request visible"
    assert abs(headers_usd - expected_usd) < CENT_HALF, figures
    assert abs(records_usd - expected_usd) < CENT_HALF, figures
    assert abs(Fraction(metric_usd) - expected_usd) < CENT_HALF, figures
    # Rounding each request to the micro-dollar never drifts more than half a micro-dollar each.
    assert abs(headers_usd - expected_usd) <= Fraction(N_REQUESTS, 2) / MICRO

    # Per backend and per tenant too: the labels carry the right shares, and the tokens are exact.
    for b in BACKENDS:
        share = sum((expected[ex.request_id] for ex in plan if ex.backend is b), Fraction(0)) / MICRO
        measured = metric_sum(samples, "llmroute_usage_cost_usd_total", route=ROUTE, backend=b.name)
        assert abs(Fraction(measured) - share) < CENT_HALF, (b.name, measured, float(share))
        assert metric_sum(
            samples, "llmroute_usage_cost_usd_total", route=ROUTE, backend=b.name, model=b.logical
        ) == pytest.approx(measured)
        for kind in ("input", "output", "cached_input"):
            counted = metric_sum(
                samples, "llmroute_usage_tokens_total", route=ROUTE, backend=b.name, kind=kind
            )
            assert counted == tokens[(b.name, kind)], (b.name, kind, counted, tokens[(b.name, kind)])
        assert metric_sum(samples, "llmroute_usage_estimated_records_total", backend=b.name) == 0
    for tenant in TENANTS:
        share = sum((expected[ex.request_id] for ex in plan if ex.tenant == tenant), Fraction(0)) / MICRO
        measured = metric_sum(samples, "llmroute_usage_cost_usd_total", route=ROUTE, tenant=tenant)
        assert abs(Fraction(measured) - share) < CENT_HALF, (tenant, measured, float(share))
    legacy = metric_sum(samples, "llmroute_cost_usd_total")
    assert abs(Fraction(legacy) - expected_usd) < CENT_HALF, ("llmroute_cost_usd_total", legacy)
    assert time.monotonic() - started < 55


# -- a stream that breaks mid-way -----------------------------------------------------------------

CUT_PROMPT = "please give me a rather long answer about " + " ".join(WORDS)


@dataclass
class Cut:
    instance: Sidecar
    provider: FakeProvider
    record: UsageRecord
    relayed: str  # the content the app received before the error
    error: openai.APIError
    body: bytes  # the raw SSE the sidecar sent


async def _cut_stream(fake: FakeFactory, sidecar: SidecarFactory, backend: Backend) -> Cut:
    """One stream whose upstream connection closes after 6 frames, as the SDK sees it, and its record."""
    provider = await start_fake(fake, backend)
    instance = await sidecar(spend_route_yaml({backend: provider}))
    provider.set_faults("cut_after=6")
    tee = TeeTransport()
    client = teed_client(instance, tee)
    received: list[str] = []

    async def consume() -> None:
        stream = await client.chat.completions.create(
            model=backend.logical,
            messages=[{"role": "user", "content": CUT_PROMPT}],
            stream=True,
            extra_headers={"x-request-id": "cut-1"},
        )
        async for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        await consume()
    await client.close()
    for _ in range(100):  # the record is written as the sidecar's handler unwinds
        if len(instance.usage):
            break
        await asyncio.sleep(0.01)
    records = instance.usage.drain()
    assert [r.request_id for r in records] == ["cut-1"], "exactly one usage record"
    assert instance.usage.dropped == 0
    return Cut(
        instance, provider, records[0], "".join(received), caught.value, bytes(tee.captured["cut-1"].body)
    )


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.protocol for b in BACKENDS])
async def test_a_stream_cut_mid_way_still_yields_one_usage_record(
    fake: FakeFactory, sidecar: SidecarFactory, backend: Backend
) -> None:
    cut = await _cut_stream(fake, sidecar, backend)
    full = f"fake-{backend.protocol} reply to: {CUT_PROMPT[:40]}"
    assert cut.relayed and full.startswith(cut.relayed) and cut.relayed != full, "part of it, then an error"
    assert "broke" in cut.error.message
    assert b"[DONE]" not in cut.body and b"x-llmroute-cost-usd" not in cut.body, "no clean end, no cost"
    assert b'data: {"error"' in cut.body
    assert len(cut.provider.requests) == 1, "no retry once bytes reached the app"

    record = cut.record
    assert (record.backend, record.outcome, record.http_status) == (backend.name, "stream_error", 502)
    assert record.input_tokens > 0
    # Gemini sends cumulative usage on every chunk; Anthropic only a provisional one in message_start
    # (output_tokens: 1), the others only at the end, which never came: for those the sidecar counted
    # what it relayed and says so.
    sent_usage_early = backend.protocol == "google"
    assert record.estimated is not sent_usage_early
    if record.estimated:
        assert record.output_tokens == fake_tokens(cut.relayed)
    cost = backend.pricing.micro(record.input_tokens, record.output_tokens, record.cached_tokens)
    assert record.cost_micro_usd > 0 and abs(record.cost_micro_usd - cost) <= Fraction(1, 2)
    # The same spend reaches the metrics: nothing is lost because the stream broke.
    samples = await scrape(cut.instance)
    assert metric_sum(samples, "llmroute_usage_cost_usd_total", backend=backend.name) == pytest.approx(
        record.cost_micro_usd / 1e6
    )
    assert metric_sum(samples, "llmroute_usage_estimated_records_total", backend=backend.name) == (
        1 if record.estimated else 0
    )


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.protocol for b in BACKENDS])
async def test_a_cut_stream_is_charged_at_least_the_output_it_relayed(
    fake: FakeFactory, sidecar: SidecarFactory, backend: Backend
) -> None:
    """Whatever the provider reported before the cut, the app received that much output (Anthropic's
    message_start carries a provisional output_tokens: 1 that a cut stream must not be charged by)."""
    cut = await _cut_stream(fake, sidecar, backend)
    relayed = fake_tokens(cut.relayed)
    assert relayed > 1
    assert cut.record.output_tokens >= relayed, (
        f"{backend.protocol}: {relayed} output tokens reached the app, the record charges "
        f"{cut.record.output_tokens} (estimated={cut.record.estimated})"
    )

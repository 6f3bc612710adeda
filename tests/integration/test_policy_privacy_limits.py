"""PII, rate limits and the audit log of a standalone sidecar, through the official OpenAI SDK.

``redact`` sends placeholders (``<EMAIL_1>``) and never the values (what the fake recorded is
checked byte for byte); ``restore`` puts the values back into the answer, also into a stream whose
chunk boundary cuts a placeholder in two; ``block`` refuses with a 400 naming the types, never the
values, and forwards nothing. ``requestsPerMinute`` refuses with OpenAI's 429 and ``x-ratelimit-*``
headers, and with Redis holds across sidecars. The audit log has one line per request, never text.

The fakes echo the first 40 characters of the last user message (``llmroute_fakes/replies.py``):
``fake-openai-compatible reply to: <text>``, which is how a placeholder gets into an answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.cache.replay import PIECE_CHARS
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.timeout(20)

EMAIL = "alice.smith@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"  # Luhn-valid
IBAN = "GB82 WEST 1234 5698 7654 32"
IP = "203.0.113.7"
VALUES = (EMAIL, PHONE, CARD, IBAN, IP)
# Every type in one prompt (the fake quotes the first 40 characters of it after redaction).
ALL_PII = f"mail {EMAIL}, call {PHONE}, card {CARD}, iban {IBAN}, ip {IP}"
ALL_PLACEHOLDERS = "mail <EMAIL_1>, call <PHONE_1>, card <CREDIT_CARD_1>, iban <IBAN_1>, ip <IP_1>"
PREFIX = "fake-openai-compatible reply to: "

REDACT = "  privacy:\n    pii: {action: redact}"
RESTORE = "  privacy:\n    pii: {action: redact, restore: true}"
BLOCK = "  privacy:\n    pii: {action: block}"


def policy_yaml(
    backends: Sequence[tuple[str, FakeProvider]], spec: str = "", *, name: str = "guarded"
) -> str:
    """An LLMRoute ``name`` in namespace ``demo``: model ``chat`` over openai-compatible fakes (priced,
    no retries), then ``spec`` lines."""
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        f"metadata: {{name: {name}, namespace: demo}}",
        "spec:",
        "  models:",
        "  - name: chat",
        f"    backends: [{', '.join(n for n, _ in backends)}]",
        "  backends:",
    ]
    for backend, provider in backends:
        lines += [
            f"  - name: {backend}",
            "    provider: openai-compatible",
            f"    model: model-{backend}",
            f"    endpoint: {provider.base_url}",
            "    pricing: {inputPerMillion: 2, outputPerMillion: 8}",
        ]
    lines.append(
        "  resilience:\n    timeout: {perAttempt: 2s, total: 5s}\n"
        "    retries: {attempts: 0, backoff: {base: 5ms, max: 10ms}}"
    )
    if spec:
        lines.append(spec.rstrip())
    return "\n".join(lines) + "\n"


def _messages(last: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"The operator is reachable at {EMAIL}."},
        {"role": "user", "content": f"My card is {CARD} and my IP {IP}."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": last},
    ]


async def _ask(
    instance: Sidecar,
    text: str = "hello",
    *,
    messages: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    async with client_for(instance) as client:
        return await client.chat.completions.with_raw_response.create(
            model="chat",
            messages=messages or [{"role": "user", "content": text}],  # type: ignore[arg-type]
            max_tokens=50,
            extra_headers=headers or {},
            **extra,
        )


async def _stream(instance: Sidecar, messages: Any) -> list[Any]:
    async with client_for(instance) as client:
        stream = await client.chat.completions.create(
            model="chat",
            messages=messages,
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
        return [chunk async for chunk in stream]


def _text(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def _assert_no_pii(raw: bytes) -> None:
    text = raw.decode()
    for value in VALUES:
        assert value not in text, f"{value!r} reached the provider"


# -- PII --------------------------------------------------------------------------------------------


async def test_redact_sends_placeholders_and_never_the_values(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(policy_yaml([("llm", llm)], REDACT))
    raw = await _ask(instance, messages=_messages(ALL_PII))
    sent = llm.requests[-1].body
    _assert_no_pii(sent)
    messages = json.loads(sent)["messages"]
    assert messages[-1]["content"] == ALL_PLACEHOLDERS
    assert messages[0]["content"] == "The operator is reachable at <EMAIL_1>."
    assert messages[1]["content"] == "My card is <CREDIT_CARD_1> and my IP <IP_1>."
    # Without restore, the app sees what the provider answered: placeholders.
    content = raw.parse().choices[0].message.content
    assert content == PREFIX + ALL_PLACEHOLDERS[:40]
    records = instance.usage.drain()
    assert records[-1].outcome == "ok"
    await _stream(instance, _messages(ALL_PII))
    _assert_no_pii(llm.requests[-1].body)
    assert json.loads(llm.requests[-1].body)["stream"] is True


async def test_restore_puts_the_values_back_into_the_answer(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(policy_yaml([("llm", llm)], RESTORE))
    last = f"Card {CARD} ip {IP}"  # "Card <CREDIT_CARD_1> ip <IP_1>": 30 characters
    raw = await _ask(instance, messages=_messages(last))
    _assert_no_pii(llm.requests[-1].body)
    assert json.loads(llm.requests[-1].body)["messages"][-1]["content"] == "Card <CREDIT_CARD_1> ip <IP_1>"
    assert raw.parse().choices[0].message.content == PREFIX + last

    # Streamed straight from the provider (one word per chunk).
    chunks = await _stream(instance, _messages(last))
    _assert_no_pii(llm.requests[-1].body)
    assert "".join(_text(chunks)) == PREFIX + last
    assert not any("<" in piece for piece in _text(chunks)), "no placeholder reaches the app"
    assert chunks[-1].usage is not None


async def test_restore_works_across_a_chunk_boundary_inside_a_placeholder(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    """The fake streams word by word, so it never cuts a placeholder; a cache hit is replayed in
    ``PIECE_CHARS``-character pieces, and this prompt puts ``<EMAIL_1>`` across the first cut."""
    llm = await fake("openai-compatible")
    instance = await sidecar(policy_yaml([("llm", llm)], RESTORE + "\n  cache:\n    exact: {ttl: 60s}"))
    redacted = "please write back to me: <EMAIL_1>"
    cut = PREFIX + redacted
    assert cut.index("<EMAIL_1>") < PIECE_CHARS < cut.index("<EMAIL_1>") + len("<EMAIL_1>"), "premise"
    messages = [{"role": "user", "content": f"please write back to me: {EMAIL}"}]
    plain = await _ask(instance, messages=messages)
    restored = PREFIX + f"please write back to me: {EMAIL}"
    assert plain.parse().choices[0].message.content == restored

    chunks = await _stream(instance, messages)
    assert len(llm.requests) == 1, "the stream is the cache's replay"
    texts = _text(chunks)
    assert "".join(texts) == restored
    assert not any("<" in piece or "_1>" in piece for piece in texts), texts
    assert any(EMAIL in piece for piece in texts), "the held-back prefix came out whole with the rest"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


async def test_block_refuses_naming_the_types_never_the_values(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(policy_yaml([("llm", llm)], BLOCK))
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(instance, messages=_messages(ALL_PII))
    error = caught.value
    assert error.status_code == 400 and error.code == "pii_detected"
    for kind in ("credit_card", "email", "iban", "ip", "phone"):
        assert kind in error.message
    body = error.response.text
    for value in VALUES:
        assert value not in body
    with pytest.raises(openai.BadRequestError):
        await _stream(instance, [{"role": "user", "content": f"write to {EMAIL}"}])
    assert llm.requests == [], "nothing was forwarded"
    assert [r.outcome for r in instance.usage.drain()] == ["blocked", "blocked"]
    # A prompt without personal data passes.
    assert (await _ask(instance, "no secrets here")).parse().choices[0].message.content


async def test_a_phone_number_followed_by_a_card_number_is_redacted(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(policy_yaml([("llm", llm)], REDACT))
    await _ask(instance, f"reach me on {PHONE} {CARD}")
    sent = json.loads(llm.requests[-1].body)["messages"][-1]["content"]
    assert sent == "reach me on <PHONE_1> <CREDIT_CARD_1>"


# -- rate limits ------------------------------------------------------------------------------------


async def test_requests_per_minute_per_user(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml([("llm", llm)], "  rateLimits:\n  - {key: user, requestsPerMinute: 3}")
    )
    for remaining in (2, 1, 0):
        raw = await _ask(instance, headers={"x-llmroute-user": "u1"})
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
    with pytest.raises(openai.RateLimitError) as caught:
        await _ask(instance, headers={"x-llmroute-user": "u1"})
    error = caught.value
    assert error.code == "rate_limit_exceeded"
    headers = error.response.headers
    # One request comes back every 20 s (3 a minute).
    assert 1 <= int(headers["retry-after"]) <= 20
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert len(llm.requests) == 3, "the refused request was not forwarded"
    # The OpenAI `user` field is the same key; another user has a bucket of its own.
    with pytest.raises(openai.RateLimitError):
        await _ask(instance, user="u1")
    raw = await _ask(instance, headers={"x-llmroute-user": "u2"})
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert len(llm.requests) == 4


async def test_three_sidecars_on_one_redis_admit_exactly_the_route_limit(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    llm = await fake("openai-compatible")
    resources = policy_yaml([("llm", llm)], "  rateLimits:\n  - {key: route, requestsPerMinute: 10}")
    sidecars = [await sidecar(resources, redis_url=redis_url) for _ in range(3)]
    clients = [client_for(s) for s in sidecars]
    try:
        calls = [
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"burst {i}"}], max_tokens=20
            )
            for i in range(10)
            for client in clients
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(admitted), len(refused)) == (10, 20), [type(r).__name__ for r in results]
    assert len(llm.requests) == 10
    assert all(s.policies.rates.redis_up for s in sidecars)


# -- audit log --------------------------------------------------------------------------------------


async def test_the_audit_log_has_one_line_per_request_and_no_text(
    fake: FakeFactory, sidecar: SidecarFactory, tmp_path: Path
) -> None:
    llm = await fake("openai-compatible")
    path = tmp_path / "audit.jsonl"
    instance = await sidecar(
        policy_yaml([("llm", llm)], RESTORE + "\n  rateLimits:\n  - {key: user, requestsPerMinute: 3}"),
        audit_log=str(path),
    )
    tenant = {"x-llmroute-tenant": "acme", "x-llmroute-user": "u1"}
    await _ask(instance, f"mail {EMAIL} about the invoice", headers=tenant)
    await _ask(instance, "what is the weather", headers=tenant)
    async with client_for(instance) as client:
        stream = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": f"stream to {EMAIL}"}],
            stream=True,
            extra_headers=tenant,
        )
        assert [c async for c in stream]
    with pytest.raises(openai.RateLimitError):
        await _ask(instance, "one too many", headers=tenant)
    # Lines are buffered and flushed within the log's flush interval (0.1 s): all four are out by then.
    deadline = time.monotonic() + 2.0
    while len(path.read_text().splitlines()) < 4 and time.monotonic() < deadline:  # noqa: ASYNC110 - a file
        await asyncio.sleep(0.02)
    text = path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert line["route"] == "guarded"
        assert line["tenant"] == "acme" and line["user"] == "u1"
        assert "cost_usd" in line and "outcome" in line and "backend" in line
        assert "prompt" not in line and "completion" not in line
    assert [line["outcome"] for line in lines] == ["ok", "ok", "ok", "rate_limited"]
    assert [line["backend"] for line in lines] == ["llm", "llm", "llm", ""]
    assert [line["stream"] for line in lines] == [False, False, True, False]
    assert lines[0]["cost_usd"] > 0 and lines[3]["cost_usd"] == 0
    assert lines[0]["pii_redacted"] == {"email": 1}
    assert EMAIL not in text
    for words in ("invoice", "weather", "one too many", "reply to"):
        assert words not in text, f"audit text leaked {words!r}"

"""Conversation memory (``spec.memory``) through the official OpenAI SDK: a real sidecar, its
history in a real Redis (Debian's redis-server), fake providers on real sockets.

The app sends only each new turn with ``x-llmroute-conversation``; the sidecar adds the history.
A 50-turn conversation outgrows a small-window model (it moves to the large one) and then the
large one (the sliding window leaves the oldest turns out, and says so in ``x-llmroute-memory``);
with ``overflow: summarize`` the oldest turns are replaced by a summary from the summarizer model.
History is the tenant's own, erasable, and never silently missing: without Redis a request naming a
conversation is refused.
"""

from __future__ import annotations

import math
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio

from llmroute_fakes.server import FakeProvider

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.asyncio

TURNS = 50


def memory_route(
    small: FakeProvider, big: FakeProvider, *, memory: str, mini: FakeProvider | None = None
) -> str:
    """Model ``chat``: ``small`` (600-token window) first, then ``big`` (2,000); ``mini`` serves the
    summarizer model when given."""
    backends = [("small", small, 600), ("big", big, 2000)] + ([("mini", mini, 8000)] if mini else [])
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        "metadata: {name: talk, namespace: demo}",
        "spec:",
        "  models:",
        "  - name: chat",
        "    backends: [small, big]",
    ]
    if mini is not None:
        lines += ["  - name: mini", "    backends: [mini]"]
    lines.append("  backends:")
    for name, fake, window in backends:
        lines += [
            f"  - name: {name}",
            "    provider: openai-compatible",
            f"    model: model-{name}",
            f"    endpoint: {fake.base_url}",
            f"    contextWindow: {window}",
            "    pricing: {inputPerMillion: 2, outputPerMillion: 8}",
        ]
    lines += ["  memory:", *(f"    {line}" for line in memory.strip().splitlines())]
    return "\n".join(lines) + "\n"


def fake_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)  # the fakes' count (llmroute_fakes/replies.py)


def question(turn: int) -> str:
    return f"Turn {turn}: please remember that the code word number {turn} is tangerine-{turn * 7}."


async def ask(client: openai.AsyncOpenAI, turn: int, conversation: str, **headers: str) -> Any:
    return await client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question(turn)}],
        max_tokens=40,
        extra_headers={"x-llmroute-conversation": conversation, **headers},
    )


def memory_header(raw: Any) -> dict[str, int]:
    return {
        k: int(v)
        for k, v in (part.strip().split("=") for part in raw.headers["x-llmroute-memory"].split(";"))
    }


async def test_fifty_turns_through_two_context_windows_keep_their_history(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    small, big = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(memory_route(small, big, memory="ttl: 1h"), redis_url=redis_url)
    sent_by_app = full_history = 0
    history_texts: list[str] = []
    headers: list[dict[str, int]] = []
    async with client_for(instance) as client:
        for turn in range(TURNS):
            raw = await ask(client, turn, "trip-42", **{"x-llmroute-tenant": "acme"})
            answer = raw.parse().choices[0].message.content
            headers.append(memory_header(raw))
            sent_by_app += fake_tokens("Be brief.") + fake_tokens(question(turn))
            full_history += (
                fake_tokens("Be brief.") + sum(map(fake_tokens, history_texts)) + fake_tokens(question(turn))
            )
            history_texts += [question(turn), answer]
        stored = await client.get(
            "/conversations/trip-42", cast_to=httpx_json(), options={"headers": {"x-llmroute-tenant": "acme"}}
        )
    # Every turn carried everything stored before it (two messages a turn).
    assert [h["history"] for h in headers] == [2 * t for t in range(TURNS)]
    # The small model served the first turns, the large one took over when the history outgrew 600
    # tokens, and later the sliding window left the oldest turns out, saying how many.
    assert 3 <= len(small.requests) < len(big.requests) and len(small.requests) + len(big.requests) == TURNS
    assert headers[len(small.requests) - 1]["left-out"] == 0
    first_cut = next(i for i, h in enumerate(headers) if h["left-out"] > 0)
    assert len(small.requests) < first_cut < TURNS - 1
    assert all(h["left-out"] > 0 for h in headers[first_cut:])
    # What reached the provider: the system prompt, the newest history that fits, the new turn.
    for turn, recorded in enumerate([*small.requests, *big.requests]):
        messages = recorded.json()["messages"]
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert messages[-1] == {"role": "user", "content": question(turn)}
        assert len(messages) == 2 + headers[turn]["history"] - headers[turn]["left-out"]
        if turn:
            assert messages[-3]["content"] == question(turn - 1)  # the previous turn is always there
        prompt = recorded.json()
        assert sum(fake_tokens(m["content"]) for m in prompt["messages"]) <= 2000
    sent_to_providers = sum(
        sum(fake_tokens(m["content"]) for m in r.json()["messages"]) for r in [*small.requests, *big.requests]
    )
    print(
        f"\n{TURNS} turns: the app sent {sent_by_app} tokens with memory against {full_history} for a client "
        f"resending the full history ({full_history / sent_by_app:.1f}x); providers got {sent_to_providers} "
        f"(window-bounded; {headers[-1]['left-out']} oldest messages left out at the last turn)"
    )
    assert len(stored["messages"]) == 2 * TURNS  # the store keeps it all; only the sending is cut
    assert instance.metrics.registry.get_sample_value(
        "llmroute_memory_events_total", {"route": "talk", "event": "left_out"}
    ) == sum(h["left-out"] for h in headers)


def httpx_json() -> type:
    return dict  # the SDK's low-level get() parses the JSON body into this


async def test_summarize_replaces_the_oldest_turns_by_a_stored_summary(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    small, big, mini = (
        (await fake("openai-compatible") for _ in range(3))
        if False
        else (
            await fake("openai-compatible"),
            await fake("openai-compatible"),
            await fake("openai-compatible"),
        )
    )
    route = memory_route(small, big, mini=mini, memory="ttl: 1h\noverflow: summarize\nsummarizer: mini")
    instance = await sidecar(route, redis_url=redis_url)
    headers = []
    async with client_for(instance) as client:
        for turn in range(TURNS):
            headers.append(memory_header(await ask(client, turn, "long-talk")))
        stored = await client.get("/conversations/long-talk", cast_to=httpx_json())
    summaries = [r for r in mini.requests if "Summarise this conversation" in r.body.decode()]
    assert summaries, "the summarizer model was never asked"
    assert sum(h["summarized"] for h in headers) > 0
    assert stored["messages"][0]["role"] == "system"
    assert stored["messages"][0]["content"].startswith("Summary of the earlier conversation: fake-")
    assert len(stored["messages"]) < 2 * TURNS  # the summary took the place of the oldest turns
    assert stored["messages"][-2:][0]["content"] == question(TURNS - 1)
    # The summarized request carried the summary to the provider, before the kept turns.
    after = next(i for i, h in enumerate(headers) if h["summarized"])
    request = [*small.requests, *big.requests][after].json()
    assert request["messages"][1]["content"].startswith("Summary of the earlier conversation: ")


async def test_history_is_the_tenants_own_and_erasable(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    small, big = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(memory_route(small, big, memory="ttl: 1h"), redis_url=redis_url)
    async with client_for(instance) as client:
        for turn in range(3):
            await ask(client, turn, "shared-id", **{"x-llmroute-tenant": "acme"})
        other = memory_header(await ask(client, 9, "shared-id", **{"x-llmroute-tenant": "globex"}))
        assert other["history"] == 0  # the same id in another tenant is another conversation
        with pytest.raises(openai.NotFoundError):
            await client.get(
                "/conversations/nobody",
                cast_to=httpx_json(),
                options={"headers": {"x-llmroute-tenant": "acme"}},
            )
        erased = await client.delete(
            "/conversations/shared-id",
            cast_to=httpx_json(),
            options={"headers": {"x-llmroute-tenant": "acme"}},
        )
        assert erased == {"id": "shared-id", "object": "conversation.deleted", "deleted": True}
        assert (
            memory_header(await ask(client, 4, "shared-id", **{"x-llmroute-tenant": "acme"}))["history"] == 0
        )
        globex = await client.get(
            "/conversations/shared-id",
            cast_to=httpx_json(),
            options={"headers": {"x-llmroute-tenant": "globex"}},
        )
        assert len(globex["messages"]) == 2  # erasing acme's left globex's alone


async def test_a_streamed_turn_is_stored_like_any_other(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    small, big = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(memory_route(small, big, memory="ttl: 1h"), redis_url=redis_url)
    async with client_for(instance) as client:
        await ask(client, 0, "streamy")
        stream = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": question(1)}],
            max_tokens=40,
            stream=True,
            extra_headers={"x-llmroute-conversation": "streamy"},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        stored = await client.get("/conversations/streamy", cast_to=httpx_json())
    assert [m["content"] for m in stored["messages"]][2:] == [question(1), text]
    assert [m["content"] for m in small.requests[-1].json()["messages"]] == [
        question(0),
        stored["messages"][1]["content"],
        question(1),
    ]


async def test_without_redis_a_conversation_is_refused_and_other_requests_work(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    small, big = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(memory_route(small, big, memory="ttl: 1h"))
    async with client_for(instance) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await ask(client, 0, "c-1")
        assert refused.value.code == "memory_unavailable" and "--redis-url" in refused.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            await ask(client, 0, "has spaces")
        assert bad.value.code in ("invalid_header", "memory_unavailable")
        answer = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
    (sent,) = [*small.requests, *big.requests]  # neither refused request reached a provider
    assert orjson.loads(sent.body)["messages"] == [{"role": "user", "content": "hi"}]


async def test_on_a_route_that_redacts_pii_the_stored_history_holds_placeholders(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    """PII never leaves the pod, and the shared Redis is outside it: the turn is kept as the provider
    saw it, while the app still gets its own text back."""
    small, big = await fake("openai-compatible"), await fake("openai-compatible")
    route = (
        memory_route(small, big, memory="ttl: 1h") + "  privacy:\n    pii: {action: redact, restore: true}\n"
    )
    instance = await sidecar(route, redis_url=redis_url)
    secret = "ann.lee@example.org"
    async with client_for(instance) as client:
        first = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": f"Remember my address {secret}, please."}],
            max_tokens=40,
            extra_headers={"x-llmroute-conversation": "private"},
        )
        await ask(client, 1, "private")
        stored = await client.get("/conversations/private", cast_to=httpx_json())
    assert first.choices[0].message.content  # answered
    texts = [str(m["content"]) for m in stored["messages"]]
    assert len(texts) == 4 and "<EMAIL_1>" in texts[0] and not any(secret in t for t in texts)
    # Nothing in Redis holds it either, in any key the sidecar wrote.
    store = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in store.scan_iter("llmroute:*")]
        assert keys  # the conversation is there
        for key in keys:
            assert secret.encode() not in await _contents(store, key), key
    finally:
        await store.aclose()
    # The provider saw the placeholder in the history it was sent, never the address.
    assert not any(secret in r.body.decode() for r in [*small.requests, *big.requests])


async def _contents(store: redis.asyncio.Redis, key: bytes) -> bytes:
    """Everything a key holds, whatever its type, as bytes to search."""
    kind = (await store.type(key)).decode()
    if kind == "string":
        value: Any = await store.get(key)
    elif kind == "list":
        value = await store.lrange(key, 0, -1)
    elif kind == "hash":
        value = await store.hgetall(key)
    elif kind == "zset":
        value = await store.zrange(key, 0, -1)
    elif kind == "stream":
        value = await store.xrange(key)
    else:
        value = kind
    return repr(value).encode()

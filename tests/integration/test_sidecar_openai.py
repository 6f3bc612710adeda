"""The sidecar end to end with the official OpenAI SDK as the app and fake OpenAI-protocol providers:
plain and streamed answers, tools, usage, fallback before the first byte, explicit errors after it,
hot config swaps, and the admin endpoints."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.timeout(60)


async def _two_backends(fake: FakeFactory, sidecar: SidecarFactory, **settings: object):  # type: ignore[no-untyped-def]
    primary = await fake("openai", api_key="sk-primary")
    secondary = await fake("openai-compatible")
    resources = route_yaml(
        [
            {
                "name": "primary",
                "provider": "openai",
                "model": "gpt-4o",
                "endpoint": primary.base_url,
                "key": "sk-primary",
            },
            {
                "name": "secondary",
                "provider": "openai-compatible",
                "model": "llama-3",
                "endpoint": secondary.base_url,
                "region": "eu-west-1",
            },
        ],
        extra_spec="  resilience:\n    timeout: {perAttempt: 2s, total: 10s}\n    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}}",
    )
    instance = await sidecar(resources, **settings)
    return primary, secondary, instance


async def test_chat_non_streaming_with_headers_and_usage(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    primary, _, instance = await _two_backends(fake, sidecar)
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        temperature=0.2,
        max_tokens=50,
        seed=7,
        stop=["\n\n"],
        user="u-1",
    )
    completion = raw.parse()
    assert "hello there" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-llmroute-backend"] == "primary"
    assert raw.headers["x-llmroute-region"] == "us-east-1"
    assert raw.headers["x-llmroute-attempts"] == "1"
    expected = (completion.usage.prompt_tokens * 2.0 + completion.usage.completion_tokens * 8.0) / 1e6
    assert float(raw.headers["x-llmroute-cost-usd"]) == pytest.approx(expected, abs=1e-6)
    sent = json.loads(primary.requests[-1].body)
    assert sent["model"] == "gpt-4o"
    assert sent["temperature"] == 0.2 and sent["seed"] == 7 and sent["stop"] == ["\n\n"]
    assert primary.requests[-1].headers["authorization"] == "Bearer sk-primary"


async def test_streaming_with_include_usage(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    _, _, instance = await _two_backends(fake, sidecar)
    stream = await client_for(instance).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "stream me" in "".join(text)
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_streaming_without_include_usage_still_accounts(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    primary, _, instance = await _two_backends(fake, sidecar)
    stream = await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks), "the app did not ask for usage"
    sent = json.loads(primary.requests[-1].body)
    assert sent["stream_options"] == {"include_usage": True}, "the sidecar asks upstream anyway"
    record = instance.usage.drain()[-1]
    assert record.output_tokens > 0 and record.backend == "primary"


async def test_tools_round_trip(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    primary, _, instance = await _two_backends(fake, sidecar)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    primary.queue_faults("tool_call=get_weather")
    completion = await client_for(instance).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,
        tool_choice="auto",  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    primary.queue_faults("tool_call=get_weather")
    stream = await client_for(instance).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        stream=True,  # type: ignore[arg-type]
    )
    names = [
        tc.function.name
        async for c in stream
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function and tc.function.name
    ]
    assert names == ["get_weather"]


@pytest.mark.parametrize("fault", ["status=500", "status=503", "status=429,retry_after=0", "reset"])
async def test_fallback_before_first_byte(fake: FakeFactory, sidecar: SidecarFactory, fault: str) -> None:
    primary, secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults(fault)
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert raw.headers["x-llmroute-attempts"] == "3", "two tries on the primary (1 retry), then the secondary"
    assert len(primary.requests) == 2 and len(secondary.requests) == 1
    stream = await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert [c async for c in stream], "the stream fails over too"
    assert len(secondary.requests) == 2


async def test_fallback_on_timeout_cancels_the_slow_attempt(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    primary, _secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults("hang")
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert instance.metrics.attempts.labels("primary", "openai", "timeout")._value.get() == 2


async def test_auth_error_is_not_retried_on_the_same_backend(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    primary, _secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults("status=401")
    raw = await client_for(instance).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmroute-backend"] == "secondary"
    assert len(primary.requests) == 1


async def test_provider_400_stops_with_a_400(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    primary, secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults("status=400")
    with pytest.raises(openai.BadRequestError) as caught:
        await client_for(instance).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert "provider refused" in caught.value.message
    assert len(secondary.requests) == 0


async def test_all_backends_down_is_a_503_with_reasons(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    primary, secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults("status=503")
    secondary.set_faults("reset")
    with pytest.raises(openai.InternalServerError) as caught:
        await client_for(instance).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 503
    assert "primary: overloaded" in caught.value.message and "secondary: connection" in caught.value.message


async def test_all_rate_limited_is_a_429_with_retry_after(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    primary, secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults("status=429,retry_after=0")
    secondary.set_faults("status=429,retry_after=0")
    with pytest.raises(openai.RateLimitError) as caught:
        await client_for(instance).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.response.headers.get("retry-after") == "1"


@pytest.mark.parametrize("fault", ["cut_after=2", "truncate_after=2", "error_event=2"])
async def test_mid_stream_fault_ends_with_an_error_never_a_clean_end(
    fake: FakeFactory, sidecar: SidecarFactory, fault: str
) -> None:
    primary, secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults(fault)
    stream = await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "a long answer please"}], stream=True
    )
    received: list[object] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as caught:
        await consume()
    assert received, "some chunks arrived before the fault"
    assert "broke" in caught.value.message
    assert len(secondary.requests) == 0, "no failover after bytes reached the app"
    assert (
        sum(c.value for c in instance.metrics.stream_errors.collect()[0].samples if c.name.endswith("_total"))
        == 1
    )


async def test_app_disconnect_cancels_the_upstream_stream(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    primary, _, instance = await _two_backends(fake, sidecar)
    primary.set_faults("slow_stream_ms=200")
    url = f"http://127.0.0.1:{instance.http_port}/v1/chat/completions"
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "one two three four five six seven"}],
        "stream": True,
    }
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        await response.content.readline()
    # The app is gone; the sidecar must close its upstream connection rather than read to the end.
    for _ in range(50):
        if (
            instance.metrics.requests.labels("chat", "primary", "openai", "client_disconnected")._value.get()
            == 1
        ):
            break
        await asyncio.sleep(0.05)
    assert (
        instance.metrics.requests.labels("chat", "primary", "openai", "client_disconnected")._value.get() == 1
    )


async def test_models_lists_logical_models(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    _, _, instance = await _two_backends(fake, sidecar)
    listed = await client_for(instance).models.list()
    assert [m.id for m in listed.data] == ["chat"]
    with pytest.raises(openai.NotFoundError) as caught:
        await client_for(instance).chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "x"}]
        )
    assert "Known models: chat" in caught.value.message


async def test_embeddings(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    provider = await fake("openai")
    resources = route_yaml(
        [
            {
                "name": "emb",
                "provider": "openai",
                "model": "text-embedding-3-small",
                "endpoint": provider.base_url,
            }
        ],
        model="embed",
    )
    resources = resources.replace(
        "    pricing:", "    capabilities: {chat: false, embeddings: true}\n    pricing:", 1
    )
    instance = await sidecar(resources)
    result = await client_for(instance).embeddings.create(model="embed", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    with pytest.raises(openai.BadRequestError, match="supports chat"):
        await client_for(instance).chat.completions.create(
            model="embed", messages=[{"role": "user", "content": "x"}]
        )


async def test_hot_swap_keeps_in_flight_requests_and_rejects_bad_configs(
    fake: FakeFactory, sidecar: SidecarFactory, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    primary, _secondary, instance = await _two_backends(fake, sidecar)
    primary.set_faults("latency_ms=500")
    client = client_for(instance)
    in_flight = asyncio.create_task(
        client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "slow"}]
        )
    )
    await asyncio.sleep(0.1)
    old_version = instance.store.version
    # Swap to a config where "chat" only has the secondary backend.
    assert instance.source is not None
    text = instance.source.path.read_text().replace("backends: [primary, secondary]", "backends: [secondary]")
    instance.source.path.write_text(text)
    instance.source.load()
    assert instance.store.version != old_version
    finished = await in_flight
    assert finished.headers["x-llmroute-backend"] == "primary", "the in-flight request kept its config"
    after = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "x"}]
    )
    assert after.headers["x-llmroute-backend"] == "secondary"
    good = instance.store.version
    instance.source.path.write_text(text.replace("backends: [secondary]", "backends: [ghost]"))
    instance.source.load()
    assert instance.store.version == good, "a bad config is rejected; the last good one keeps serving"
    assert "ghost" in (instance.store.last_error or "")
    still = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "x"}]
    )
    assert still.headers["x-llmroute-backend"] == "secondary"


async def test_admin_endpoints_and_redaction(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    _, _, instance = await _two_backends(fake, sidecar)
    await client_for(instance).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    base = f"http://127.0.0.1:{instance.admin_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/healthz") as r:
            assert r.status == 200
        async with session.get(base + "/readyz") as r:
            assert r.status == 200 and instance.store.version in await r.text()
        async with session.get(base + "/config_dump") as r:
            dump = await r.text()
        async with session.get(base + "/metrics") as r:
            metrics = await r.text()
    assert "sk-primary" not in dump and "<redacted>" in dump
    assert json.loads(dump)["version"] == instance.store.version
    assert (
        'llmroute_requests_total{backend="primary",model="chat",outcome="ok",provider="openai"} 1.0'
        in metrics
    )
    assert "llmroute_request_duration_seconds_bucket" in metrics
    assert "llmroute_tokens_total" in metrics


async def test_not_ready_without_config(sidecar: SidecarFactory) -> None:
    instance = await sidecar(
        "apiVersion: llmroute.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: x}\nspec: {models: []}\n"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{instance.admin_port}/readyz") as r,
    ):
        assert r.status == 503
        assert "spec.models" in await r.text()
    with pytest.raises(openai.InternalServerError) as caught:
        await client_for(instance).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 503


async def test_azure_openai_backend(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    """Deployments in the path, api-version in the query, the api-key header: the Azure wire shape."""
    azure = await fake("azure-openai", api_key="azure-key")
    resources = route_yaml(
        [
            {
                "name": "azure",
                "provider": "azure-openai",
                "model": "gpt-4o",
                "endpoint": azure.url,
                "key": "azure-key",
                "deployment": "gpt4o-prod",
            }
        ]
    )
    instance = await sidecar(resources)
    client = client_for(instance)
    completion = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi azure"}]
    )
    assert "hi azure" in (completion.choices[0].message.content or "")
    stream = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "stream azure"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "stream azure" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    request = azure.requests[0]
    assert request.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert request.query["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "azure-key"
    assert "authorization" not in {k.lower() for k in request.headers}


async def test_every_answer_carries_the_request_id_the_usage_record_names(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    _, _, instance = await _two_backends(fake, sidecar)
    client = client_for(instance)
    instance.usage.drain()
    chosen = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": "req-abc-1"},
    )
    assert chosen._request_id == "req-abc-1"
    made = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert made._request_id and len(made._request_id) == 32 and made._request_id != "req-abc-1"
    assert [r.request_id for r in instance.usage.drain()] == ["req-abc-1", made._request_id]
    # Errors and streams carry one too, and an unusable one sent by the app is replaced.
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.request_id
    stream = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-request-id": "x" * 500},
    )  # fmt: skip
    assert len(stream.headers["x-request-id"]) == 32
    async for _ in stream.parse():
        pass

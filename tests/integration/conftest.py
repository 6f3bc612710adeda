"""Integration fixtures: real fake-provider servers and a real sidecar on ephemeral loopback ports.

``fake(protocol)`` starts a :class:`FakeProvider`; ``sidecar(yaml_text)`` writes the resources to a
temp file and starts an in-process :class:`Sidecar` in standalone mode on it; ``openai_client`` points
the official OpenAI SDK at that sidecar. Everything stops at the end of the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Settings, Sidecar

FakeFactory = Callable[..., Awaitable[FakeProvider]]
SidecarFactory = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeFactory]:
    started: list[FakeProvider] = []

    async def start(protocol: str, **kwargs: object) -> FakeProvider:
        provider = FakeProvider(protocol, **kwargs)  # type: ignore[arg-type]
        await provider.start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        await provider.stop()


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[SidecarFactory]:
    started: list[Sidecar] = []

    async def start(resources: str, **settings: object) -> Sidecar:
        path = tmp_path / f"config-{len(started)}.yaml"
        path.write_text(resources)
        values: dict[str, object] = {
            "config_path": path,
            "http_addr": "127.0.0.1:0",
            "admin_addr": "127.0.0.1:0",
            "grpc_addr": "127.0.0.1:0",
            "watch_seconds": 0,
        }
        values.update(settings)
        instance = Sidecar(Settings(**values))  # type: ignore[arg-type]
        await instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        await instance.stop(grace=0.5)


def client_for(instance: Sidecar) -> openai.AsyncOpenAI:
    """The official OpenAI SDK, as an app would configure it, pointed at the sidecar."""
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{instance.http_port}/v1", api_key="unused", max_retries=0
    )


def route_yaml(
    backends: list[dict[str, str]], *, model: str = "chat", extra_spec: str = "", namespace: str = "demo"
) -> str:
    """An LLMRoute serving ``model`` from ``backends`` in order, plus a Secret with every key used.

    Each backend dict holds name, provider, model, endpoint and optionally region and key.
    """
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        f"metadata: {{name: test-route, namespace: {namespace}}}",
        "spec:",
        "  models:",
        f"  - name: {model}",
        f"    backends: [{', '.join(b['name'] for b in backends)}]",
        "  backends:",
    ]
    secret: dict[str, str] = {}
    for b in backends:
        lines += [
            f"  - name: {b['name']}",
            f"    provider: {b['provider']}",
            f'    model: "{b["model"]}"',
            f"    endpoint: {b['endpoint']}",
            f"    region: {b.get('region', 'us-east-1')}",
            "    pricing: {inputPerMillion: 2.0, outputPerMillion: 8.0}",
        ]
        if b["provider"] == "bedrock":
            lines.append("    credentialsRef: {name: keys}")
            secret["awsAccessKeyId"] = b.get("access_key", "AKIDEXAMPLE")
            secret["awsSecretAccessKey"] = b.get("secret_key", "secret")
        elif b["provider"] != "openai-compatible" or "key" in b:
            key_name = f"{b['name']}-key"
            lines.append(f"    credentialsRef: {{name: keys, key: {key_name}}}")
            secret[key_name] = b.get("key", "sk-test")
        if b["provider"] == "azure-openai":
            lines.append(f"    azure: {{deployment: {b.get('deployment', 'dep')}}}")
    if extra_spec:
        lines.append(extra_spec.rstrip())
    lines += [
        "---",
        "apiVersion: v1",
        "kind: Secret",
        f"metadata: {{name: keys, namespace: {namespace}}}",
        "stringData:",
    ]
    lines += [f"  {k}: {v}" for k, v in secret.items()] or ["  unused: x"]
    return "\n".join(lines) + "\n"

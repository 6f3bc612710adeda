"""Helpers for the spend-accounting tests: one LLMRoute with a logical model per provider (each with
its own pricing), exact pricing arithmetic, a tee on the SDK's HTTP transport (to read the raw SSE the
SDK parses, including the ``: x-llmroute-cost-usd=`` comment it ignores), and a Prometheus reader."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import httpx
import httpx2
import openai
from prometheus_client.parser import text_string_to_metric_families

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory

ROUTE = "spend"
NAMESPACE = "demo"
AWS_KEY_ID, AWS_SECRET = "AKIDEXAMPLE", "bedrock-secret"
COST_COMMENT = re.compile(rb"^: x-llmroute-cost-usd=([0-9.]+)$", re.MULTILINE)


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens, written in the YAML exactly as these decimal strings."""

    input: str
    output: str
    cached: str | None = None

    def yaml(self) -> str:
        cached = f", cachedInputPerMillion: {self.cached}" if self.cached is not None else ""
        return f"{{inputPerMillion: {self.input}, outputPerMillion: {self.output}{cached}}}"

    def micro(self, prompt: int, completion: int, cached: int = 0) -> Fraction:
        """The exact cost in micro-USD (tokens x USD-per-million is micro-USD), no rounding."""
        cached_price = Fraction(self.cached if self.cached is not None else self.input)
        return (
            (prompt - cached) * Fraction(self.input)
            + cached * cached_price
            + completion * Fraction(self.output)
        )


@dataclass(frozen=True)
class Backend:
    """One provider behind the route: the fake's protocol, the backend's name, model and pricing."""

    protocol: str
    name: str
    model: str
    pricing: Pricing

    @property
    def logical(self) -> str:
        return f"m-{self.name}"


# Every backend priced differently, with fractions of a micro-dollar per token on the cheap ones.
BACKENDS: tuple[Backend, ...] = (
    Backend("openai", "oai", "gpt-4o", Pricing("2.5", "10.0", cached="1.25")),
    Backend("azure-openai", "azure", "gpt-4o", Pricing("2.75", "11.0")),
    Backend("anthropic", "claude", "claude-sonnet-4-6", Pricing("3.0", "15.0", cached="0.3")),
    Backend("google", "gemini", "gemini-2.5-flash", Pricing("0.3", "2.5", cached="0.075")),
    Backend("bedrock", "bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0", Pricing("0.8", "4.0")),
    Backend("cohere", "cohere", "command-a-03-2025", Pricing("1.7", "6.9")),
    Backend("openai-compatible", "vllm", "llama-3.1-8b", Pricing("0.15", "0.6", cached="0.075")),
)


async def start_fake(fake: FakeFactory, backend: Backend) -> FakeProvider:
    """Start the fake for ``backend``, checking the credentials its backend entry presents."""
    if backend.protocol == "bedrock":
        return await fake("bedrock", aws_credentials={AWS_KEY_ID: AWS_SECRET})
    if backend.protocol == "openai-compatible":
        return await fake("openai-compatible")
    return await fake(backend.protocol, api_key=f"key-{backend.name}")


def spend_route_yaml(backends: Mapping[Backend, FakeProvider], *, retries: int = 0) -> str:
    """One LLMRoute, a logical model ``m-<name>`` per backend, plus the Secret with every credential."""
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        f"metadata: {{name: {ROUTE}, namespace: {NAMESPACE}}}",
        "spec:",
        "  models:",
    ]
    for b in backends:
        lines += [f"  - name: {b.logical}", f"    backends: [{b.name}]"]
    lines.append("  backends:")
    secret = {"awsAccessKeyId": AWS_KEY_ID, "awsSecretAccessKey": AWS_SECRET}
    for b, fake in backends.items():
        endpoint = fake.url if b.protocol == "azure-openai" else fake.base_url
        lines += [
            f"  - name: {b.name}",
            f"    provider: {b.protocol}",
            f'    model: "{b.model}"',
            f"    endpoint: {endpoint}",
            "    region: us-east-1",
            f"    pricing: {b.pricing.yaml()}",
        ]
        if b.protocol == "bedrock":
            lines.append("    credentialsRef: {name: keys}")
        elif b.protocol != "openai-compatible":
            lines.append(f"    credentialsRef: {{name: keys, key: {b.name}-key}}")
            secret[f"{b.name}-key"] = f"key-{b.name}"
        if b.protocol == "azure-openai":
            lines.append("    azure: {deployment: gpt4o-prod}")
    lines += [
        "  resilience:",
        "    timeout: {perAttempt: 10s, total: 20s}",
        f"    retries: {{attempts: {retries}}}",
        "---",
        "apiVersion: v1",
        "kind: Secret",
        f"metadata: {{name: keys, namespace: {NAMESPACE}}}",
        "stringData:",
    ]
    lines += [f"  {k}: {v}" for k, v in secret.items()]
    return "\n".join(lines) + "\n"


def fake_tokens(text: str) -> int:
    """The fakes' documented token rule (``llmroute_fakes/replies.py``): ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


# -- the SDK's transport, teed --------------------------------------------------------------------


@dataclass
class Captured:
    """What the sidecar sent back for one request, byte for byte, as the SDK received it."""

    status: int
    headers: httpx2.Headers
    body: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def cost_comments(self) -> list[str]:
        return [m.decode() for m in COST_COMMENT.findall(bytes(self.body))]


class _TeeStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, sink: Captured) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink.body.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        self._sink.closed = True
        await self._inner.aclose()


class TeeTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport (the SDK's HTTP stack) that records each response body by the request's ``x-request-id``."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.captured: dict[str, Captured] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        sink = Captured(response.status_code, response.headers)
        request_id = request.headers.get("x-request-id")
        if request_id is not None:
            assert request_id not in self.captured, f"request id {request_id} sent twice (an SDK retry?)"
            self.captured[request_id] = sink
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TeeStream(response.stream, sink),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def teed_client(instance: Sidecar, tee: TeeTransport) -> openai.AsyncOpenAI:
    """The official SDK pointed at the sidecar, as ``conftest.client_for``, over the tee transport."""
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{instance.http_port}/v1",
        api_key="unused",
        max_retries=0,
        timeout=30.0,
        http_client=openai.DefaultAsyncHttpxClient(
            transport=tee, limits=httpx2.Limits(max_connections=64, max_keepalive_connections=64)
        ),
    )


# -- Prometheus -----------------------------------------------------------------------------------


async def scrape(instance: Sidecar) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The admin port's /metrics, as sample name -> [(labels, value)]."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{instance.admin_port}/metrics")
    response.raise_for_status()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def metric_sum(samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str, **match: str) -> float:
    """The sum of ``name``'s samples whose labels include ``match``."""
    return sum(
        value for labels, value in samples.get(name, []) if all(labels.get(k) == v for k, v in match.items())
    )

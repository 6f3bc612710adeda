"""Fuzz-tier fixtures: fake providers and one ``llmroute-sidecar --config`` process, all real processes.

Each fake provider (OpenAI-compatible, Anthropic, Gemini, Bedrock, Cohere) runs as its own
``llmroute-fake-provider`` process, and the sidecar as its own process, so the Hypothesis process
that generates and sends requests competes with neither for the GIL. The sidecar has every
request-path policy on: PII redaction with restore, exact and semantic cache, rate limits, a budget
and the audit log with text, conversation memory, abuse counting (floors set so high that
nobody is blocked), and a real Redis (memory, batches and files). :class:`Tally` counts what was sent and what came back, for the
tier's final check (``test_policy_fuzz.py::test_the_run_sent_enough_requests``).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from llmroute_fakes.protocols import make_protocol
from tests.redis_support import RedisServer

# Logical model -> the backend serving it; one model per provider protocol, chat and embeddings.
CHAT_MODELS = ("chat", "chat-anthropic", "chat-google", "chat-bedrock", "chat-cohere")
EMBEDDING_MODELS = ("embed", "embed-google", "embed-cohere")
AWS_KEY_ID, AWS_SECRET = "AKIDEXAMPLE", "fuzz-secret"
FAKE_PROTOCOLS = ("openai-compatible", "anthropic", "google", "bedrock", "cohere")

ROUTE = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: fuzz, namespace: demo}}
spec:
  models:
  - {{name: chat, backends: [openai]}}
  - {{name: chat-anthropic, backends: [anthropic]}}
  - {{name: chat-google, backends: [google]}}
  - {{name: chat-bedrock, backends: [bedrock]}}
  - {{name: chat-cohere, backends: [cohere]}}
  - {{name: embed, backends: [vectors]}}
  - {{name: embed-google, backends: [google-vectors]}}
  - {{name: embed-cohere, backends: [cohere-vectors]}}
  - {{name: chat-ab, strategy: weighted, split: [{{backend: openai, weight: 50}}, {{backend: anthropic, weight: 50}}]}}
  backends:
  - name: openai
    provider: openai-compatible
    model: any
    endpoint: {openai}
    pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
    capabilities: {{vision: true}}
  - name: anthropic
    provider: anthropic
    model: claude-sonnet-4-5
    endpoint: {anthropic}
    credentialsRef: {{name: keys, key: anthropic}}
    pricing: {{inputPerMillion: 3.0, outputPerMillion: 15.0}}
    capabilities: {{vision: true}}
  - name: google
    provider: google
    model: gemini-2.5-flash
    endpoint: {google}
    credentialsRef: {{name: keys, key: google}}
    capabilities: {{vision: true}}
  - name: bedrock
    provider: bedrock
    model: anthropic.claude-3-5-sonnet-20240620-v1:0
    endpoint: {bedrock}
    region: eu-west-1
    credentialsRef: {{name: keys}}
    capabilities: {{vision: true}}
  - name: cohere
    provider: cohere
    model: command-r-plus
    endpoint: {cohere}
    credentialsRef: {{name: keys, key: cohere}}
    capabilities: {{vision: true}}
  - name: vectors
    provider: openai-compatible
    model: embed
    endpoint: {openai}
    capabilities: {{embeddings: true, chat: false}}
  - name: google-vectors
    provider: google
    model: gemini-embedding-001
    endpoint: {google}
    credentialsRef: {{name: keys, key: google}}
    capabilities: {{embeddings: true, chat: false}}
  - name: cohere-vectors
    provider: cohere
    model: embed-english-v3.0
    endpoint: {cohere}
    credentialsRef: {{name: keys, key: cohere}}
    capabilities: {{embeddings: true, chat: false}}
  cache:
    exact: {{ttl: 1m}}
    semantic: {{threshold: 0.97, embeddingBackend: vectors, ttl: 1m}}
  privacy:
    pii: {{action: redact, restore: true}}
  rateLimits:
  - {{key: user, requestsPerMinute: 1000000, tokensPerMinute: 1000000000}}
  audit: {{includeText: true}}
  memory: {{ttl: 1h, maxTokensPerTenant: 200000}}
  experiment: {{model: chat-ab, minSamples: 10}}
  resilience: {{hedging: {{delay: 5ms}}}}
  abuse: {{minRequests: 100000000, minTokens: 100000000000, minCostUsd: 1000000, maxPolicyBlocks: 100000000}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: fuzz, namespace: demo}}
spec:
  scope: {{routes: [fuzz]}}
  period: {{type: daily}}
  limits: {{hard: "100000"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: demo}}
stringData:
  anthropic: sk-ant-fuzz
  google: g-fuzz
  cohere: co-fuzz
  awsAccessKeyId: {aws_key}
  awsSecretAccessKey: {aws_secret}
"""


@dataclass
class Tally:
    """What the tier sent and what came back: (surface, status) counts, per model too."""

    statuses: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    by_model: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def add(self, surface: str, status: int | str, model: object = None) -> None:
        self.statuses[surface, status] += 1
        if isinstance(model, str):
            self.by_model[model, status] += 1

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


@dataclass(frozen=True)
class Sidecar:
    http: str  # base URL of the OpenAI-compatible front
    grpc: str  # host:port of the gRPC front
    process: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Address space each child may map. Generated input once made a fake allocate a vector of 10^12
#: floats, and the kernel's OOM killer then took whatever process was largest on the machine; with
#: a cap, a runaway allocation is a MemoryError (a traceback this tier fails on) in that child only.
CHILD_ADDRESS_SPACE = 4 << 30


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))


def _start_fake(protocol: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A fake provider process on an ephemeral port; returns it and the base URL its SDK takes."""
    args = [sys.executable, "-m", "llmroute_fakes", "--protocol", protocol, "--port", "0"]
    if protocol == "bedrock":
        args += ["--aws-access-key-id", AWS_KEY_ID, "--aws-secret-access-key", AWS_SECRET]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log.open("wb"), preexec_fn=_bounded)
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()  # the fake prints its root URL first
    if not url.startswith("http"):
        process.kill()
        raise RuntimeError(f"fake {protocol} did not start: {log.read_text()[-2000:]}")
    return process, url + make_protocol(protocol).sdk_path


@pytest.fixture(scope="session")
def tally() -> Tally:
    return Tally()


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("fuzz")
    fakes: list[subprocess.Popen[bytes]] = []
    endpoints: dict[str, str] = {}
    try:
        for protocol in FAKE_PROTOCOLS:
            process, endpoint = _start_fake(protocol, workdir / f"fake-{protocol}.log")
            fakes.append(process)
            endpoints[protocol.split("-")[0]] = endpoint
        config = workdir / "route.yaml"
        config.write_text(ROUTE.format(**endpoints, aws_key=AWS_KEY_ID, aws_secret=AWS_SECRET))
        http_port, grpc_port = _free_port(), _free_port()
        log = workdir / "sidecar.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "llmroute_sidecar", "--config", str(config),
                    "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                    "--admin-addr", f"127.0.0.1:{_free_port()}", "--audit-log", str(workdir / "audit.jsonl"),
                    "--watch-seconds", "0", "--redis-url", redis_server.url,
                    "--batch-provider-poll-seconds", "0.5",
                ],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=_bounded,
            )  # fmt: skip
        url = f"http://127.0.0.1:{http_port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(log.read_text()[-3000:])
                time.sleep(0.1)
            yield Sidecar(url, f"127.0.0.1:{grpc_port}", process, log)
            assert process.poll() is None, f"the sidecar exited: {log.read_text()[-3000:]}"
            for fake, protocol in zip(fakes, FAKE_PROTOCOLS, strict=True):  # a dead fake explains 503s
                fake_log = workdir / f"fake-{protocol}.log"
                assert fake.poll() is None, f"fake {protocol} exited: {fake_log.read_text()[-2000:]}"
        finally:
            process.terminate()
            process.wait(timeout=15)
        # Any traceback the sidecar logged is a bug even if the app got a clean answer.
        text = log.read_text()
        assert "Traceback" not in text, text[text.index("Traceback") - 500 :][:4000]
    finally:
        for fake in fakes:
            fake.terminate()
        for fake in fakes:
            fake.wait(timeout=10)


@pytest.fixture(scope="session")
def client(sidecar: Sidecar) -> Iterator[httpx.Client]:
    """One keep-alive connection pool for every request of the tier."""
    with httpx.Client(base_url=sidecar.http, timeout=30) as http:
        yield http

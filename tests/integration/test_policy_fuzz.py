"""Generated bad input against a sidecar with every request-path policy on: never a 500.

A real ``llmroute-sidecar --config`` process (PII redaction with restore, exact and semantic cache,
rate limits, a budget, the audit log) in front of a fake OpenAI-compatible provider. Hypothesis puts
any JSON value into any field of a chat-completions or embeddings body, and any text into the
x-llmroute-* headers, and checks what the app gets: an OpenAI-style answer or an OpenAI-style error
with a 4xx status, never a 5xx from the sidecar itself, and a sidecar that is still up afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmroute_fakes.server import FakeProvider

ROUTE = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: fuzz, namespace: demo}}
spec:
  models:
  - {{name: chat, backends: [local]}}
  - {{name: embed, backends: [vectors]}}
  backends:
  - name: local
    provider: openai-compatible
    model: any
    endpoint: {endpoint}
    pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
  - name: vectors
    provider: openai-compatible
    model: embed
    endpoint: {endpoint}
    capabilities: {{embeddings: true, chat: false}}
  cache:
    exact: {{ttl: 1m}}
    semantic: {{threshold: 0.97, embeddingBackend: vectors, ttl: 1m}}
  privacy:
    pii: {{action: redact, restore: true}}
  rateLimits:
  - {{key: user, requestsPerMinute: 100000, tokensPerMinute: 100000000}}
  audit: {{includeText: true}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: fuzz, namespace: demo}}
spec:
  scope: {{routes: [fuzz]}}
  period: {{type: daily}}
  limits: {{hard: "100000"}}
"""

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
CHAT_FIELDS = [
    "model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "user", "tools",
    "tool_choice", "response_format", "seed", "parallel_tool_calls", "metadata",
]  # fmt: skip
HEADERS = [
    "x-llmroute-tenant",
    "x-llmroute-user",
    "x-llmroute-task",
    "x-llmroute-tier",
    "x-llmroute-no-cache",
]
# Header values as a client can send them: visible ASCII, no surrounding spaces.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sidecar_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    provider = FakeProvider("openai-compatible")
    provider.start_in_thread()
    workdir = tmp_path_factory.mktemp("fuzz")
    config = workdir / "route.yaml"
    config.write_text(ROUTE.format(endpoint=provider.base_url))
    port = _free_port()
    log = (workdir / "sidecar.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llmroute_sidecar", "--config", str(config),
            "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{_free_port()}",
            "--admin-addr", f"127.0.0.1:{_free_port()}", "--audit-log", str(workdir / "audit.jsonl"),
            "--watch-seconds", "0",
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(Path(log.name).read_text()[-3000:])
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        provider.stop_thread()
        # Any traceback the sidecar logged is a bug even if the app got a clean answer.
        assert "Traceback" not in Path(log.name).read_text(), Path(log.name).read_text()[-3000:]


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code == 200:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]") or '"error"' in response.text
        else:
            assert "object" in response.json()
    else:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(st.sampled_from(CHAT_FIELDS), JSON, max_size=4),
    content=JSON,
    headers=st.dictionaries(st.sampled_from(HEADERS), HEADER_TEXT, max_size=3),
    pii=st.sampled_from(["", " mail me at ann@example.org", " card 4111 1111 1111 1111", " ip 10.0.0.1"]),
)
def test_chat_any_field_any_type(
    sidecar_url: str, fields: dict[str, Any], content: Any, headers: dict[str, str], pii: str
) -> None:
    body: dict[str, Any] = {
        "model": "chat",
        "messages": [{"role": "user", "content": content if not isinstance(content, str) else content + pii}],
    }
    body.update(fields)
    response = httpx.post(
        f"{sidecar_url}/v1/chat/completions", content=json.dumps(body), headers=headers, timeout=30
    )
    _check(response)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from(["model", "input", "encoding_format", "dimensions", "user"]), JSON
    ),
)
def test_embeddings_any_field_any_type(sidecar_url: str, fields: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": "embed", "input": "reach me at ann@example.org"}
    body.update(fields)
    response = httpx.post(f"{sidecar_url}/v1/embeddings", content=json.dumps(body), timeout=30)
    _check(response)

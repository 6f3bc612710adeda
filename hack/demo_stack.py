"""Plumbing of ``make demo``: output, expectations, child processes and the resources it applies."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

NS = "llmroute-demo"
T = TypeVar("T")
FAILED: list[str] = []
#: Where ``say``/``show`` print; the live view swaps in its console so lines appear above the table.
PRINT: list[Callable[[str], None]] = [lambda text: print(text, flush=True)]


def say(text: str) -> None:
    PRINT[-1](f"\n\033[1m==> {text}\033[0m")


def show(text: str) -> None:
    PRINT[-1]("   " + text.rstrip().replace("\n", "\n   "))


def expect(ok: bool, what: str) -> None:
    """Record an expected behaviour; the demo exits non-zero if any did not happen."""
    show(("ok   " if ok else "FAIL ") + what)
    if not ok:
        FAILED.append(what)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def child(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def resources(urls: dict[str, str], order: str = "gpt4o, claude") -> str:
    """The Secret, both routes and the budgets; ``urls`` maps openai/anthropic/vllm to base URLs."""
    backends = f"""
  - name: gpt4o
    provider: openai
    model: gpt-4o
    endpoint: {urls["openai"]}
    region: us-east-1
    credentialsRef: {{name: providers, key: openai}}
    pricing: {{inputPerMillion: 2500, outputPerMillion: 10000}}
  - name: mini
    provider: openai
    model: gpt-4o-mini
    endpoint: {urls["openai"]}
    region: us-east-1
    tier: small
    credentialsRef: {{name: providers, key: openai}}
    pricing: {{inputPerMillion: 1000, outputPerMillion: 4000}}
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-6
    endpoint: {urls["anthropic"]}
    region: eu-west-1
    credentialsRef: {{name: providers, key: anthropic}}
    pricing: {{inputPerMillion: 3000, outputPerMillion: 15000}}
  - name: vllm
    provider: openai-compatible
    model: qwen2.5-coder
    endpoint: {urls["vllm"]}
    region: eu-central-1
    credentialsRef: {{name: providers, key: vllm}}
    pricing: {{inputPerMillion: 200, outputPerMillion: 600}}
  resilience:
    timeout: {{perAttempt: 5s, total: 20s}}
    retries: {{attempts: 1, backoff: {{base: 50ms, max: 200ms}}}}
    circuitBreaker: {{consecutiveFailures: 4, cooldown: 4s, window: 10s}}
  cache: {{exact: {{ttl: 10m}}}}"""
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: providers, namespace: {NS}}}
stringData: {{openai: sk-demo-openai, anthropic: sk-ant-demo, vllm: sk-vllm-demo}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {NS}}}
spec:
  workloadSelector: {{matchLabels: {{app: chatbot}}}}
  models:
  - name: chat
    strategy: fallback
    backends: [{order}]
  - name: chat-mini
    backends: [mini]
  rules:
  - {{name: premium, match: {{tier: premium}}, backends: [claude, gpt4o]}}
  - {{name: code, match: {{task: code_generation}}, backends: [vllm, gpt4o]}}
  backends:{backends}
  privacy: {{pii: {{action: redact, restore: true}}}}
  rateLimits: [{{key: user, requestsPerMinute: 5}}]
---
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat-eu, namespace: {NS}}}
spec:
  workloadSelector: {{matchLabels: {{app: eu-chatbot}}}}
  regions: {{allowed: [eu-west-1, eu-central-1]}}
  models:
  - name: chat
    strategy: fallback
    backends: [claude, vllm, gpt4o]
  backends:{backends}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: tenant-burst, namespace: {NS}}}
spec:
  scope: {{tenant: burst}}
  period: {{type: daily, timezone: UTC}}
  limits: {{soft: "0.3", hard: "0.6"}}
  onSoftLimit: {{downgradeTo: small}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: chat-daily, namespace: {NS}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: Europe/Berlin}}
  limits: {{soft: "80", hard: "100"}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: eu-daily, namespace: {NS}}}
spec:
  scope: {{routes: [chat-eu]}}
  period: {{type: daily, timezone: Europe/Berlin}}
  limits: {{soft: "40", hard: "50"}}
"""


BAD_ROUTE = f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: broken, namespace: {NS}}}
spec:
  models: [{{name: other, backends: [a]}}]
  backends: [{{name: a, provider: openai, model: gpt-4o, credentialsRef: {{name: providers, key: azure}}}}]
"""

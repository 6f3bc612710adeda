"""``make demo``: llmroute's main job end to end, on an embedded local control plane.

1. start a real kube-apiserver + etcd on loopback (built from the Go module proxy on first use);
2. install the CRDs and start the operator (``llmroute-operator --dev``: webhooks and the config
   server on 127.0.0.1 with a self-signed CA);
3. apply a route over two providers, its Secret and a budget; show a bad route refused at apply;
4. create a Pod in the opted-in namespace and show the sidecar the webhook injected;
5. start a real sidecar process for that Pod (``llmroute-sidecar --operator`` with a projected-style
   token bound to the Pod): the operator verifies it and pushes the route; ``kubectl get llm`` shows
   it synced;
6. drive the sidecar with the official ``openai`` SDK: a plain answer, a stream, a failover when the
   primary provider fails; the sidecar reports usage and the budget's SPENT moves;
7. spend control and data protection in the request path: an exact-cache hit that costs nothing, an
   email redacted before the provider sees it and restored in the answer, a rate limit answering 429
   with Retry-After, and a tenant budget that downgrades past its soft limit and refuses past its
   hard limit;
8. change the route and time apply → sidecar ACK.

Every expected behaviour is checked; the demo exits non-zero when one did not happen.

Providers are fake (they speak the real OpenAI and Anthropic wire protocols); everything else is real.
Everything the demo starts stops when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai

from llmroute_fakes.server import FakeProvider
from llmroute_operator.devcluster import binaries
from llmroute_operator.devcluster.kubectl import Kubectl
from llmroute_operator.devcluster.target import open_cluster

ROOT = Path(__file__).resolve().parent.parent
NS = "llmroute-demo"
T = TypeVar("T")


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(text: str) -> None:
    print("   " + text.rstrip().replace("\n", "\n   "), flush=True)


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


def resources(openai_url: str, anthropic_url: str, order: str = "gpt4o, claude") -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: providers, namespace: {NS}}}
stringData: {{openai: sk-demo-openai, anthropic: sk-ant-demo}}
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
  backends:
  - name: gpt4o
    provider: openai
    model: gpt-4o
    endpoint: {openai_url}
    region: us-east-1
    credentialsRef: {{name: providers, key: openai}}
    pricing: {{inputPerMillion: 2500, outputPerMillion: 10000}}
  - name: mini
    provider: openai
    model: gpt-4o-mini
    endpoint: {openai_url}
    region: us-east-1
    tier: small
    credentialsRef: {{name: providers, key: openai}}
    pricing: {{inputPerMillion: 1000, outputPerMillion: 4000}}
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-6
    endpoint: {anthropic_url}
    region: eu-west-1
    credentialsRef: {{name: providers, key: anthropic}}
    pricing: {{inputPerMillion: 3000, outputPerMillion: 15000}}
  resilience:
    timeout: {{perAttempt: 5s, total: 20s}}
    retries: {{attempts: 1, backoff: {{base: 50ms, max: 200ms}}}}
  cache: {{exact: {{ttl: 10m}}}}
  privacy: {{pii: {{action: redact, restore: true}}}}
  rateLimits: [{{key: user, requestsPerMinute: 5}}]
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
"""


BAD_ROUTE = f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: broken, namespace: {NS}}}
spec:
  models: [{{name: other, backends: [a]}}]
  backends: [{{name: a, provider: openai, model: gpt-4o, credentialsRef: {{name: providers, key: azure}}}}]
"""


FAILED: list[str] = []


def expect(ok: bool, what: str) -> None:
    """Record an expected behaviour; the demo exits non-zero if any did not happen."""
    show(("ok   " if ok else "FAIL ") + what)
    if not ok:
        FAILED.append(what)


async def spend_control(base_url: str, primary: FakeProvider) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    ask = client.chat.completions.with_raw_response.create

    say("exact cache: the same question twice; the second answer comes from the sidecar, at no cost")
    calls = len(primary.requests)
    for _ in range(2):
        raw = await ask(
            model="chat", messages=[{"role": "user", "content": "What does llmroute cache?"}], user="ann"
        )
        show(
            f"x-llmroute-cache: {raw.headers.get('x-llmroute-cache')}, cost {raw.headers.get('x-llmroute-cost-usd')}"
        )
    expect(raw.headers.get("x-llmroute-cache") == "hit", "the repeated request is a cache hit")
    expect(len(primary.requests) == calls + 1, "the provider was called once for both")

    say("PII: an email in the prompt is redacted before it leaves the pod, and restored in the answer")
    raw = await ask(
        model="chat", messages=[{"role": "user", "content": "mail ann@example.org today"}], user="ann"
    )
    received = primary.requests[-1].body.decode(errors="replace")
    show(f"the provider received: ...{received[received.find('mail') :][:40]}...")
    show(f"the app got back     : {raw.parse().choices[0].message.content}")
    expect("ann@example.org" not in received and "<EMAIL_1>" in received, "the provider saw only <EMAIL_1>")
    expect("ann@example.org" in (raw.parse().choices[0].message.content or ""), "the answer has it back")

    say("rate limit: user 'eager' sends 7 requests; the route allows 5 per minute per user")
    statuses: list[int] = []
    retry_after = None
    for i in range(7):
        try:
            raw = await ask(
                model="chat",
                messages=[{"role": "user", "content": f"question {i}"}],
                user="eager",
                max_tokens=16,
            )
            statuses.append(raw.http_response.status_code)
        except openai.RateLimitError as exc:
            statuses.append(exc.status_code)
            retry_after = exc.response.headers.get("retry-after")
    show(f"statuses: {statuses}; Retry-After: {retry_after}s")
    expect(statuses[:5] == [200] * 5 and statuses[5:] == [429, 429], "5 answered, then 429 with Retry-After")

    say("budget: tenant 'burst' (soft 0.30 USD: downgrade to the small tier; hard 0.60 USD: refuse)")
    downgraded = refused = False
    for i in range(60):
        try:
            raw = await ask(
                model="chat",
                messages=[{"role": "user", "content": f"burst question {i}"}],
                max_tokens=20,
                extra_headers={"x-llmroute-tenant": "burst", "x-llmroute-user": f"u{i}"},
            )
        except openai.RateLimitError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            show(
                f"request {i}: 429 {body.get('code')} (budget {body.get('budget')}, resets {body.get('reset_at')})"
            )
            refused = body.get("code") == "budget_exceeded"
            break
        note = raw.headers.get("x-llmroute-downgraded") or ""
        downgraded = downgraded or bool(note)
        show(
            f"request {i}: {raw.headers.get('x-llmroute-backend'):6} ${raw.headers.get('x-llmroute-cost-usd')} {note}"
        )
        await asyncio.sleep(0.3)  # spend reaches the operator; its state comes back with the next push
    expect(downgraded, "past the soft limit, requests went to the small tier (x-llmroute-downgraded)")
    expect(refused, "past the hard limit, requests were refused with 429 budget_exceeded")


async def app_calls(base_url: str, primary: FakeProvider) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    say("app: a chat completion through the sidecar (official openai SDK, base_url=localhost)")
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "What is a service mesh?"}]
    )
    show(f"answer : {raw.parse().choices[0].message.content}")
    for header in ("x-llmroute-backend", "x-llmroute-region", "x-llmroute-attempts", "x-llmroute-cost-usd"):
        show(f"{header}: {raw.headers.get(header)}")
    say("app: a streamed answer")
    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "stream a short answer"}], stream=True
    )
    show("streamed: " + "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
    say("the OpenAI provider starts failing with 503s: the sidecar retries, then fails over to Anthropic")
    primary.set_faults("status=503")
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "are you still there?"}]
    )
    show(f"answer : {raw.parse().choices[0].message.content}")
    show(
        f"x-llmroute-backend: {raw.headers.get('x-llmroute-backend')} (attempts {raw.headers.get('x-llmroute-attempts')})"
    )
    primary.set_faults(None)


def run(
    kubectl: Kubectl, kubeconfig: Path, work: Path, primary: FakeProvider, secondary: FakeProvider
) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    say("kubectl apply -f crds/")
    show(kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds")).stdout)
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/llmroutes.llmroute.io",
        "crd/llmbudgets.llmroute.io",
    )
    kubectl.run("create", "namespace", NS)
    kubectl.run("label", "namespace", NS, "llmroute.io/injection=enabled")
    kubectl.run("create", "serviceaccount", "chatbot", "-n", NS)

    ca = work / "ca.crt"
    ports = {name: free_port() for name in ("webhook", "config", "metrics")}
    say(
        "starting the operator: llmroute-operator --dev (webhooks + config server on 127.0.0.1, self-signed CA)"
    )
    operator_cmd = [
        sys.executable, "-m", "llmroute_operator", "--dev", "--ca-out", str(ca), "--namespace", NS,
        "--webhook-addr", f"127.0.0.1:{ports['webhook']}", "--config-addr", f"127.0.0.1:{ports['config']}",
        "--metrics-addr", f"127.0.0.1:{ports['metrics']}", "--config-host", f"127.0.0.1:{ports['config']}",
    ]  # fmt: skip
    with child(operator_cmd, work / "operator.log", env) as operator:
        started = time.monotonic()
        wait_for(
            "the operator's /readyz",
            lambda: (
                operator.poll() is None and http_get(f"http://127.0.0.1:{ports['metrics']}/readyz")[0] == 200
            ),
            120,
        )
        show(f"operator ready in {time.monotonic() - started:.1f}s (logs: {work / 'operator.log'})")

        say(f"kubectl apply: a route over two providers, its Secret and a budget (namespace {NS})")
        show(kubectl.run("apply", "-f", "-", input=resources(primary.base_url, secondary.url)).stdout)
        say("kubectl apply of a route whose Secret lacks the key is refused by the validating webhook")
        show(kubectl.run("apply", "-f", "-", input=BAD_ROUTE, check=False).stderr)

        say("a Pod labelled app=chatbot is created: the mutating webhook injects the sidecar")
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "chatbot-0", "namespace": NS, "labels": {"app": "chatbot"}},
            "spec": {"serviceAccountName": "chatbot", "containers": [{"name": "app", "image": "example.test/chatbot:1"}]},
        }  # fmt: skip
        created = kubectl.create(pod)
        init = created["spec"].get("initContainers", [])
        show(f"initContainers: {[(c['name'], c.get('restartPolicy')) for c in init]}")
        app_env = [
            e for e in created["spec"]["containers"][0].get("env", []) if e["name"] == "OPENAI_BASE_URL"
        ]
        show(f"app env: {app_env}")

        say("the sidecar for that Pod starts (no kubelet here, so the demo runs it) and dials the operator")
        token = kubectl.run(
            "create", "token", "chatbot", "-n", NS, "--audience", "llmroute",
            "--bound-object-kind", "Pod", "--bound-object-name", "chatbot-0", "--duration", "1h",
        ).stdout.strip()  # fmt: skip
        (work / "token").write_text(token)
        side = {name: free_port() for name in ("http", "grpc", "admin")}
        sidecar_cmd = [
            sys.executable, "-m", "llmroute_sidecar", "--operator", f"127.0.0.1:{ports['config']}",
            "--token-file", str(work / "token"), "--ca-file", str(ca),
            "--http-addr", f"127.0.0.1:{side['http']}", "--grpc-addr", f"127.0.0.1:{side['grpc']}",
            "--admin-addr", f"127.0.0.1:{side['admin']}",
        ]  # fmt: skip
        sidecar_env = {**env, "POD_NAME": "chatbot-0", "POD_NAMESPACE": NS}
        with child(sidecar_cmd, work / "sidecar.log", sidecar_env) as sidecar:

            def config_version() -> str | None:
                status, body = http_get(f"http://127.0.0.1:{side['admin']}/config_dump")
                if status != 200 or sidecar.poll() is not None:
                    return None
                dump: dict[str, Any] = json.loads(body)
                return str(dump["version"]) if dump.get("config") and dump["config"].get("routes") else None

            version = wait_for("the pushed config", config_version, 60)
            show(f"sidecar runs config {version}")
            wait_for(
                "status SYNCED 1/1", lambda: "1/1" in kubectl.run("get", "llmr", "chat", "-n", NS).stdout, 30
            )
            say(f"kubectl get llm -n {NS}")
            show(kubectl.run("get", "llm", "-n", NS).stdout)

            asyncio.run(app_calls(f"http://127.0.0.1:{side['http']}/v1", primary))
            asyncio.run(spend_control(f"http://127.0.0.1:{side['http']}/v1", primary))

            say(
                "the sidecar reports usage to the operator; the budget's SPENT follows (prices are inflated for the demo)"
            )
            wait_for(
                "spend in LLMBudget.status",
                lambda: (
                    kubectl.json("get", "llmb", "chat-daily", "-n", NS).get("status", {}).get("spent")
                    not in (None, "0", "0.00")
                ),
                60,
            )
            show(kubectl.run("get", "llmb", "-n", NS).stdout)

            say("kubectl apply of a changed route (claude first): time until the sidecar ACKs the new config")

            def chat_generation() -> int:
                status, body = http_get(f"http://127.0.0.1:{side['admin']}/config_dump")
                routes = (json.loads(body).get("config") or {}).get("routes", []) if status == 200 else []
                return max(
                    (int(r.get("generation") or 0) for r in routes if r.get("name") == "chat"), default=0
                )

            before, generation = config_version(), chat_generation()
            applied = time.monotonic()
            kubectl.run(
                "apply", "-f", "-", input=resources(primary.base_url, secondary.url, order="claude, gpt4o")
            )
            # The route's new generation, not just any new version (budget states are pushed too).
            wait_for("the new route generation", lambda: chat_generation() > generation, 30)
            after = config_version()
            show(f"config {before} -> {after} in {1000 * (time.monotonic() - applied):.0f} ms")
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{side['http']}/v1", api_key="unused", max_retries=0
            )
            raw = client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": "who answers now?"}]
            )
            show(f"x-llmroute-backend: {raw.headers.get('x-llmroute-backend')}")
            expect(raw.headers.get("x-llmroute-backend") == "claude", "the changed route answers from claude")


async def _providers() -> tuple[FakeProvider, FakeProvider]:
    primary = FakeProvider("openai", api_key="sk-demo-openai")
    secondary = FakeProvider("anthropic", api_key="sk-ant-demo")
    return primary, secondary


def main() -> int:
    started = time.monotonic()
    say("control plane: building or finding kube-apiserver and etcd (the first build takes ~5 minutes)")
    binaries.ensure(os.environ, with_helm=False)
    primary, secondary = asyncio.run(_providers())
    primary.start_in_thread()
    secondary.start_in_thread()
    try:
        with tempfile.TemporaryDirectory(prefix="llmroute-demo-") as tmp, open_cluster(os.environ) as cluster:
            show(cluster.description)
            run(cluster.kubectl, cluster.kubeconfig, Path(tmp), primary, secondary)
    finally:
        primary.stop_thread()
        secondary.stop_thread()
    say(f"demo finished in {time.monotonic() - started:.1f}s; everything it started has stopped")
    if FAILED:
        print(
            f"demo: {len(FAILED)} expected behaviour(s) did not happen: {'; '.join(FAILED)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

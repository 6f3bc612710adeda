"""``make demo``: llmroute end to end on an embedded local control plane, as far as it is built.

1. start a real kube-apiserver + etcd on loopback (built from the Go module proxy on first use);
2. install the CRDs, apply a route and a budget, and show ``kubectl get llm`` and a refused bad route;
3. start two fake providers (OpenAI and Anthropic wire protocols) and a sidecar that runs from the
   route and Secret exported from the cluster, in standalone mode;
4. drive the sidecar with the official ``openai`` SDK: a plain answer, a stream, and a failover
   when the primary provider starts failing; then show its metrics.

The operator that compiles and pushes routes to sidecars is issue #6: until it lands, step 3 reads
the applied resources back from the API server instead of receiving a push, and says so.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp
import openai

from llmroute_operator.devcluster import binaries
from llmroute_operator.devcluster.target import open_cluster
from llmroute_sidecar.fake_providers.server import FakeProvider
from llmroute_sidecar.runtime import Settings, Sidecar

ROOT = Path(__file__).resolve().parent.parent
NS = "llmroute-demo"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def route_yaml(openai_url: str, anthropic_url: str) -> str:
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
  models:
  - name: chat
    strategy: fallback
    backends: [gpt4o, claude]
  backends:
  - name: gpt4o
    provider: openai
    model: gpt-4o
    endpoint: {openai_url}
    region: us-east-1
    credentialsRef: {{name: providers, key: openai}}
    pricing: {{inputPerMillion: 2.5, outputPerMillion: 10}}
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-6
    endpoint: {anthropic_url}
    region: eu-west-1
    credentialsRef: {{name: providers, key: anthropic}}
    pricing: {{inputPerMillion: 3, outputPerMillion: 15}}
  resilience:
    timeout: {{perAttempt: 5s, total: 20s}}
    retries: {{attempts: 1, backoff: {{base: 50ms, max: 200ms}}}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: chat-daily, namespace: {NS}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: Europe/Berlin}}
  limits: {{soft: "80", hard: "100"}}
  onSoftLimit: {{downgradeTo: small}}
"""


BAD_ROUTE = f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: broken, namespace: {NS}}}
spec:
  models: [{{name: chat, strategy: weighted, split: [{{backend: a, weight: 70}}, {{backend: a, weight: 20}}]}}]
  backends: [{{name: a, provider: openai, model: gpt-4o, credentialsRef: {{name: providers}}}}]
"""


async def drive(sidecar: Sidecar, primary: FakeProvider) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{sidecar.http_port}/v1", api_key="unused", max_retries=0
    )
    say("app: a plain chat completion through the sidecar (official openai SDK, base_url=localhost)")
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "What is a service mesh?"}]
    )
    answer = raw.parse()
    print(f"   answer : {answer.choices[0].message.content}")
    for header in ("x-llmroute-backend", "x-llmroute-region", "x-llmroute-attempts", "x-llmroute-cost-usd"):
        print(f"   {header}: {raw.headers.get(header)}")

    say("app: a streamed answer")
    stream = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "stream a short answer"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        usage = chunk.usage or usage
    print(f"   streamed: {''.join(text)}")
    print(f"   usage   : {usage.total_tokens if usage else '?'} tokens")

    say("the OpenAI provider starts failing with 503s: the sidecar retries, then fails over to Anthropic")
    primary.set_faults("status=503")
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "are you still there?"}]
    )
    print(f"   answer : {raw.parse().choices[0].message.content}")
    print(
        f"   x-llmroute-backend : {raw.headers.get('x-llmroute-backend')}  (attempts: {raw.headers.get('x-llmroute-attempts')})"
    )
    primary.set_faults(None)

    say(f"sidecar metrics (http://127.0.0.1:{sidecar.admin_port}/metrics)")
    url = f"http://127.0.0.1:{sidecar.admin_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        metrics = await response.text()
    for line in metrics.splitlines():
        if line.startswith(
            ("llmroute_requests_total", "llmroute_upstream_attempts_total", "llmroute_cost_usd_total")
        ):
            print(f"   {line}")


async def run_data_plane(cluster_resources: Path, primary: FakeProvider, secondary: FakeProvider) -> None:
    sidecar = Sidecar(
        Settings(
            config_path=cluster_resources,
            http_addr="127.0.0.1:0",
            grpc_addr="127.0.0.1:0",
            admin_addr="127.0.0.1:0",
            watch_seconds=0,
        )
    )
    await sidecar.start()
    try:
        if sidecar.store.current is None:
            raise SystemExit(f"the sidecar refused the config: {sidecar.store.last_error}")
        print(f"   sidecar: http 127.0.0.1:{sidecar.http_port}, config {sidecar.store.version}")
        await drive(sidecar, primary)
    finally:
        await sidecar.stop(grace=1)


async def main_async(workdir: Path) -> None:
    primary = FakeProvider("openai", api_key="sk-demo-openai")
    secondary = FakeProvider("anthropic", api_key="sk-ant-demo")
    await primary.start()
    await secondary.start()
    try:
        say("control plane: building or finding kube-apiserver and etcd (the first build takes ~5 minutes)")
        binaries.ensure(os.environ, with_helm=False)
        with open_cluster(os.environ) as cluster:
            print(f"   {cluster.description}")
            kubectl = cluster.kubectl
            say("kubectl apply -f crds/")
            print(kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds")).stdout.rstrip())
            kubectl.run(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/llmroutes.llmroute.io",
                "crd/llmbudgets.llmroute.io",
            )
            kubectl.run("create", "namespace", NS)
            say(f"kubectl apply: a route over two providers, its Secret and a budget (namespace {NS})")
            print(
                kubectl.run(
                    "apply", "-f", "-", input=route_yaml(primary.base_url, secondary.url)
                ).stdout.rstrip()
            )
            say("kubectl apply of a bad route is refused, naming the field")
            refused = kubectl.run("apply", "-f", "-", input=BAD_ROUTE, check=False)
            print("   " + refused.stderr.strip().replace("\n", "\n   "))
            say(f"kubectl get llm -n {NS}")
            print(kubectl.run("get", "llm", "-n", NS).stdout.rstrip())
            say(
                "sidecar: the operator push is not built yet (issue #6); the sidecar runs from the applied resources"
            )
            exported = workdir / "resources.yaml"
            exported.write_text(
                kubectl.run("get", "llmroute,llmbudget,secret", "-n", NS, "-o", "yaml").stdout
            )
            await run_data_plane(exported, primary, secondary)
    finally:
        await primary.stop()
        await secondary.stop()


def main() -> int:
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmroute-demo-") as tmp:
        asyncio.run(main_async(Path(tmp)))
    say(f"demo finished in {time.monotonic() - started:.1f}s; everything it started has stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

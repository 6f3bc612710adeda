"""``make demo``: llmroute's main job end to end, on an embedded local control plane.

1. start a real kube-apiserver + etcd on loopback (built from the Go module proxy on first use);
2. install the CRDs and start the operator (``llmroute-operator --dev``: webhooks and the config
   server on 127.0.0.1 with a self-signed CA);
3. apply two routes over three providers in three regions (OpenAI in us-east-1, Anthropic in
   eu-west-1, a self-hosted vLLM in eu-central-1; ``chat`` with a premium-tier and a code rule,
   ``chat-eu`` restricted to EU regions), their Secret and budgets; show a bad route refused at apply;
4. create three Pods in the opted-in namespace and show the sidecar the webhook injected;
5. start a real sidecar process per Pod (``llmroute-sidecar --operator`` with a token bound to the
   Pod): the operator verifies each and pushes its route; ``kubectl get llm`` shows them synced;
6. drive a sidecar with the official ``openai`` SDK: a plain answer, a stream, a failover, an exact
   cache hit, an email redacted and restored, a rate limit answering 429 with Retry-After;
7. live traffic on all three sidecars (``demo_traffic``) while vLLM is flaky and Anthropic goes down
   and comes back, with a tenant burst past its soft and hard budget: a live view of requests per
   backend and region, failovers, breaker states, cache hits and spend against limits;
8. change the route and time apply → sidecar ACK; end with ``kubectl get llm -A``.

Every expected behaviour is checked; the demo exits non-zero when one did not happen. ``--keep``
leaves the stack up afterwards until Ctrl-C. Providers are fake (they speak the real OpenAI and
Anthropic wire protocols); everything else is real. Everything the demo starts stops when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from rich.console import Console

from demo_stack import (
    BAD_ROUTE,
    FAILED,
    NS,
    child,
    expect,
    free_port,
    http_get,
    resources,
    say,
    show,
    wait_for,
)
from demo_traffic import Sidecar, check, live
from llmroute_fakes.server import FakeProvider
from llmroute_operator.devcluster import binaries
from llmroute_operator.devcluster.kubectl import Kubectl
from llmroute_operator.devcluster.target import open_cluster

ROOT = Path(__file__).resolve().parent.parent
#: (pod, app label, service account, sidecar name in the live view)
PODS = (
    ("chatbot-0", "chatbot", "chatbot", "s0"),
    ("chatbot-1", "chatbot", "chatbot", "s1"),
    ("eu-chatbot-0", "eu-chatbot", "eu-chatbot", "eu"),
)


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
    await client.close()  # before asyncio.run closes the loop, or its transports complain


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
    await client.close()


def config_version(admin: str) -> str | None:
    status, body = http_get(f"{admin}/config_dump")
    if status != 200:
        return None
    dump: dict[str, Any] = json.loads(body)
    return str(dump["version"]) if dump.get("config") and dump["config"].get("routes") else None


def route_generation(admin: str, route: str) -> int:
    status, body = http_get(f"{admin}/config_dump")
    routes = (json.loads(body).get("config") or {}).get("routes", []) if status == 200 else []
    return max((int(r.get("generation") or 0) for r in routes if r.get("name") == route), default=0)


def newer(admin: str, route: str, generation: int) -> bool:
    return route_generation(admin, route) > generation


def is_synced(kubectl: Kubectl, route: str, synced: str) -> bool:
    return synced in kubectl.run("get", "llmr", route, "-n", NS).stdout


def create_pods(kubectl: Kubectl) -> None:
    say("three Pods (two app=chatbot, app=eu-chatbot) are created: the mutating webhook injects the sidecar")
    for name, app, account, _ in PODS:
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": f"example.test/{app}:1"}]},
        }  # fmt: skip
        created = kubectl.create(pod)
        init = [(c["name"], c.get("restartPolicy")) for c in created["spec"].get("initContainers", [])]
        app_env = [
            e for e in created["spec"]["containers"][0].get("env", []) if e["name"] == "OPENAI_BASE_URL"
        ]
        show(f"{name}: initContainers {init}; app env {app_env}")
        expect(any(c[1] == "Always" for c in init), f"{name} got the native sidecar injected")


def run(
    kubectl: Kubectl, kubeconfig: Path, work: Path, providers: dict[str, FakeProvider], keep: bool
) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    urls = {name: provider.base_url for name, provider in providers.items()}
    urls["anthropic"] = providers["anthropic"].url
    say("kubectl apply -f crds/")
    show(kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds")).stdout)
    kubectl.wait_established(["crd/llmroutes.llmroute.io", "crd/llmbudgets.llmroute.io"])
    kubectl.run("create", "namespace", NS)
    kubectl.run("label", "namespace", NS, "llmroute.io/injection=enabled")
    for account in sorted({p[2] for p in PODS}):
        kubectl.run("create", "serviceaccount", account, "-n", NS)

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
    with contextlib.ExitStack() as stack:
        operator = stack.enter_context(child(operator_cmd, work / "operator.log", env))
        started = time.monotonic()
        wait_for(
            "the operator's /readyz",
            lambda: (
                operator.poll() is None and http_get(f"http://127.0.0.1:{ports['metrics']}/readyz")[0] == 200
            ),
            120,
        )
        show(f"operator ready in {time.monotonic() - started:.1f}s (logs: {work / 'operator.log'})")

        say(f"kubectl apply: routes chat and chat-eu over three providers, their Secret and budgets ({NS})")
        show(kubectl.run("apply", "-f", "-", input=resources(urls)).stdout)
        say("kubectl apply of a route whose Secret lacks the key is refused by the validating webhook")
        refusal = kubectl.run("apply", "-f", "-", input=BAD_ROUTE, check=False)
        show(refusal.stderr)
        expect(refusal.returncode != 0 and "azure" in refusal.stderr, "the bad route was refused at apply")
        create_pods(kubectl)

        say("a sidecar per Pod starts (no kubelet here, so the demo runs them) and dials the operator")
        sidecars: list[Sidecar] = []
        for pod, _, account, name in PODS:
            token = kubectl.run(
                "create", "token", account, "-n", NS, "--audience", "llmroute",
                "--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration", "1h",
            ).stdout.strip()  # fmt: skip
            (work / f"{pod}.token").write_text(token)
            side = {p: free_port() for p in ("http", "grpc", "admin")}
            sidecar_cmd = [
                sys.executable, "-m", "llmroute_sidecar", "--operator", f"127.0.0.1:{ports['config']}",
                "--token-file", str(work / f"{pod}.token"), "--ca-file", str(ca),
                "--http-addr", f"127.0.0.1:{side['http']}", "--grpc-addr", f"127.0.0.1:{side['grpc']}",
                "--admin-addr", f"127.0.0.1:{side['admin']}",
            ]  # fmt: skip
            sidecar_env = {**env, "POD_NAME": pod, "POD_NAMESPACE": NS}
            stack.enter_context(child(sidecar_cmd, work / f"sidecar-{pod}.log", sidecar_env))
            sidecars.append(
                Sidecar(name, f"http://127.0.0.1:{side['http']}/v1", f"http://127.0.0.1:{side['admin']}")
            )
        for (pod, *_), sidecar in zip(PODS, sidecars, strict=True):
            version = wait_for(
                f"the config pushed to {pod}", functools.partial(config_version, sidecar.admin), 60
            )
            show(f"{pod} ({sidecar.name}) runs config {version}")
        for route, synced in (("chat", "2/2"), ("chat-eu", "1/1")):
            wait_for(f"{route} SYNCED {synced}", functools.partial(is_synced, kubectl, route, synced), 30)
        show("both routes report their sidecars synced: chat 2/2, chat-eu 1/1")
        say(f"kubectl get llm -n {NS}")
        show(kubectl.run("get", "llm", "-n", NS).stdout)

        primary = providers["openai"]
        asyncio.run(app_calls(sidecars[0].base_url, primary))
        asyncio.run(spend_control(sidecars[0].base_url, primary))

        console = Console()
        traffic = asyncio.run(live(sidecars, providers, kubectl, console))
        check(traffic)

        say(
            "the sidecars report usage to the operator; the budgets' SPENT follows (prices are inflated for the demo)"
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

        say("kubectl apply of a changed route (claude first): time until the sidecars ACK the new config")
        chat_sidecars = sidecars[:2]
        generations = [route_generation(s.admin, "chat") for s in chat_sidecars]
        applied = time.monotonic()
        kubectl.run("apply", "-f", "-", input=resources(urls, order="claude, gpt4o"))
        # The route's new generation, not just any new version (budget states are pushed too).
        for s, generation in zip(chat_sidecars, generations, strict=True):
            wait_for("the new route generation", functools.partial(newer, s.admin, "chat", generation), 30)
        show(f"both chat sidecars ACKed the new generation in {1000 * (time.monotonic() - applied):.0f} ms")
        client = openai.OpenAI(base_url=sidecars[1].base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "who answers now?"}]
        )
        show(f"x-llmroute-backend: {raw.headers.get('x-llmroute-backend')}")
        expect(raw.headers.get("x-llmroute-backend") == "claude", "the changed route answers from claude")

        wait_for("chat SYNCED 2/2 again", functools.partial(is_synced, kubectl, "chat", "2/2"), 30)
        say("kubectl get llm -A")
        show(kubectl.run("get", "llm", "-A").stdout)
        if keep:
            say("--keep: the stack stays up until Ctrl-C")
            show(f"export KUBECONFIG={kubeconfig}")
            for (pod, *_), s in zip(PODS, sidecars, strict=True):
                show(f"{pod}: OPENAI_BASE_URL={s.base_url}  admin {s.admin}/metrics")
            show(f"logs: {work}")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            say("Ctrl-C: stopping everything")


def _providers() -> dict[str, FakeProvider]:
    return {
        "openai": FakeProvider("openai", api_key="sk-demo-openai"),
        "anthropic": FakeProvider("anthropic", api_key="sk-ant-demo"),
        "vllm": FakeProvider("openai-compatible", api_key="sk-vllm-demo"),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the stack up at the end, until Ctrl-C")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM both unwind through the context managers, so everything started is stopped
    # (even when SIGINT was inherited as ignored, as in a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    say("control plane: building or finding kube-apiserver and etcd (the first build takes ~5 minutes)")
    binaries.ensure(os.environ, with_helm=False)
    providers = _providers()
    for provider in providers.values():
        provider.start_in_thread()
    try:
        with tempfile.TemporaryDirectory(prefix="llmroute-demo-") as tmp, open_cluster(os.environ) as cluster:
            show(cluster.description)
            run(cluster.kubectl, cluster.kubeconfig, Path(tmp), providers, args.keep)
    finally:
        for provider in providers.values():
            provider.stop_thread()
    say(f"demo finished in {time.monotonic() - started:.1f}s; everything it started has stopped")
    if FAILED:
        print(
            f"demo: {len(FAILED)} expected behaviour(s) did not happen: {'; '.join(FAILED)}", file=sys.stderr
        )
        return 1
    say("every expected behaviour happened")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Config push, identity, budgets and outages, end to end: a real kube-apiserver, ``llmroute-operator
--dev`` as a child process, and three real ``llmroute-sidecar --operator`` processes with tokens minted
by TokenRequest for Pod objects (they stay Pending: there is no kubelet).

In order: apply a route and measure apply-to-ACK on all three sidecars, update it, rotate its Secret,
delete it; the cross-namespace attack and forged tokens; usage counted exactly once, spend surviving an
operator restart, allowance grants within the remainder; and an operator killed while sidecars keep
serving, then buffered usage delivered when it returns. Figures are printed (run with ``-s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl
from llmroute_operator.webhooks.inject import SIDECAR_LABEL
from llmroute_proto.v1 import discovery_pb2 as dpb

from .operator_process import OperatorProcess, status_of
from .push_support import RawClient, SidecarProcess, batch, make_pod, mint_token, poll

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIGURES: dict[str, Any] = {}
MICRO_PER_TOKEN = 1000  # pricing below: 1000 USD per million tokens = 0.001 USD per token


@dataclass
class Push:
    kubectl: Kubectl
    operator: OperatorProcess
    ca: Path
    ns_a: str
    ns_b: str
    provider: FakeProvider
    sidecars: list[SidecarProcess]
    workdir: Path

    def apply(self, manifest: str) -> None:
        self.kubectl.run("apply", "-f", "-", input=manifest)

    def restart_operator(self, *, kill: bool = False) -> float:
        if kill:
            assert self.operator.process is not None
            self.operator.process.kill()
            self.operator.process.wait(timeout=10)
        else:
            assert self.operator.stop() == 0, self.operator.tail()
        return self.start_operator()

    def start_operator(self) -> float:
        self.operator = OperatorProcess(
            self.operator.kubeconfig,
            self.operator.log,
            self.operator.args,
            metrics_port=self.operator.metrics_port,
            config_port=self.operator.config_port,
            webhook_port=self.operator.webhook_port,
        )
        self.operator.start()
        return self.operator.wait_ready()


def route(namespace: str, endpoint: str, *, model: str = "gpt-4o") -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {namespace}}}
spec:
  workloadSelector: {{matchLabels: {{app: chat}}}}
  models: [{{name: chat, backends: [primary]}}]
  backends:
  - name: primary
    provider: openai
    model: {model}
    endpoint: {endpoint}
    region: us-east-1
    tier: large
    credentialsRef: {{name: openai, key: apiKey}}
    pricing: {{inputPerMillion: 1000, outputPerMillion: 1000}}
"""


def secret(namespace: str, key: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {namespace}}}
stringData: {{apiKey: {key}}}
"""


def budget(namespace: str, name: str, scope: str, *, soft: str = "5", hard: str = "10") -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  scope: {scope}
  period: {{type: daily, timezone: UTC}}
  limits: {{soft: "{soft}", hard: "{hard}"}}
"""


@pytest.fixture(scope="module")
def push(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Push]:
    kubectl = cluster.kubectl
    kubectl.apply_crds(ROOT / "crds")
    ns_a, ns_b = cluster.create_namespace("push-a"), cluster.create_namespace("push-b")
    for ns in (ns_a, ns_b):
        kubectl.run("create", "serviceaccount", "app", "-n", ns)
    workdir = tmp_path_factory.mktemp("push")
    ca = workdir / "ca.pem"
    args = ["--dev", "--ca-out", str(ca), "--namespace", ns_a, "--namespace", ns_b]
    operator = OperatorProcess(cluster.kubeconfig, workdir / "operator.log", args)
    provider = FakeProvider("openai")
    provider.start_in_thread()
    state = Push(kubectl, operator, ca, ns_a, ns_b, provider, [], workdir)
    try:
        operator.start()
        FIGURES["operator_ready_s"] = operator.wait_ready()
        for i in range(3):
            name = f"chat-{i}"
            token = make_pod(kubectl, ns_a, name, {"app": "chat"})
            state.sidecars.append(
                SidecarProcess(name, ns_a, token, operator.config_port, ca, workdir).start()
            )
        yield state
    finally:
        for sidecar in state.sidecars:
            sidecar.stop()
        if state.operator.stop() not in (0, None):
            print(state.operator.tail())
        provider.stop_thread()
        print(f"\nconfig push figures: {FIGURES}")
        for ns in (ns_a, ns_b):
            cluster.delete_namespace(ns)


def _ask(sidecar: SidecarProcess) -> int:
    """One chat request through the sidecar; the micro-USD it cost."""
    client = openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0, timeout=20)
    completion = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}])
    assert completion.usage is not None
    return MICRO_PER_TOKEN * (completion.usage.prompt_tokens + completion.usage.completion_tokens)


def _until_all(push: Push, check: Any, what: str, timeout: float = 30.0) -> list[float]:
    """Seconds until ``check(sidecar)`` held, per sidecar, measured from now."""
    started = time.monotonic()
    seen: dict[str, float] = {}

    def all_done() -> bool:
        for sidecar in push.sidecars:
            if sidecar.name not in seen and check(sidecar):
                seen[sidecar.name] = time.monotonic() - started
        return len(seen) == len(push.sidecars)

    poll(all_done, timeout=timeout, interval=0.005, what=what)
    return sorted(seen.values())


def _route_status(push: Push) -> dict[str, Any]:
    return status_of(push.kubectl, "llmroutes", push.ns_a, "chat")


def test_apply_reaches_three_sidecars_and_updates_follow(push: Push) -> None:
    push.apply(secret(push.ns_a, "sk-first"))
    # Connected: each holds the (empty) config of its namespace.
    _until_all(push, lambda s: bool(s.config_dump().get("version")), "sidecars connected", timeout=60)
    started = time.monotonic()
    push.apply(route(push.ns_a, push.provider.base_url))
    kubectl_s = time.monotonic() - started
    ack_s = _until_all(push, lambda s: s.route_names() == ["chat"], "the route on every sidecar")
    FIGURES["apply_to_ack_s"] = {
        "kubectl_apply_returned": round(kubectl_s, 3),
        "from_apply_returned_per_sidecar": [round(x, 3) for x in ack_s],
        "from_apply_started_max": round(kubectl_s + ack_s[-1], 3),
    }
    versions = {s.config_dump()["version"] for s in push.sidecars}
    assert len(versions) == 1, versions  # the same labels compile to the same bytes
    for sidecar in push.sidecars:
        _ask(sidecar)
    assert push.provider.requests[-1].headers["authorization"] == "Bearer sk-first"
    synced = poll(
        lambda: (_route_status(push).get("sidecars") or {}).get("synced") == 3 and _route_status(push),
        what="status.sidecars.synced == 3",
    )
    assert synced["sidecars"]["matched"] == 3 and synced["configVersion"] == versions.pop()

    old = push.sidecars[0].config_dump()["version"]
    started = time.monotonic()
    push.apply(route(push.ns_a, push.provider.base_url, model="gpt-4o-2024-11-20"))
    update_s = _until_all(push, lambda s: s.config_dump().get("version") not in (None, old), "the update")
    FIGURES["update_to_ack_s"] = [round(x, 3) for x in update_s]
    print(
        f"\napply -> ACK on 3 sidecars: {FIGURES['apply_to_ack_s']}; update -> ACK: {FIGURES['update_to_ack_s']}"
    )
    models = {s.config_dump()["config"]["routes"][0]["backends"][0]["model"] for s in push.sidecars}
    assert models == {"gpt-4o-2024-11-20"}


def test_secret_rotation_and_route_deletion(push: Push) -> None:
    before = push.sidecars[0].config_dump()["version"]
    push.apply(secret(push.ns_a, "sk-rotated"))
    rotate_s = _until_all(push, lambda s: s.config_dump().get("version") not in (None, before), "rotated key")
    FIGURES["secret_rotation_to_ack_s"] = [round(x, 3) for x in rotate_s]
    for sidecar in push.sidecars:
        _ask(sidecar)
        assert push.provider.requests[-1].headers["authorization"] == "Bearer sk-rotated"
    assert "sk-rotated" not in str(push.sidecars[0].config_dump())  # /config_dump redacts

    push.kubectl.run("delete", "llmroute", "chat", "-n", push.ns_a)
    _until_all(push, lambda s: s.config_dump().get("version") and s.route_names() == [], "route removed")
    client = openai.OpenAI(base_url=push.sidecars[0].base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    push.apply(route(push.ns_a, push.provider.base_url))  # back, for the tests below
    _until_all(push, lambda s: s.route_names() == ["chat"], "route back")


def test_a_pod_label_change_pushes_the_new_config_without_a_reconnect(push: Push) -> None:
    # As the injection webhook labels an injected pod: the operator watches exactly those pods.
    token = make_pod(push.kubectl, push.ns_a, "relabel-me", {"app": "web", SIDECAR_LABEL: "injected"})
    sidecar = SidecarProcess("relabel-me", push.ns_a, token, push.operator.config_port, push.ca, push.workdir)
    sidecar.start()
    try:
        poll(
            lambda: sidecar.config_dump().get("version"),
            timeout=60,
            what="the relabelled pod's sidecar connected",
        )
        assert sidecar.route_names() == []  # app=web: the route selects app=chat
        started = time.monotonic()
        push.kubectl.run("label", "pod", "relabel-me", "-n", push.ns_a, "app=chat", "--overwrite")
        poll(lambda: sidecar.route_names() == ["chat"], what="the route after the label change")
        FIGURES["label_change_to_config_s"] = round(time.monotonic() - started, 3)
        poll(
            lambda: (_route_status(push).get("sidecars") or {}).get("matched") == 4,
            what="the route's status counts the relabelled pod",
        )
        assert "reconnecting" not in sidecar.log.read_text()  # one stream throughout
        push.kubectl.run("label", "pod", "relabel-me", "-n", push.ns_a, "app=web", "--overwrite")
        poll(lambda: sidecar.route_names() == [], what="the route gone after the label is removed")
    finally:
        sidecar.stop()
        push.kubectl.run("delete", "pod", "relabel-me", "-n", push.ns_a, "--wait=false")
    poll(
        lambda: (_route_status(push).get("sidecars") or {}).get("matched") == 3,
        what="the route's status back to the three sidecars",
    )


def test_cross_namespace_attack_is_refused(push: Push) -> None:
    token_b = make_pod(push.kubectl, push.ns_b, "intruder", {"app": "chat"})
    client = RawClient(push.operator.config_port, push.ca, token_b)
    try:
        # A valid token of namespace B claiming to be a pod of namespace A.
        with pytest.raises(grpc.RpcError) as denied:
            client.first_config(dpb.Node(id="x", namespace=push.ns_a, pod_name="chat-0"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to" in (denied.value.details() or "")
        # Without false claims it gets its own namespace only: no route, no credentials of A.
        own = client.first_config(dpb.Node(id="x"))
        assert own.config.namespace == push.ns_b and not own.config.routes and not own.config.credentials
    finally:
        client.close()
    for token, code in (
        ("garbage", grpc.StatusCode.UNAUTHENTICATED),
        (token_b[:-4] + "AAAA", grpc.StatusCode.UNAUTHENTICATED),  # a forged signature
        (mint_token(push.kubectl, push.ns_a, "chat-0", audience="other"), grpc.StatusCode.UNAUTHENTICATED),
    ):
        forged = RawClient(push.operator.config_port, push.ca, token)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                forged.first_config(dpb.Node(id="y", namespace=push.ns_a))
            assert refused.value.code() == code
        finally:
            forged.close()
    # A token not bound to a pod (a plain ServiceAccount token) is refused too.
    unbound = push.kubectl.run(
        "create", "token", "app", "-n", push.ns_a, "--audience", "llmroute"
    ).stdout.strip()
    plain = RawClient(push.operator.config_port, push.ca, unbound)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            plain.first_config(dpb.Node(id="z"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        plain.close()


def _budget_status(push: Push, name: str) -> dict[str, Any]:
    return status_of(push.kubectl, "llmbudgets", push.ns_a, name)


def test_usage_counts_once_survives_restart_and_leases_fit(push: Push) -> None:
    push.apply(budget(push.ns_a, "metered", "{tenant: meter}"))
    token = make_pod(push.kubectl, push.ns_a, "meter", {"app": "meter"})
    client = RawClient(push.operator.config_port, push.ca, token)
    first = batch("meter-1", 1, ("m-1", "chat", 1_250_000))
    first.records[0].tenant = "meter"
    try:
        assert client.report("meter-1", [first, first, first], until=1) == 1
        assert client.report("meter-1", [first], until=1) == 1  # a resend on a new stream
    finally:
        client.close()
    status = poll(
        lambda: _budget_status(push, "metered").get("spent") == "1.25" and _budget_status(push, "metered"),
        what="spent 1.25",
    )
    assert status["remaining"] == "8.75" and status["state"] == "Normal"
    assert status["periodStart"].endswith("T00:00:00Z") and status["resetAt"].endswith("T00:00:00Z")
    assert float(status["forecast"]) >= 1.25

    # Allowance leases: the sum of grants never exceeds the remainder (8.75).
    client = RawClient(push.operator.config_port, push.ca, token)
    try:

        def lease() -> Any:
            try:
                return client.lease("meter-1", "metered", 4_000_000)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return None

        # The three sidecars of the fixture hold a first step of allowance each (0.5% of the limit).
        held = poll(
            lambda: _budget_status(push, "metered").get("outstandingAllowance") == "0.15",
            what="sidecars' own leases recorded",
        )
        assert held
        grants = [poll(lease, timeout=60, interval=0.5, what="lease")]
        grants += [client.lease(f"meter-{i}", "metered", 4_000_000) for i in (2, 3, 4)]
    finally:
        client.close()
    granted = [g.granted_micro_usd for g in grants]
    assert granted == [4_000_000, 4_000_000, 600_000, 0], granted
    assert sum(granted) + 150_000 <= 8_750_000
    FIGURES["lease_grants_micro_usd"] = granted

    # Restart: spend is neither lost nor reset, and a resent batch still counts once.
    FIGURES["operator_restart_ready_s"] = push.restart_operator()
    assert _budget_status(push, "metered")["spent"] == "1.25"
    client = RawClient(push.operator.config_port, push.ca, token)
    second = batch("meter-1", 2, ("m-2", "chat", 500_000))
    second.records[0].tenant = "meter"
    try:
        assert client.report("meter-1", [second, second], until=2) == 2
        # What the previous run leased (all of the remainder) stays reserved for a lease lifetime.
        assert _budget_status(push, "metered")["outstandingAllowance"] == "8.75"  # 8.6 + the sidecars' 0.15
        assert client.lease("meter-1", "metered", 1).granted_micro_usd == 0
    finally:
        client.close()
    poll(lambda: _budget_status(push, "metered").get("spent") == "1.75", what="spent 1.75 after restart")


def test_killed_operator_sidecars_keep_serving_and_deliver_buffered_usage(push: Push) -> None:
    push.apply(budget(push.ns_a, "chat-spend", "{routes: [chat]}", soft="0.001", hard="1000"))
    poll(lambda: _budget_status(push, "chat-spend").get("periodStart"), what="budget tracked")
    for sidecar in push.sidecars:
        _ask(sidecar)

    def settled() -> str | None:  # the same spend twice, a second apart: nothing in flight
        first = _budget_status(push, "chat-spend").get("spent")
        time.sleep(1.0)
        return (
            first if first is not None and first == _budget_status(push, "chat-spend").get("spent") else None
        )

    before = round(float(poll(settled, what="spend settled")) * 1_000_000)
    # Past the soft limit: the state is pushed to every sidecar.
    _until_all(
        push,
        lambda s: any(
            b.get("state") == "BUDGET_STATE_SOFT_LIMITED"
            for b in (s.config_dump().get("config") or {}).get("budgets", [])
        ),
        "SoftLimited pushed",
    )
    version = push.sidecars[0].config_dump()["version"]

    assert push.operator.process is not None
    push.operator.process.kill()
    push.operator.process.wait(timeout=10)
    spent = 0
    for _ in range(2):
        for sidecar in push.sidecars:
            spent += _ask(sidecar)  # served from the last good config
    dumps = [sidecar.config_dump() for sidecar in push.sidecars]
    assert {d["version"] for d in dumps} == {version}
    FIGURES["usage_buffered_while_down"] = [d["usage_buffered"] for d in dumps]
    started = time.monotonic()
    FIGURES["operator_after_kill_ready_s"] = push.start_operator()
    poll(
        lambda: (
            round(float(_budget_status(push, "chat-spend").get("spent") or 0) * 1_000_000) == before + spent
        ),
        timeout=60,
        interval=0.2,
        what=f"buffered usage delivered ({before} + {spent} micro-USD)",
    )
    FIGURES["restart_to_usage_counted_s"] = round(time.monotonic() - started, 2)
    assert all(s.config_dump()["usage_buffered"] == 0 for s in push.sidecars)
    time.sleep(1.5)  # and not counted twice
    assert round(float(_budget_status(push, "chat-spend")["spent"]) * 1_000_000) == before + spent
    poll(lambda: (_route_status(push).get("sidecars") or {}).get("synced") == 3, what="all sidecars back")

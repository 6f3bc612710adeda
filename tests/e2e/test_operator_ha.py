"""Two operator replicas, both Ready and both serving; each killed in turn under traffic.

A real kube-apiserver, two ``llmroute-operator`` child processes run as in a cluster (no ``--dev``:
TLS from files, leader election on a Lease, each with a projected-style token bound to a Pod of the
operator's ServiceAccount for its peer reports), three real ``llmroute-sidecar --operator``
processes whose gRPC target lists both replicas in different orders (so some sidecars are served by
the replica that does not lead, which forwards their usage and allowance calls), one fake OpenAI
provider, and the official ``openai`` SDK sending requests the whole time. The test:

1. both replicas report Ready; exactly one leads; ``LLMRoute.status.sidecars`` counts the sidecars
   of both replicas (the other replica's peer report);
2. stops the leader (SIGTERM, as a rolling update does): the other replica leads, sidecars keep
   being served, and a new route reaches every sidecar and is Programmed 3/3;
3. starts it again and stops the other one: the same, the other way round;
4. SIGKILLs the replica that does not lead: nothing is lost either;
5. every request succeeded, and the budget's ``status.spent`` equals, to the micro-dollar, the sum
   of the ``x-llmroute-cost-usd`` every answer carried: no usage lost, none counted twice.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_operator.certs import make_dev_certificates
from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl
from llmroute_proto.v1 import peers_pb2 as ppb
from llmroute_proto.v1 import peers_pb2_grpc as ppb_grpc

from .ha_support import leaders, operator_replicas, spread_sidecar
from .operator_process import OperatorProcess, status_of
from .push_support import SidecarProcess, make_pod, poll
from .test_operator_core import apply_crds

pytestmark = pytest.mark.e2e

LEASE = "llmroute-ha-e2e"
FIGURES: dict[str, Any] = {}


def _resources(namespace: str, endpoint: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {namespace}}}
stringData: {{apiKey: sk-test}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: {namespace}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: UTC}}
  limits: {{hard: "1000"}}
---
{_route(namespace, "chat", endpoint)}
"""


def _route(namespace: str, name: str, endpoint: str) -> str:
    return json.dumps(
        {
            "apiVersion": "llmroute.io/v1alpha1",
            "kind": "LLMRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "workloadSelector": {"matchLabels": {"app": "chat"}},
                "models": [{"name": name, "backends": ["primary"]}],
                "backends": [
                    {
                        "name": "primary",
                        "provider": "openai",
                        "model": "gpt-4o",
                        "endpoint": endpoint,
                        "region": "us-east-1",
                        "credentialsRef": {"name": "openai", "key": "apiKey"},
                        "pricing": {"inputPerMillion": 1000, "outputPerMillion": 1000},
                    }
                ],
            },
        }
    )


@dataclass
class Traffic:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    cost_micro: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def drive(self, sidecar: SidecarProcess) -> None:
        client = openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0, timeout=30)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat",
                    messages=[
                        {"role": "user", "content": f"{sidecar.name} request {i} " + "word " * (i % 5)}
                    ],
                    max_tokens=20,
                )
            except openai.APIError as exc:
                with self.lock:
                    self.failed.append(f"{sidecar.name}: {exc!r}")
                time.sleep(0.05)
                continue
            cost = round(float(raw.headers["x-llmroute-cost-usd"]) * 1_000_000)
            with self.lock:
                self.ok += 1
                self.cost_micro += cost
            time.sleep(0.01)


@dataclass
class Stack:
    kubectl: Kubectl
    namespace: str
    replicas: list[OperatorProcess]
    sidecars: list[SidecarProcess]
    provider: FakeProvider
    ca: Path


@pytest.fixture(scope="module")
def stack(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kubectl = cluster.kubectl
    apply_crds(kubectl)
    namespace = cluster.create_namespace("ha")
    workdir = tmp_path_factory.mktemp("ha")
    ca, cert, key = make_dev_certificates().write(workdir / "tls")
    for account in ("app", "llmroute-operator"):
        kubectl.run("create", "serviceaccount", account, "-n", namespace)
    provider = FakeProvider("openai")
    provider.start_in_thread()
    replicas = operator_replicas(cluster, namespace, workdir, (ca, cert, key), lease=LEASE)
    kubectl.run("apply", "-f", "-", input=_resources(namespace, provider.base_url))
    state = Stack(kubectl, namespace, replicas, [], provider, ca)
    try:
        yield state
    finally:
        for sidecar in state.sidecars:
            sidecar.stop()
        for replica in replicas:
            if replica.stop() not in (0, None, -9):
                print(replica.tail())
        provider.stop_thread()
        print(f"\noperator HA figures: {FIGURES}")
        cluster.delete_namespace(namespace)


def _leaders(stack: Stack) -> list[int]:
    return leaders(stack.replicas)


def _lease_holder(stack: Stack) -> str:
    lease = stack.kubectl.json("get", "lease", LEASE, "-n", stack.namespace)
    return str(lease["spec"].get("holderIdentity") or "")


def _programmed(stack: Stack, route: str, count: int) -> bool:
    status = status_of(stack.kubectl, "llmroutes", stack.namespace, route)
    return (status.get("sidecars") or {}).get("summary") == f"{count}/{count}"


def _hand_over(stack: Stack, stopping: int, *, endpoint: str, new_route: str) -> tuple[float, float]:
    """Stop replica ``stopping`` (the leader) with SIGTERM: seconds until the other leads, and until
    the stopped one exited."""
    other = 1 - stopping
    assert _leaders(stack) == [stopping]
    process = stack.replicas[stopping].process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    poll(lambda: _leaders(stack) == [other], timeout=30, interval=0.05, what=f"replica {other} leading")
    took = time.monotonic() - started
    assert process.wait(timeout=30) == 0, stack.replicas[stopping].tail()
    exited = time.monotonic() - started
    stack.kubectl.run("apply", "-f", "-", input=_route(stack.namespace, new_route, endpoint))
    poll(
        lambda: all(new_route in s.route_names() for s in stack.sidecars),
        timeout=60,
        what=f"{new_route} on every sidecar after the hand-over",
    )
    poll(lambda: _programmed(stack, new_route, 3), timeout=30, what=f"{new_route} Programmed 3/3")
    return round(took, 2), round(exited, 2)


def test_each_replica_killed_in_turn_loses_and_doubles_nothing(stack: Stack) -> None:
    first, second = stack.replicas
    first.start()
    first.wait_ready()
    second.start()
    second.wait_ready()
    poll(lambda: len(_leaders(stack)) == 1, timeout=30, what="one leader")
    assert _leaders(stack) == [0]
    assert first.get("/readyz")[0] == 200 and second.get("/readyz")[0] == 200  # both Ready
    assert first.process is not None and f"/{first.process.pid}-" in _lease_holder(stack)

    orders = [(0, 1), (1, 0), (1, 0)]  # two sidecars start on the replica that does not lead
    for i, order in enumerate(orders):
        sidecar = spread_sidecar(
            stack.kubectl, stack.namespace, f"app-{i}", stack.replicas, order,
            ca=stack.ca, workdir=stack.replicas[0].log.parent,
        )  # fmt: skip
        stack.sidecars.append(sidecar.start())
    poll(
        lambda: all(s.route_names() == ["chat"] for s in stack.sidecars),
        timeout=60,
        what="chat on every sidecar",
    )
    # The leader sees one sidecar itself and two through the other replica's report.
    poll(lambda: _programmed(stack, "chat", 3), timeout=30, what="chat Programmed 3/3 across both replicas")

    traffic = Traffic()
    drivers = [threading.Thread(target=traffic.drive, args=(s,), daemon=True) for s in stack.sidecars]
    for thread in drivers:
        thread.start()
    try:
        poll(lambda: traffic.ok >= 60, timeout=60, what="traffic flowing")

        def forwarded(call: str) -> float:
            sample = f'llmroute_operator_forwarded_calls_total{{call="{call}",result="ok"}}'
            return second.metric(sample) or 0.0

        # Usage and allowance of the sidecars on the replica that does not lead reach the leader.
        poll(
            lambda: forwarded("usage") >= 2 and forwarded("lease") + forwarded("renew") >= 1,
            timeout=30,
            what="the replica that does not lead forwarding usage and allowance calls",
        )
        FIGURES["forwarded before the first hand-over"] = {
            c: forwarded(c) for c in ("usage", "lease", "renew")
        }
        FIGURES["first hand-over (lead, exit) s"] = _hand_over(
            stack, 0, endpoint=stack.provider.base_url, new_route="extra-1"
        )
        first.start()
        first.wait_ready()
        assert _leaders(stack) == [1]
        poll(lambda: traffic.ok >= 200, timeout=60, what="traffic after the first hand-over")
        FIGURES["second hand-over (lead, exit) s"] = _hand_over(
            stack, 1, endpoint=stack.provider.base_url, new_route="extra-2"
        )
        second.start()
        second.wait_ready()
        seen = traffic.ok
        poll(lambda: traffic.ok >= seen + 60, timeout=60, what="traffic with both replicas back")
        assert second.process is not None
        second.process.kill()  # the replica that does not lead dies abruptly
        second.process.wait(timeout=10)
        seen = traffic.ok
        poll(lambda: traffic.ok >= seen + 60, timeout=60, what="traffic after the SIGKILL")
    finally:
        traffic.stop.set()
        for thread in drivers:
            thread.join(timeout=30)

    assert traffic.failed == [], traffic.failed[:5]
    poll(
        lambda: all(
            (s.config_dump().get("usage_unacked"), s.config_dump().get("usage_buffered")) == (0, 0)
            for s in stack.sidecars
        ),
        timeout=60,
        what="every sidecar's usage acknowledged",
    )
    spent = round(float(status_of(stack.kubectl, "llmbudgets", stack.namespace, "team")["spent"]) * 1_000_000)
    FIGURES.update(requests=traffic.ok, answered_cost_micro=traffic.cost_micro, spent_micro=spent)
    assert spent == traffic.cost_micro


def test_only_the_operators_own_pods_may_report_as_peers(stack: Stack) -> None:
    leader = next(r for r in stack.replicas if r.alive() and r.metric("llmroute_operator_leader") == 1.0)
    token = make_pod(stack.kubectl, stack.namespace, "intruder", {"app": "other"})
    with (
        grpc.secure_channel(
            f"127.0.0.1:{leader.config_port}", grpc.ssl_channel_credentials(stack.ca.read_bytes())
        ) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        ppb_grpc.PeersStub(channel).ReportSync(
            ppb.SyncReport(replica="fake", ttl_seconds=10),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not an operator replica" in (refused.value.details() or "")

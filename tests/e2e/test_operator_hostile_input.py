"""A hostile sidecar against a running config server, end to end: a real kube-apiserver, ``llmroute-operator
--dev`` as a child process, and tokens that TokenReview vouches for (bound to Pod objects).

Pod ``mallory`` (namespace A) sends what no sidecar should: bytes that are not protobuf on every
method, a message over the server's limit, replayed batches, names of namespace B's budgets, another
pod's sidecar id, and impossible numbers. Meanwhile pod ``good`` (namespace B) keeps one config stream
and one usage stream open. After each attack the operator still serves ``good``, and namespace B's
spend (status and metric) is exactly what ``good`` reported. Figures are printed (run with ``-s``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl
from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import usage_pb2 as upb

from .operator_process import OperatorProcess, status_of, wait_for
from .push_support import RawClient, batch, chat_route, make_pod
from .stream_support import ConfigStream, UsageStream
from .test_operator_tls_reload import install_crds

pytestmark = pytest.mark.e2e

FIGURES: dict[str, Any] = {}
METHODS = {
    "/llmroute.v1.ConfigDiscovery/StreamConfig": "stream",
    "/llmroute.v1.UsageReporting/ReportUsage": "stream",
    "/llmroute.v1.Allowances/Lease": "unary",
    "/llmroute.v1.Allowances/Renew": "unary",
    "/llmroute.v1.Allowances/Return": "unary",
    "/llmroute.v1.Peers/ReportSync": "unary",
}
GARBAGE = (b"\xff\xff\xff\xff", b"\x0a\x10short", b"\x08")  # bad tag, truncated string, missing varint


def resources(namespace: str, model: str = "gpt-4o") -> str:
    return (
        chat_route(namespace, model)
        + f"""---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: {namespace}}}
spec:
  scope: {{namespace: true}}
  period: {{type: daily, timezone: UTC}}
  limits: {{soft: "500", hard: "1000"}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: chat-only, namespace: {namespace}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: UTC}}
  limits: {{hard: "1000"}}
"""
    )


@dataclass
class Arena:
    kubectl: Kubectl
    operator: OperatorProcess
    ca: Path
    ns_a: str
    ns_b: str
    mallory: str  # token of pod mallory in A
    good: str  # token of pod good in B
    config: ConfigStream  # good's
    usage: UsageStream  # good's
    sequence: int = 0
    good_micro: int = 0

    def raw(self, token: str) -> tuple[grpc.Channel, tuple[tuple[str, str], ...]]:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        channel = grpc.secure_channel(f"127.0.0.1:{self.operator.config_port}", credentials)
        return channel, (("authorization", f"Bearer {token}"),)

    def call(self, token: str, method: str, *messages: bytes, timeout: float = 10.0) -> grpc.StatusCode:
        """Send raw bytes on ``method``; the status it ends with (OK: it answered)."""
        channel, metadata = self.raw(token)
        try:
            if METHODS[method] == "unary":
                channel.unary_unary(method)(messages[0], metadata=metadata, timeout=timeout)
            else:
                for _ in channel.stream_stream(method)(iter(messages), metadata=metadata, timeout=timeout):
                    pass
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined, no-any-return]
        finally:
            channel.close()

    def usage_status(self, token: str, *batches: upb.UsageBatch) -> grpc.StatusCode:
        return self.call(
            token, "/llmroute.v1.UsageReporting/ReportUsage", *(b.SerializeToString() for b in batches)
        )

    def lease_status(self, token: str, request: apb.LeaseRequest) -> grpc.StatusCode:
        return self.call(token, "/llmroute.v1.Allowances/Lease", request.SerializeToString())

    def still_serves_good(self, what: str) -> None:
        """good's open streams are still served: a usage batch is acknowledged, a push arrives."""
        self.sequence += 1
        self.good_micro += 10_000
        record = batch("good-1", self.sequence, (f"good-{self.sequence}", "chat", 10_000))
        assert self.usage.send(record) == self.sequence, what
        self.kubectl.run("apply", "-f", "-", input=resources(self.ns_b, model=f"gpt-4o-{self.sequence}"))
        self.config.until_model(f"gpt-4o-{self.sequence}")  # on the stream good opened first
        assert self.operator.alive(), what

    def spent(self, namespace: str, budget: str) -> str | None:
        return status_of(self.kubectl, "llmbudgets", namespace, budget).get("spent")

    def refusals(self, call: str, code: str) -> float:
        sample = f'llmroute_operator_config_server_refusals_total{{call="{call}",code="{code}"}}'
        return self.operator.metric(sample) or 0.0


@pytest.fixture(scope="module")
def arena(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    kubectl = cluster.kubectl
    install_crds(kubectl)
    ns_a, ns_b = cluster.create_namespace("hostile-a"), cluster.create_namespace("hostile-b")
    for ns in (ns_a, ns_b):
        kubectl.run("create", "serviceaccount", "app", "-n", ns)
        kubectl.run("apply", "-f", "-", input=resources(ns))
    workdir = tmp_path_factory.mktemp("hostile")
    ca = workdir / "ca.pem"
    args = ["--dev", "--ca-out", str(ca), "--namespace", ns_a, "--namespace", ns_b]
    operator = OperatorProcess(cluster.kubeconfig, workdir / "operator.log", args)
    mallory = make_pod(kubectl, ns_a, "mallory", {"app": "chat"})
    good = make_pod(kubectl, ns_b, "good", {"app": "chat"})
    streams: list[Any] = []
    try:
        operator.start()
        operator.wait_ready()
        config = ConfigStream(operator.config_port, ca.read_bytes(), good, dpb.Node(id="good-1"))
        streams.append(config)
        config.until_model("gpt-4o")
        usage = UsageStream(operator.config_port, ca.read_bytes(), good)
        streams.append(usage)
        state = Arena(kubectl, operator, ca, ns_a, ns_b, mallory, good, config, usage)
        state.still_serves_good("before any attack")
        yield state
        # After everything: B's spend is exactly good's, in status and in the metric.
        expected = f"{state.good_micro / 1_000_000:g}"
        wait_for(lambda: state.spent(ns_b, "team") == expected, what=f"B spent {expected}")
        metric = operator.metric(f'llmroute_operator_budget_spent_usd{{budget="team",namespace="{ns_b}"}}')
        assert metric == pytest.approx(state.good_micro / 1_000_000)
        FIGURES["b_spent_usd"] = expected
        log = operator.tail(200_000)
        assert "Traceback" not in log, log[-4000:]
        FIGURES["good_batches_acked"] = state.sequence
    finally:
        for stream in streams:
            stream.close()
        if operator.stop() not in (0, None):
            print(operator.tail())
        print(f"\nhostile input figures: {FIGURES}")
        for ns in (ns_a, ns_b):
            cluster.delete_namespace(ns)


def test_bytes_that_are_not_protobuf_are_refused_on_every_method(arena: Arena) -> None:
    seen: dict[str, set[str]] = {}
    for method in METHODS:
        for garbage in GARBAGE:
            code = arena.call(arena.mallory, method, garbage)
            seen.setdefault(method.rsplit("/", 1)[1], set()).add(code.name)
    # Garbage after a valid hello, mid-stream.
    hello = dpb.ConfigRequest(node=dpb.Node(id="mallory-1")).SerializeToString()
    mid = arena.call(arena.mallory, "/llmroute.v1.ConfigDiscovery/StreamConfig", hello, b"\xff\xff")
    seen["StreamConfig, after a hello"] = {mid.name}
    FIGURES["garbage"] = {k: sorted(v) for k, v in seen.items()}
    assert all(codes == {"INVALID_ARGUMENT"} for codes in seen.values()), seen
    arena.still_serves_good("after garbage")


def test_a_message_over_the_limit_is_refused_and_other_streams_go_on(arena: Arena) -> None:
    huge = upb.UsageBatch(
        sidecar_id="mallory-1",
        sequence=1,
        records=[upb.UsageRecord(request_id="x" * (5 * 1024 * 1024), route="chat", cost_micro_usd=1)],
    )
    assert arena.usage_status(arena.mallory, huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
    big_lease = apb.LeaseRequest(sidecar_id="mallory-1", budget="team", request_id="y" * (5 * 1024 * 1024))
    assert arena.lease_status(arena.mallory, big_lease) == grpc.StatusCode.RESOURCE_EXHAUSTED
    FIGURES["over_limit"] = "RESOURCE_EXHAUSTED (usage stream and Lease, 5 MiB > 4 MiB)"
    arena.still_serves_good("after an oversized message")
    assert float(arena.spent(arena.ns_a, "team") or 0) == 0


def test_a_replayed_sequence_counts_once(arena: Arena) -> None:
    replayed = batch("mallory-1", 1, ("m-1", "chat", 250_000))
    client = RawClient(arena.operator.config_port, arena.ca, arena.mallory)
    try:
        assert client.report("mallory-1", [replayed] * 5, until=1) == 1
        assert client.report("mallory-1", [replayed], until=1) == 1  # again, on a new stream
        # The same records under a new sequence: de-duplicated by request id.
        assert client.report("mallory-1", [batch("mallory-1", 2, ("m-1", "chat", 250_000))], until=2) == 2
    finally:
        client.close()
    wait_for(lambda: arena.spent(arena.ns_a, "team") == "0.25", what="A spent 0.25 once")
    FIGURES["replay"] = "7 sends of one record -> A spent 0.25 (once)"
    arena.still_serves_good("after replays")


def test_names_of_another_namespace_are_refused_or_count_nowhere(arena: Arena) -> None:
    qualified = f"{arena.ns_b}/team"
    assert (
        arena.lease_status(arena.mallory, apb.LeaseRequest(sidecar_id="mallory-1", budget=qualified))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    foreign_budget = batch("mallory-2", 1, ("m-2", "chat", 5_000_000))
    foreign_budget.records[0].budgets.append(qualified)
    assert arena.usage_status(arena.mallory, foreign_budget) == grpc.StatusCode.PERMISSION_DENIED
    foreign_route = batch("mallory-3", 1, ("m-3", f"{arena.ns_b}/chat", 5_000_000))
    assert arena.usage_status(arena.mallory, foreign_route) == grpc.StatusCode.PERMISSION_DENIED
    # A plain name is always the caller's own namespace: B's budget of that name is not found in A.
    b_only = f"b-only-{int(time.time())}"
    arena.kubectl.run(
        "apply", "-f", "-", input=resources(arena.ns_b).split("---")[-1].replace("chat-only", b_only)
    )
    wait_for(lambda: status_of(arena.kubectl, "llmbudgets", arena.ns_b, b_only).get("state"), what="b-only")
    assert (
        arena.lease_status(arena.mallory, apb.LeaseRequest(sidecar_id="mallory-1", budget=b_only))
        == grpc.StatusCode.NOT_FOUND
    )
    FIGURES["other_namespace"] = {
        "lease 'B/team'": "PERMISSION_DENIED",
        "record budgets ['B/team']": "PERMISSION_DENIED",
        "record route 'B/chat'": "PERMISSION_DENIED",
        "lease of a budget only B has": "NOT_FOUND",
    }
    assert float(arena.spent(arena.ns_b, b_only) or 0) == 0
    arena.still_serves_good("after names of another namespace")


def test_a_sidecar_id_of_another_pod_is_refused(arena: Arena) -> None:
    stolen = batch("good-1", 99, ("m-4", "chat", 1_000_000))
    assert arena.usage_status(arena.mallory, stolen) == grpc.StatusCode.PERMISSION_DENIED
    lease = apb.LeaseRequest(sidecar_id="good-1", budget="team", requested_micro_usd=1)
    assert arena.lease_status(arena.mallory, lease) == grpc.StatusCode.PERMISSION_DENIED
    # Changing its id mid-stream is refused too.
    switch = [batch("mallory-5", 1, ("m-5", "chat", 1)), batch("good-1", 2, ("m-6", "chat", 1))]
    assert arena.usage_status(arena.mallory, *switch) == grpc.StatusCode.INVALID_ARGUMENT
    FIGURES["foreign_sidecar_id"] = "PERMISSION_DENIED (usage, lease); switching mid-stream INVALID_ARGUMENT"
    arena.still_serves_good("after a stolen sidecar id")


def _nan_where_tokens_go() -> bytes:
    """A UsageRecord whose input_tokens (field 11, a varint) arrives as a 64-bit NaN instead."""
    record = upb.UsageRecord(request_id="m-nan", route="chat", cost_micro_usd=1).SerializeToString()
    record += bytes([(11 << 3) | 1]) + struct.pack("<d", float("nan"))
    record += bytes([(14 << 3) | 1]) + struct.pack("<d", 1e308)  # cost as a double, too
    field = bytes([(3 << 3) | 2, len(record)]) + record
    head = upb.UsageBatch(sidecar_id="mallory-7", sequence=1).SerializeToString()
    return head + field


def test_impossible_numbers_are_refused_and_count_nowhere(arena: Arena) -> None:
    before = arena.spent(arena.ns_a, "team")
    refused: dict[str, str] = {}
    cases: dict[str, Callable[[], upb.UsageBatch]] = {
        "negative cost": lambda: batch("mallory-6", 1, ("m-7", "chat", -5_000_000)),
        "cost 2**63-1": lambda: batch("mallory-6", 1, ("m-8", "chat", 2**63 - 1)),
        "sequence 0": lambda: batch("mallory-6", 0, ("m-9", "chat", 1)),
    }
    for name, make in cases.items():
        refused[name] = arena.usage_status(arena.mallory, make()).name
    negative = apb.LeaseRequest(sidecar_id="mallory-1", budget="team", requested_micro_usd=-(10**12))
    refused["negative lease"] = arena.lease_status(arena.mallory, negative).name
    assert set(refused.values()) == {"INVALID_ARGUMENT"}, refused
    # 1.8e19 tokens are representable and harmless (the operator counts cost, not tokens) ...
    tokens = batch("mallory-8", 1, ("m-10", "chat", 1))
    tokens.records[0].input_tokens = tokens.records[0].output_tokens = 2**64 - 1
    client = RawClient(arena.operator.config_port, arena.ca, arena.mallory)
    try:
        assert client.report("mallory-8", [tokens], until=1) == 1
    finally:
        client.close()
    # ... and a NaN or 1e308 in a varint field is not that field: protobuf keeps it as an unknown field.
    nan = arena.call(
        arena.mallory, "/llmroute.v1.UsageReporting/ReportUsage", _nan_where_tokens_go(), timeout=3
    )
    refused["NaN tokens / 1e308 cost (as doubles)"] = (
        f"{nan.name} (acked; unknown fields, cost counted 1 micro-USD)"
    )
    refused["2**64-1 tokens, cost 1 micro-USD"] = "accepted"
    FIGURES["numbers"] = refused
    expected = f"{float(before or 0) + 0.000002:g}"
    wait_for(lambda: arena.spent(arena.ns_a, "team") == expected, what=f"A spent {expected}")
    assert arena.refusals("usage", "INVALID_ARGUMENT") >= 3
    arena.still_serves_good("after impossible numbers")

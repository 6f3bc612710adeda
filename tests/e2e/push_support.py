"""Helpers of the config-push e2e tests: Pods with bound tokens, sidecar processes, a raw gRPC client.

Sidecars run as real ``llmroute-sidecar --operator`` processes on free loopback ports, each with a
token minted by ``kubectl create token --bound-object-kind Pod`` for a Pod object of the test (no
kubelet runs, so the Pods stay Pending; the API server still binds tokens to them and TokenReview
reports their name and uid). :class:`RawClient` speaks the config server's protocol directly, for
the attacks a real sidecar would never make and for driving usage and leases precisely.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from llmroute_operator.devcluster.kubectl import Kubectl
from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import allowance_pb2_grpc as apb_grpc
from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import usage_pb2 as upb
from llmroute_proto.v1 import usage_pb2_grpc as upb_grpc

from .operator_process import free_port


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def make_pod(kubectl: Kubectl, namespace: str, name: str, labels: dict[str, str], sa: str = "app") -> str:
    """Create a Pod object (it stays Pending) and mint an ``llmroute`` token bound to it."""
    kubectl.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "serviceAccountName": sa,
                "containers": [{"name": "app", "image": "example.test/app:1"}],
            },
        }
    )
    return mint_token(kubectl, namespace, name, sa=sa)


def mint_token(
    kubectl: Kubectl, namespace: str, pod: str, *, sa: str = "app", audience: str = "llmroute"
) -> str:
    result = kubectl.run(
        "create", "token", sa, "-n", namespace, "--audience", audience,
        "--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration", "1h",
    )  # fmt: skip
    return result.stdout.strip()


@dataclass
class SidecarProcess:
    """One ``llmroute-sidecar --operator`` child process."""

    name: str
    namespace: str
    token: str
    operator_port: int
    ca: Path
    workdir: Path
    http_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()  # more llmroute-sidecar flags, e.g. --redis-url
    operator_target: str = ""  # a gRPC target instead of 127.0.0.1:operator_port (several replicas)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"sidecar-{self.name}.log"

    def start(self) -> SidecarProcess:
        token_file = self.workdir / f"token-{self.name}"
        token_file.write_text(self.token)
        command = [
            sys.executable, "-m", "llmroute_sidecar",
            "--operator", self.operator_target or f"127.0.0.1:{self.operator_port}",
            "--token-file", str(token_file), "--ca-file", str(self.ca),
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
            "--admin-addr", f"127.0.0.1:{self.admin_port}",
            "--operator-backoff-max", "2",
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "POD_NAME": self.name, "POD_NAMESPACE": self.namespace, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )
        return self

    def config_dump(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}/config_dump", timeout=2
            ) as answer:
                return dict(json.loads(answer.read()))
        except OSError:
            return {}

    def route_names(self) -> list[str]:
        config = self.config_dump().get("config") or {}
        return [r["name"] for r in config.get("routes", [])]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class RawClient:
    """The config server's three services, called directly (sync gRPC)."""

    def __init__(self, port: int, ca: Path, token: str) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def close(self) -> None:
        self.channel.close()

    def first_config(self, node: dpb.Node, *, timeout: float = 15.0) -> dpb.ConfigResponse:
        """Open a discovery stream as ``node``; the first pushed config (or the refusal, raised)."""
        requests: queue.Queue[dpb.ConfigRequest | None] = queue.Queue()
        requests.put(dpb.ConfigRequest(node=node))

        def send() -> Iterator[dpb.ConfigRequest]:
            while (item := requests.get()) is not None:
                yield item

        stream = dpb_grpc.ConfigDiscoveryStub(self.channel).StreamConfig(
            send(), metadata=self.metadata, timeout=timeout
        )
        try:
            return next(iter(stream))
        finally:
            requests.put(None)
            stream.cancel()

    def report(
        self, sidecar_id: str, batches: Sequence[upb.UsageBatch], *, until: int, timeout: float = 30.0
    ) -> int:
        """Send ``batches`` on one usage stream; wait for an ack of at least ``until``; the ack."""
        requests: queue.Queue[upb.UsageBatch | None] = queue.Queue()
        for batch in batches:
            requests.put(batch)

        def send() -> Iterator[upb.UsageBatch]:
            while (item := requests.get()) is not None:
                yield item

        stream = upb_grpc.UsageReportingStub(self.channel).ReportUsage(
            send(), metadata=self.metadata, timeout=timeout
        )
        acked = 0
        try:
            for ack in stream:
                acked = ack.acked_sequence
                if acked >= until:
                    break
        finally:
            requests.put(None)
            stream.cancel()
        return acked

    def lease(self, sidecar_id: str, budget: str, micro: int) -> apb.LeaseGrant:
        stub = apb_grpc.AllowancesStub(self.channel)
        return stub.Lease(
            apb.LeaseRequest(sidecar_id=sidecar_id, budget=budget, requested_micro_usd=micro),
            metadata=self.metadata,
            timeout=10,
        )


def batch(sidecar_id: str, sequence: int, *costs: tuple[str, str, int]) -> upb.UsageBatch:
    """A usage batch of (request id, route, micro-USD) records, started now."""
    records = []
    for request_id, route, micro in costs:
        record = upb.UsageRecord(request_id=request_id, route=route, cost_micro_usd=micro)
        record.started_at.GetCurrentTime()
        records.append(record)
    return upb.UsageBatch(sidecar_id=sidecar_id, sequence=sequence, records=records)


def poll(predicate: Any, *, timeout: float = 30.0, interval: float = 0.02, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def chat_route(namespace: str, model: str = "gpt-4o", *, endpoint: str = "http://127.0.0.1:9/v1") -> str:
    """The Secret and the LLMRoute ``chat`` (pods with app=chat) that the config-server tests push:
    one OpenAI backend; its ``model`` is what a test changes to make a new config."""
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {namespace}}}
stringData: {{apiKey: sk-unused}}
---
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
    credentialsRef: {{name: openai, key: apiKey}}
    pricing: {{inputPerMillion: 1, outputPerMillion: 1}}
"""

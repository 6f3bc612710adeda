"""One ``llmroute-operator --dev`` and a few real sidecars in a fresh namespace, for e2e tests of a
feature on the usage path (experiments, abuse Events): the Secret ``openai`` (key ``apiKey``), the
test's resources applied once the webhook accepts them, one Pod (and its token) per sidecar with the
label ``app: chat``, and a shared real Redis. Everything is stopped and the namespace deleted after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl
from tests.redis_support import RedisServer, require_redis_server

from .operator_process import OperatorProcess
from .push_support import SidecarProcess, make_pod, poll

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DevStack:
    kubectl: Kubectl
    namespace: str
    operator: OperatorProcess
    provider: FakeProvider
    sidecars: list[SidecarProcess] = field(default_factory=list)


@contextlib.contextmanager
def dev_stack(
    cluster: target.Cluster,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    resources: Callable[[str, str], str],
    *,
    sidecars: int,
    routes: list[str],
) -> Iterator[DevStack]:
    """``resources(namespace, provider base URL)`` is the YAML to apply; ``routes`` the route names
    every sidecar must run before the test starts."""
    kubectl = cluster.kubectl
    kubectl.apply_crds(ROOT / "crds")
    namespace = cluster.create_namespace(name)
    kubectl.run("create", "serviceaccount", "app", "-n", namespace)
    workdir = tmp_path_factory.mktemp(name)
    ca = workdir / "ca.pem"
    redis = RedisServer(require_redis_server())
    redis.start()
    provider = FakeProvider("openai")
    provider.start_in_thread()
    operator = OperatorProcess(
        cluster.kubeconfig, workdir / "operator.log", ["--dev", "--ca-out", str(ca), "--namespace", namespace]
    )
    stack = DevStack(kubectl, namespace, operator, provider)
    try:
        operator.start()
        operator.wait_ready()
        secret = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: openai, namespace: {namespace}}}\n"
        kubectl.run("apply", "-f", "-", input=secret + "stringData: {apiKey: sk-test}\n")
        manifest = resources(namespace, provider.base_url)
        # The webhook checks the Secret in the operator's index, which its watch fills a moment later.
        poll(
            lambda: kubectl.run("apply", "-f", "-", input=manifest, check=False).returncode == 0,
            timeout=30,
            interval=0.3,
            what="the resources accepted",
        )
        for i in range(sidecars):
            token = make_pod(kubectl, namespace, f"app-{i}", {"app": "chat"})
            sidecar = SidecarProcess(
                f"app-{i}", namespace, token, operator.config_port, ca, workdir,
                extra_args=("--redis-url", redis.url, "--audit-log", "off"),
            )  # fmt: skip
            stack.sidecars.append(sidecar.start())
        poll(
            lambda: all(sorted(s.route_names()) == sorted(routes) for s in stack.sidecars),
            timeout=60,
            what="the routes on every sidecar",
        )
        yield stack
    finally:
        for sidecar in stack.sidecars:
            sidecar.stop()
        if operator.stop() not in (0, None):
            print(operator.tail())
        provider.stop_thread()
        redis.close()
        cluster.delete_namespace(namespace)

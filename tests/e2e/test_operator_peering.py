"""Two operator replicas with kopf peering: one leads and writes status, the other waits, and takes
over when the leader stops. Run without ``--dev`` (TLS from files, webhooks not registered), as in
a cluster, against the ``KopfPeering`` CRD from ``crds/kopf-peering.yaml``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmroute_operator.certs import make_dev_certificates
from llmroute_operator.devcluster import target

from .operator_process import OperatorProcess, status_of, wait_for
from .test_operator_core import apply_crds

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicas(cluster: target.Cluster, namespace: str, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    apply_crds(cluster.kubectl)
    ca, cert, key = make_dev_certificates().write(tmp_path / "tls")
    args = [
        "--namespace",
        namespace,
        "--peering",
        "llmroute-e2e",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--tls-ca",
        str(ca),
    ]
    started = [OperatorProcess(cluster.kubeconfig, tmp_path / f"replica-{i}.log", args) for i in range(2)]
    try:
        yield started
    finally:
        for replica in started:
            if replica.stop() not in (0, None):
                print(replica.tail())


def _route(namespace: str, models: list[str]) -> str:
    return json.dumps(
        {
            "apiVersion": "llmroute.io/v1alpha1",
            "kind": "LLMRoute",
            "metadata": {"name": "shared", "namespace": namespace},
            "spec": {
                "models": [{"name": m, "backends": ["local"]} for m in models],
                "backends": [
                    {
                        "name": "local",
                        "provider": "openai-compatible",
                        "model": "m",
                        "endpoint": "http://vllm:8000/v1",
                    }
                ],
            },
        }
    )


def test_one_replica_leads_and_the_other_takes_over(
    cluster: target.Cluster, namespace: str, replicas: list[OperatorProcess]
) -> None:
    kubectl = cluster.kubectl
    first, second = replicas
    kubectl.run("apply", "-f", "-", input=_route(namespace, ["a"]))
    first.start()
    first.wait_ready()
    second.start()
    wait_for(lambda: second.get("/healthz")[0] == 200, what="the second replica's /healthz")

    peering = wait_for(
        lambda: (
            len(s := kubectl.json("get", "kopfpeering", "llmroute-e2e", "-n", namespace).get("status") or {})
            == 2
            and s
        ),
        what="both replicas in the KopfPeering",
    )
    assert len(peering) == 2
    wait_for(
        lambda: second.metric("llmroute_operator_leader") == 0.0, what="the second replica's leader gauge"
    )
    code, body = second.get("/readyz")
    assert code == 503 and "standby" in body
    assert first.metric("llmroute_operator_leader") == 1.0

    kubectl.run("apply", "-f", "-", input=_route(namespace, ["a", "b"]))
    wait_for(
        lambda: status_of(kubectl, "llmroutes", namespace, "shared").get("observedGeneration") == 2,
        what="the leader's status write",
    )
    time.sleep(2.5)  # a full resync period: a standby that wrote would show it now
    assert not second.metric('llmroute_operator_status_writes_total{kind="LLMRoute",result="ok"}')
    assert (first.metric('llmroute_operator_status_writes_total{kind="LLMRoute",result="ok"}') or 0) >= 1

    stopped = time.monotonic()
    assert first.stop() == 0, first.tail()
    second.wait_ready(timeout=60)
    takeover = time.monotonic() - stopped
    print(f"\nstandby took over {takeover:.2f}s after the leader stopped")
    kubectl.run("apply", "-f", "-", input=_route(namespace, ["a", "b", "c"]))
    wait_for(
        lambda: (
            (s := status_of(kubectl, "llmroutes", namespace, "shared")).get("observedGeneration") == 3
            and s.get("models") == "a,b,c"
        ),
        what="the new leader's status write",
    )
    assert second.metric("llmroute_operator_leader") == 1.0

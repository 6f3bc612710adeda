"""Two or more operator replicas run as in a cluster, and sidecars spread over them, for the HA tests.

Shared by ``tests/e2e/test_operator_ha.py`` and ``tests/reliability/test_control_plane_faults.py``:
replicas with TLS from files, leader election on a Lease and a projected-style token bound to a Pod
of the operator's ServiceAccount (for their peer reports); sidecars whose gRPC target lists the
replicas in a chosen order, so a test decides which replica serves which sidecar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl

from .operator_process import OperatorProcess
from .push_support import SidecarProcess, make_pod

OPERATOR_ACCOUNT = "llmroute-operator"


def operator_replicas(
    cluster: target.Cluster,
    namespace: str,
    workdir: Path,
    tls: tuple[Path, Path, Path],
    *,
    lease: str,
    count: int = 2,
    extra_args: Sequence[str] = (),
) -> list[OperatorProcess]:
    """``count`` replicas (not started) watching ``namespace``; ``tls`` is (ca, cert, key) files.
    The ServiceAccount ``llmroute-operator`` must exist in ``namespace``."""
    ca, cert, key = tls
    replicas = []
    for i in range(count):
        token = make_pod(
            cluster.kubectl, namespace, f"operator-{i}", {"app": OPERATOR_ACCOUNT}, sa=OPERATOR_ACCOUNT
        )
        token_file = workdir / f"operator-{i}.token"
        token_file.write_text(token)
        replica = OperatorProcess(cluster.kubeconfig, workdir / f"operator-{i}.log")
        replica.args = [
            "--namespace", namespace,
            "--leader-lease", lease, "--leader-lease-namespace", namespace,
            "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca),
            "--advertise-address", f"127.0.0.1:{replica.config_port}",
            "--peer-token-file", str(token_file), "--peer-service-account", OPERATOR_ACCOUNT,
            *extra_args,
        ]  # fmt: skip
        replicas.append(replica)
    return replicas


def leaders(replicas: Sequence[OperatorProcess]) -> list[int]:
    """Indexes of the live replicas whose metrics say they lead (one, in a healthy set)."""
    return [i for i, r in enumerate(replicas) if r.alive() and r.metric("llmroute_operator_leader") == 1.0]


def spread_sidecar(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    replicas: Sequence[OperatorProcess],
    order: Sequence[int],
    *,
    ca: Path,
    workdir: Path,
) -> SidecarProcess:
    """A sidecar (not started) for a new Pod ``name`` (label app=chat), dialling the replicas in
    ``order``: it connects to the first that answers."""
    token = make_pod(kubectl, namespace, name, {"app": "chat"})
    ports = [r.config_port for r in replicas]
    return SidecarProcess(
        name, namespace, token, ports[order[0]], ca, workdir,
        extra_args=("--operator-server-name", "localhost", "--audit-log", "off"),
        operator_target="ipv4:" + ",".join(f"127.0.0.1:{ports[j]}" for j in order),
    )  # fmt: skip

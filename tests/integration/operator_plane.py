"""An operator control plane without a cluster, for integration tests and the propagation benchmark.

The real :class:`ConfigHub`, :class:`BudgetService` and :class:`ConfigServer` (gRPC over TLS on
loopback), fed by a real :class:`ClusterIndex`. Only the Kubernetes API is replaced, by
:class:`FakeKube`: a table of tokens (what TokenReview would answer) and Pods. Sidecars are real
:class:`Sidecar` objects in operator mode.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmroute_operator.budgets import BudgetService
from llmroute_operator.configserver import ConfigHub, ConfigServer, ServerTls
from llmroute_operator.contracts import BudgetReport
from llmroute_operator.devcluster.pki import Pki, write_pki
from llmroute_operator.index import ClusterIndex
from llmroute_operator.settings import OperatorSettings
from llmroute_proto.api.loader import load_text
from llmroute_sidecar.operator_client import Backoff, ClientSettings, NodeInfo
from llmroute_sidecar.runtime import Settings, Sidecar

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True)
class FakeReview:
    authenticated: bool
    username: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)
    error: str = ""


class FakeKube:
    """What TokenReview and GET pod would answer. Only tokens registered here authenticate."""

    def __init__(self) -> None:
        self.tokens: dict[str, FakeReview] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.reviews = 0

    def add_pod(self, namespace: str, name: str, labels: Mapping[str, str], *, sa: str = "app") -> str:
        """Create a pod and a token bound to it; returns the token."""
        uid = f"uid-{namespace}-{name}"
        self.pods[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": dict(labels)}
        }
        token = f"token-{namespace}-{name}-{len(self.tokens)}"
        self.tokens[token] = FakeReview(
            authenticated=True,
            username=f"system:serviceaccount:{namespace}:{sa}",
            extra={POD_NAME_EXTRA: [name], POD_UID_EXTRA: [uid]},
        )
        return token

    async def token_review(self, token: str, audience: str) -> FakeReview:
        self.reviews += 1
        assert audience == "llmroute"
        return self.tokens.get(token, FakeReview(authenticated=False, error="invalid bearer token"))

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.pods[(namespace, name)]
        except KeyError:
            raise LookupError(name) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def apply(index: ClusterIndex, text: str) -> None:
    """Put LLMRoutes, LLMBudgets and Secrets from YAML into the index, as the kopf handlers would."""
    found = load_text(text)
    for route in found.routes:
        index.put_route(str(route.metadata["namespace"]), str(route.metadata["name"]), route)
    for budget in found.budgets:
        index.put_budget(str(budget.metadata["namespace"]), str(budget.metadata["name"]), budget)
    for secret in found.secrets:
        index.put_secret(secret.namespace, secret.name, secret.data)


@dataclass
class Plane:
    """One operator run (hub, budgets, server) over a shared index and fake API."""

    index: ClusterIndex
    kube: FakeKube
    pki: Pki
    port: int
    persist: Callable[[str, str, BudgetReport], Any] | None = None
    debounce: float = 0.05
    hub: ConfigHub | None = None
    budgets: BudgetService | None = None
    server: ConfigServer | None = None

    async def start(self) -> None:
        settings = OperatorSettings(config_addr=f"127.0.0.1:{self.port}", debounce_seconds=self.debounce)
        self.hub = ConfigHub(index=self.index, settings=settings, kube=self.kube, warmup_seconds=-1)
        self.budgets = BudgetService(
            index=self.index,
            settings=settings,
            persist=self.persist,
            persist_interval=0.05,
            warmup_seconds=-1,
        )
        await self.hub.start()
        await self.budgets.start()
        self.hub.mark_ready()
        self.budgets.mark_ready()
        tls = ServerTls.from_files(self.pki.serving_cert, self.pki.serving_key)
        self.server = ConfigServer(
            settings=settings, hub=self.hub, budgets=self.budgets, kube=self.kube, tls=tls
        )
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0.1)
        if self.budgets is not None:
            await self.budgets.stop()
        if self.hub is not None:
            await self.hub.stop()
        self.server = self.budgets = self.hub = None


def make_pki(directory: Path) -> Pki:
    return write_pki(directory)


FAST_BACKOFF = Backoff(base=0.05, max=0.3)


async def start_sidecar(
    plane: Plane, tmp: Path, token: str, node: NodeInfo, *, backoff: Backoff = FAST_BACKOFF
) -> Sidecar:
    token_file = tmp / f"token-{node.id}"
    token_file.write_text(token)
    settings = Settings(
        http_addr="127.0.0.1:0",
        admin_addr="127.0.0.1:0",
        grpc_addr="127.0.0.1:0",
        grpc=False,
        operator=ClientSettings(
            target=f"127.0.0.1:{plane.port}",
            token_file=token_file,
            ca_file=plane.pki.ca_cert,
            backoff=backoff,
            usage_interval=0.05,
        ),
        node=node,
    )
    sidecar = Sidecar(settings)
    await sidecar.start()
    return sidecar


async def eventually(check: Callable[[], object], *, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)

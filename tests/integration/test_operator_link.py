"""Config server + hub + budget service (real, gRPC over TLS on loopback) with real sidecars in operator
mode: pushes and ACKs, NACKs that keep the old config, identity refusals, reconnects that keep serving
and deliver buffered usage exactly once. Only the Kubernetes API is faked (``operator_plane.FakeKube``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_operator.configserver.auth import Identity
from llmroute_operator.contracts import BudgetReport
from llmroute_operator.index import ClusterIndex
from llmroute_proto.api.budget import LLMBudgetStatus
from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import usage_pb2 as upb
from llmroute_sidecar.operator_client import NodeInfo
from llmroute_sidecar.runtime import Sidecar

from .conftest import client_for
from .operator_plane import FakeKube, Plane, apply, eventually, free_port, make_pki, start_sidecar

pytestmark = pytest.mark.timeout(60)

NS = "team-a"


def route(endpoint: str, *, model: str = "chat", key_name: str = "apiKey", secret_key: str = "sk-one") -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {NS}, generation: 1}}
spec:
  workloadSelector: {{matchLabels: {{app: chat}}}}
  models:
  - name: {model}
    backends: [primary]
  backends:
  - name: primary
    provider: openai
    model: gpt-4o
    endpoint: {endpoint}
    region: us-east-1
    credentialsRef: {{name: openai, key: {key_name}}}
    pricing: {{inputPerMillion: 1000, outputPerMillion: 1000}}
---
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {NS}}}
stringData: {{{key_name}: {secret_key}}}
"""


BUDGET = f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: {NS}}}
spec:
  scope: {{namespace: true}}
  period: {{type: monthly, timezone: Europe/Berlin}}
  limits: {{soft: "800", hard: "1000"}}
"""


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider("openai")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    plane = Plane(index=ClusterIndex(), kube=FakeKube(), pki=make_pki(tmp_path / "pki"), port=free_port())
    await plane.start()
    yield plane
    await plane.stop()


@pytest.fixture
async def sidecars() -> AsyncIterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sidecar in started:
        await sidecar.stop(grace=0.1)


async def _sidecar(
    plane: Plane, tmp: Path, started: list[Sidecar], name: str, labels: dict[str, str]
) -> Sidecar:
    token = plane.kube.add_pod(NS, name, labels)
    sidecar = await start_sidecar(plane, tmp, token, NodeInfo(id=f"{name}-x", pod_name=name, namespace=NS))
    started.append(sidecar)
    return sidecar


async def _ask(sidecar: Sidecar) -> str:
    client = client_for(sidecar)
    completion = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    return completion.choices[0].message.content or ""


async def test_push_ack_update_and_delete(
    plane: Plane, provider: FakeProvider, sidecars: list[Sidecar], tmp_path: Path
) -> None:
    apply(plane.index, route(provider.base_url))
    chat = await _sidecar(plane, tmp_path, sidecars, "chat-1", {"app": "chat"})
    other = await _sidecar(plane, tmp_path, sidecars, "web-1", {"app": "web"})
    assert plane.hub is not None
    await eventually(lambda: chat.store.current is not None, what="first config")
    v1 = chat.store.version
    assert list(chat.store.current.models) == ["chat"]  # type: ignore[union-attr]
    assert "hi" in await _ask(chat)
    assert provider.requests[-1].headers["authorization"] == "Bearer sk-one"
    await eventually(lambda: plane.hub.route_sync(NS, "chat").synced == 1, what="route synced")  # type: ignore[union-attr]
    sync = plane.hub.route_sync(NS, "chat")
    assert (sync.matched, sync.synced, sync.rejected, sync.version) == (1, 1, 0, v1)
    # The unselected pod gets a config with no routes (it is still connected and served).
    await eventually(lambda: other.store.current is not None, what="empty config for the other pod")
    assert not other.store.current.models  # type: ignore[union-attr]

    # Rotating the Secret pushes the new key; no restart.
    apply(plane.index, route(provider.base_url, secret_key="sk-two"))
    await eventually(lambda: chat.store.version != v1, what="rotated credentials")
    await _ask(chat)
    assert provider.requests[-1].headers["authorization"] == "Bearer sk-two"

    # Deleting the route removes it.
    plane.index.put_route(NS, "chat", None)
    await eventually(lambda: not chat.store.current.models, what="route removed")  # type: ignore[union-attr]
    assert plane.hub.route_sync(NS, "chat").matched == 0
    assert chat.operator is not None and chat.operator.nacks == 0


async def test_nack_keeps_last_good_config_and_shows_in_route_sync(
    plane: Plane, provider: FakeProvider, sidecars: list[Sidecar], tmp_path: Path
) -> None:
    apply(plane.index, route(provider.base_url))
    chat = await _sidecar(plane, tmp_path, sidecars, "chat-1", {"app": "chat"})
    await eventually(lambda: chat.store.current is not None, what="first config")
    good = chat.store.version
    # A backend without credentials compiles (the API model would refuse it; this is version skew)
    # but the sidecar rejects it.
    current = plane.index.route(NS, "chat")
    assert current is not None
    backend = current.spec.backends[0].model_copy(update={"credentials_ref": None})
    broken = current.model_copy(update={"spec": current.spec.model_copy(update={"backends": [backend]})})
    plane.index.put_route(NS, "chat", broken)
    assert plane.hub is not None
    await eventually(lambda: plane.hub.route_sync(NS, "chat").rejected == 1, what="NACK")  # type: ignore[union-attr]
    sync = plane.hub.route_sync(NS, "chat")
    assert sync.synced == 0 and "has no credentials" in " ".join(sync.errors)
    assert chat.store.version == good
    assert "hi" in await _ask(chat)  # still serving the last good config
    # The same bad version is not pushed again on an unrelated recompile; a fix is.
    plane.hub.flush(NS)
    assert chat.operator is not None and chat.operator.nacks == 1
    apply(plane.index, route(provider.base_url, secret_key="sk-fixed"))
    await eventually(lambda: plane.hub.route_sync(NS, "chat").synced == 1, what="fixed config ACKed")  # type: ignore[union-attr]
    assert chat.store.version != good


async def test_identity_refusals(
    plane: Plane, provider: FakeProvider, sidecars: list[Sidecar], tmp_path: Path
) -> None:
    apply(plane.index, route(provider.base_url))
    token_b = plane.kube.add_pod("team-b", "intruder", {"app": "chat"})
    liar = await start_sidecar(
        plane, tmp_path, token_b, NodeInfo(id="liar", pod_name="intruder", namespace=NS)
    )
    sidecars.append(liar)
    garbage = await start_sidecar(plane, tmp_path, "not-a-token", NodeInfo(id="garbage", namespace=NS))
    sidecars.append(garbage)
    assert liar.operator is not None and garbage.operator is not None
    await eventually(lambda: "PERMISSION_DENIED" in liar.operator.last_error, what="permission denied")  # type: ignore[union-attr]
    await eventually(lambda: "UNAUTHENTICATED" in garbage.operator.last_error, what="unauthenticated")  # type: ignore[union-attr]
    assert liar.store.current is None and garbage.store.current is None
    assert plane.hub is not None and plane.hub.connected == 0


async def test_operator_restart_keeps_serving_and_delivers_usage_once(
    tmp_path: Path, provider: FakeProvider, sidecars: list[Sidecar]
) -> None:
    index, kube = ClusterIndex(), FakeKube()
    stored: dict[str, BudgetReport] = {}

    async def persist(namespace: str, name: str, report: BudgetReport) -> None:
        stored[name] = report  # what the API server would hold in LLMBudget.status

    plane = Plane(index=index, kube=kube, pki=make_pki(tmp_path / "pki"), port=free_port(), persist=persist)
    await plane.start()
    try:
        apply(index, route(provider.base_url) + "---" + BUDGET)
        chat = await _sidecar(plane, tmp_path, sidecars, "chat-1", {"app": "chat"})
        await eventually(lambda: chat.store.current is not None, what="first config")
        await _ask(chat)
        await eventually(lambda: "team" in stored and stored["team"].spent != "0", what="spend persisted")
        first = stored["team"].spent
        assert chat.operator is not None
        await eventually(lambda: chat.operator.reporter.acked_sequence >= 1, what="usage acked")  # type: ignore[union-attr]

        # The operator goes away: the sidecar keeps serving and buffers usage.
        await plane.stop()
        for _ in range(3):
            assert "hi" in await _ask(chat)
        await eventually(lambda: not chat.operator.connected, what="disconnect noticed")  # type: ignore[union-attr]

        # A new operator starts from the stored status (as the kopf handler would feed it).
        budget = index.view(NS).budgets[0]
        report = stored["team"]
        status = LLMBudgetStatus.model_validate(
            {"spent": report.spent, "periodStart": report.period_start, "resetAt": report.reset_at}
        )
        index.put_budget(NS, "team", budget.model_copy(update={"status": status}))
        await plane.start()
        await eventually(lambda: chat.operator.connected, what="reconnected")  # type: ignore[union-attr]
        await eventually(
            lambda: chat.operator.reporter.unacked_records == 0 and len(chat.usage) == 0,  # type: ignore[union-attr]
            what="buffered usage delivered",
        )
        await eventually(lambda: float(stored["team"].spent) >= 4 * float(first) - 1e-6, what="usage counted")
        assert float(stored["team"].spent) == pytest.approx(4 * float(first))
        assert chat.operator.reporter.batches_resent >= 0
    finally:
        await plane.stop()


async def test_resent_batches_count_once(plane: Plane) -> None:
    """A batch resent after an ACK was lost counts once (same sidecar, same sequence)."""
    apply(plane.index, BUDGET)
    assert plane.budgets is not None
    who = Identity(namespace=NS, service_account="app", pod_name="p", pod_uid="u")
    batch = upb.UsageBatch(
        sidecar_id="s1",
        sequence=1,
        records=[upb.UsageRecord(request_id="r1", route="chat", cost_micro_usd=2_500_000)],
    )
    for _ in range(3):
        await plane.budgets.report_usage(who, batch)
    report = plane.budgets.budget_report(NS, "team")
    assert report is not None and report.spent == "2.5"
    assert plane.budgets.acked_sequence(who, "s1") == 1


async def test_backpressure_over_the_wire(plane: Plane, provider: FakeProvider) -> None:
    """A client that has not answered gets nothing newer; when it answers it gets only the newest."""
    apply(plane.index, route(provider.base_url))
    token = plane.kube.add_pod(NS, "slow", {"app": "chat"})
    credentials = grpc.ssl_channel_credentials(root_certificates=plane.pki.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{plane.port}", credentials) as channel:
        call = dpb_grpc.ConfigDiscoveryStub(channel).StreamConfig(
            metadata=(("authorization", f"Bearer {token}"),)
        )
        await call.write(dpb.ConfigRequest(node=dpb.Node(id="slow", namespace=NS, pod_name="slow")))
        first = await call.read()
        for key in ("sk-2", "sk-3", "sk-4"):  # three versions while the first is unanswered
            apply(plane.index, route(provider.base_url, secret_key=key))
            await asyncio.sleep(0.15)  # past the debounce: each is compiled on its own
        reading = asyncio.ensure_future(call.read())  # (cancelling a read would cancel the call)
        await asyncio.sleep(0.3)
        assert not reading.done()
        await call.write(dpb.ConfigRequest(version_info=first.version_info, response_nonce=first.nonce))
        newest = await asyncio.wait_for(reading, timeout=5)
        assert newest.config.credentials[0].api_key.key == "sk-4"
        await call.write(dpb.ConfigRequest(version_info=newest.version_info, response_nonce=newest.nonce))
        assert plane.hub is not None
        await eventually(lambda: plane.hub.route_sync(NS, "chat").synced == 1, what="synced")  # type: ignore[union-attr]
        call.cancel()

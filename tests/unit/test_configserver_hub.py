"""The config hub without a socket: sessions opened on a fake API, debounced recompiles, route sync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from llmroute_operator.configserver import AuthError, ConfigHub, Identity
from llmroute_operator.contracts import RouteSync
from llmroute_operator.index import ClusterIndex
from llmroute_operator.settings import OperatorSettings
from llmroute_proto.api.budget import LLMBudgetStatus
from llmroute_proto.api.loader import load_text
from llmroute_proto.v1 import config_pb2 as pb
from llmroute_proto.v1 import discovery_pb2 as dpb

NS = "team-a"


def resources(model: str = "chat", key: str = "sk-1", selector: str = "{matchLabels: {app: chat}}") -> str:
    return f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {NS}}}
spec:
  workloadSelector: {selector}
  models: [{{name: {model}, backends: [a]}}]
  backends:
  - {{name: a, provider: openai, model: gpt-4o, region: us-east-1, credentialsRef: {{name: keys, key: k}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: {NS}}}
stringData: {{k: {key}}}
"""


def apply(index: ClusterIndex, text: str) -> None:
    found = load_text(text)
    for route in found.routes:
        index.put_route(NS, str(route.metadata["name"]), route)
    for secret in found.secrets:
        index.put_secret(NS, secret.name, secret.data)


class Pods:
    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, name: str, labels: Mapping[str, str], node: str = "") -> Identity:
        self.pods[name] = {
            "metadata": {"uid": f"uid-{name}", "labels": dict(labels)},
            "spec": {"nodeName": node},
        }
        return Identity(namespace=NS, service_account="app", pod_name=name, pod_uid=f"uid-{name}")

    async def token_review(self, token: str, audience: str) -> Any:
        raise AssertionError("the hub never reviews tokens")

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any]:
        if name not in self.pods:
            raise LookupError(name)
        return self.pods[name]

    async def get_node(self, name: str) -> Mapping[str, Any]:
        return self.nodes[name]


class Observer:
    def __init__(self) -> None:
        self.connected: list[int] = []
        self.acked: list[float] = []
        self.nacked = 0

    def sidecars_connected(self, count: int) -> None:
        self.connected.append(count)

    def config_acked(self, namespace: str, seconds: float) -> None:
        self.acked.append(seconds)

    def config_nacked(self, namespace: str) -> None:
        self.nacked += 1


@pytest.fixture
async def hub() -> AsyncIterator[tuple[ConfigHub, ClusterIndex, Pods, Observer]]:
    index, pods, observer = ClusterIndex(), Pods(), Observer()
    hub = ConfigHub(
        index=index,
        settings=OperatorSettings(debounce_seconds=0.02),
        kube=pods,
        observer=observer,
        warmup_seconds=-1,
        notify_seconds=0.01,
    )
    await hub.start()
    hub.mark_ready()
    yield hub, index, pods, observer
    await hub.stop()


def hello(region: str = "", running: str = "") -> dpb.ConfigRequest:
    return dpb.ConfigRequest(node=dpb.Node(id="n", region=region), version_info=running)


async def test_open_compiles_for_the_pods_labels(hub: tuple[ConfigHub, ClusterIndex, Pods, Observer]) -> None:
    h, index, pods, observer = hub
    apply(index, resources())
    chat = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    web = await h.open(pods.add("web-1", {"app": "web"}), hello())
    assert [r.name for r in chat.queue.get_nowait().config.routes] == ["chat"]
    assert [r.name for r in web.queue.get_nowait().config.routes] == []
    assert observer.connected[-1] == 2
    sync = h.route_sync(NS, "chat")
    assert (sync.matched, sync.synced) == (1, 0)
    h.close(web)
    assert h.connected == 1


async def test_unknown_pod_or_replaced_pod_is_refused(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, _, pods, _ = hub
    with pytest.raises(AuthError):
        await h.open(Identity(NS, "app", "ghost", "uid-ghost"), hello())
    who = pods.add("chat-1", {})
    with pytest.raises(AuthError, match="replaced"):
        await h.open(Identity(NS, "app", "chat-1", "another-uid"), hello())
    assert (await h.open(who, hello())) is not None


async def test_region_from_the_node_label_else_the_claim(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, _, pods, _ = hub
    pods.nodes["n1"] = {"metadata": {"labels": {"topology.kubernetes.io/region": "eu-west-1"}}}
    placed = await h.open(pods.add("a", {}, node="n1"), hello(region="us-east-1"))
    pending = await h.open(pods.add("b", {}), hello(region="us-east-1"))
    assert placed.session.region == "eu-west-1"
    assert pending.session.region == "us-east-1"


async def test_burst_of_changes_is_one_push_and_acks_drive_sync(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, observer = hub
    apply(index, resources())
    handle = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    first = handle.queue.get_nowait()
    h.answer(handle, dpb.ConfigRequest(version_info=first.version, response_nonce=first.nonce))
    assert h.route_sync(NS, "chat").synced == 0  # the apply is still being debounced
    await asyncio.sleep(0.1)
    assert h.route_sync(NS, "chat").synced == 1  # it compiled to what the sidecar already runs
    for i in range(10):  # a burst: ten Secret rotations in a row
        apply(index, resources(key=f"sk-{i + 2}"))
    await asyncio.sleep(0.15)
    assert handle.queue.qsize() == 1
    push = handle.queue.get_nowait()
    assert push.config.credentials[0].api_key.key == "sk-11"
    assert h.route_sync(NS, "chat").synced == 0
    h.answer(handle, dpb.ConfigRequest(version_info=push.version, response_nonce=push.nonce))
    sync = h.route_sync(NS, "chat")
    assert (sync.matched, sync.synced, sync.version) == (1, 1, push.version)
    assert len(observer.acked) == 2 and all(s >= 0 for s in observer.acked)


async def test_nothing_is_pushed_for_changes_that_compile_to_the_same_config(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, _ = hub
    apply(index, resources())
    handle = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    first = handle.queue.get_nowait()
    h.answer(handle, dpb.ConfigRequest(version_info=first.version, response_nonce=first.nonce))
    pushes = h.pushes
    index.put_secret(NS, "unrelated", {"x": "y"})
    await asyncio.sleep(0.1)
    assert h.pushes == pushes and handle.queue.empty()


async def test_nack_counts_as_rejected_with_the_message(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, observer = hub
    apply(index, resources())
    handle = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    push = handle.queue.get_nowait()
    h.answer(
        handle,
        dpb.ConfigRequest(response_nonce=push.nonce, error_detail=dpb.ErrorDetail(code=3, message="nope: x")),
    )
    sync = h.route_sync(NS, "chat")
    assert (sync.matched, sync.synced, sync.rejected) == (1, 0, 1)
    assert any("nope: x" in e for e in sync.errors)
    assert observer.nacked == 1


async def test_route_sync_follows_the_indexed_generation(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    """A new generation is not synced until a config compiled from it is ACKed."""
    h, index, pods, _ = hub
    apply(index, resources())
    handle = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    push = handle.queue.get_nowait()
    h.answer(handle, dpb.ConfigRequest(version_info=push.version, response_nonce=push.nonce))
    await asyncio.sleep(0.1)
    assert h.route_sync(NS, "chat").synced == 1
    current = index.route(NS, "chat")
    assert current is not None
    index.put_route(
        NS, "chat", current.model_copy(update={"metadata": {**current.metadata, "generation": 2}})
    )
    assert h.route_sync(NS, "chat") == RouteSync(matched=1, synced=0, version="")
    await asyncio.sleep(0.1)
    push = handle.queue.get_nowait()
    assert push.config.routes[0].generation == 2
    h.answer(handle, dpb.ConfigRequest(version_info=push.version, response_nonce=push.nonce))
    assert h.route_sync(NS, "chat").synced == 1
    # A route whose selector stops matching is no longer counted, at once.
    index.put_route(NS, "chat", load_text(resources(selector="{matchLabels: {app: other}}")).routes[0])
    assert h.route_sync(NS, "chat").matched == 0


async def test_compile_problems_show_in_route_sync(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, _ = hub
    apply(index, resources())
    index.put_secret(NS, "keys", None)  # the route's Secret is gone
    await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    sync = h.route_sync(NS, "chat")
    assert sync.matched == 1 and sync.synced == 0
    assert any("Secret 'keys' not found" in e for e in sync.errors)


async def test_route_sync_listeners_hear_about_changes(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, _ = hub
    heard: list[tuple[str, str]] = []
    h.on_route_sync(lambda ns, name: heard.append((ns, name)))
    apply(index, resources())
    handle = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    push = handle.queue.get_nowait()
    h.answer(handle, dpb.ConfigRequest(version_info=push.version, response_nonce=push.nonce))
    await asyncio.sleep(0.05)
    assert (NS, "chat") in heard


async def test_sessions_wait_until_ready() -> None:
    index, pods = ClusterIndex(), Pods()
    h = ConfigHub(index=index, settings=OperatorSettings(), kube=pods, warmup_seconds=-1)
    await h.start()
    try:
        opening = asyncio.create_task(h.open(pods.add("chat-1", {"app": "chat"}), hello()))
        await asyncio.sleep(0.05)
        assert not opening.done()  # an empty index must not wipe a reconnecting sidecar's routes
        apply(index, resources())
        h.mark_ready()
        handle = await opening
        assert [r.name for r in handle.queue.get_nowait().config.routes] == ["chat"]
    finally:
        await h.stop()


async def test_pods_selecting_the_same_routes_share_one_compile(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, _ = hub
    apply(index, resources())
    for i in range(5):  # unique labels (as StatefulSet pods have), same selected route
        await h.open(pods.add(f"chat-{i}", {"app": "chat", "pod": f"chat-{i}"}), hello())
    await h.open(pods.add("web", {"app": "web"}), hello())
    compiled: list[dict[str, str]] = []
    original = h._compile

    def counting(view: Any, labels: Mapping[str, str], region: str) -> Any:
        compiled.append(dict(labels))
        return original(view, labels, region)

    h._compile = counting  # type: ignore[method-assign]
    h.flush(NS)
    assert len(compiled) == 2  # one for the chat pods, one for the web pod


async def test_a_label_change_pushes_the_config_the_new_labels_select(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    h, index, pods, _ = hub
    apply(index, resources())
    web = await h.open(pods.add("web-1", {"app": "web"}), hello())
    first = web.queue.get_nowait()
    assert [r.name for r in first.config.routes] == []
    h.answer(web, dpb.ConfigRequest(version_info=first.version, response_nonce=first.nonce))
    await asyncio.sleep(0.1)  # the apply's debounced recompile: nothing new for this pod
    assert web.queue.empty() and h.route_sync(NS, "chat").matched == 0
    # Another pod's change, or the same labels again, changes nothing.
    assert h.relabel(NS, "other", "uid-other", {"app": "chat"}) == 0
    assert h.relabel(NS, "web-1", "uid-web-1", {"app": "web"}) == 0
    # A replaced pod of the same name (another uid) is not this session's pod.
    assert h.relabel(NS, "web-1", "uid-new", {"app": "chat"}) == 0
    assert web.queue.empty()
    # kubectl label pod web-1 app=chat: the route now selects it, pushed without a reconnect.
    assert h.relabel(NS, "web-1", "uid-web-1", {"app": "chat", "pod-template-hash": "x"}) == 1
    push = web.queue.get_nowait()
    assert [r.name for r in push.config.routes] == ["chat"]
    assert (h.route_sync(NS, "chat").matched, h.route_sync(NS, "chat").synced) == (1, 0)
    h.answer(web, dpb.ConfigRequest(version_info=push.version, response_nonce=push.nonce))
    assert h.route_sync(NS, "chat").synced == 1
    # Later recompiles use the new labels too.
    apply(index, resources(key="sk-2"))
    await asyncio.sleep(0.15)
    rotated = web.queue.get_nowait()
    assert rotated.config.credentials[0].api_key.key == "sk-2"
    h.answer(web, dpb.ConfigRequest(version_info=rotated.version, response_nonce=rotated.nonce))
    # And a label removed takes the route away again.
    assert h.relabel(NS, "web-1", "uid-web-1", {"app": "web"}) == 1
    assert [r.name for r in web.queue.get_nowait().config.routes] == []


async def test_a_status_write_that_only_moves_the_spend_pushes_nothing(
    hub: tuple[ConfigHub, ClusterIndex, Pods, Observer],
) -> None:
    """The leader writes spend every fraction of a second; only a state or period change is news."""
    h, index, pods, _ = hub
    apply(index, resources())
    budget = load_text(
        f"""
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: {NS}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: UTC}}
  limits: {{soft: "8", hard: "10"}}
"""
    ).budgets[0]

    def put(spent: str, state: str) -> None:
        status = LLMBudgetStatus.model_validate({"spent": spent, "state": state})
        index.put_budget(NS, "team", budget.model_copy(update={"status": status}))

    put("1", "Normal")
    handle = await h.open(pods.add("chat-1", {"app": "chat"}), hello())
    first = handle.queue.get_nowait()
    assert first.config.budgets[0].spent_micro_usd == 0  # left out for operator-fed sidecars
    h.answer(handle, dpb.ConfigRequest(version_info=first.version, response_nonce=first.nonce))
    for spent in ("2", "3.5", "7.99"):
        put(spent, "Normal")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert handle.queue.empty()
    put("8.01", "SoftLimited")
    await asyncio.sleep(0.15)
    pushed = handle.queue.get_nowait()
    assert pushed.config.budgets[0].state == pb.BUDGET_STATE_SOFT_LIMITED

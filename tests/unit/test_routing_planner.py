"""The planner end to end: capability filter, health, the decision trace, headers and metrics."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from llmroute_sidecar.config.snapshot import BackendEntry
from llmroute_sidecar.routing import DECISION_HEADER, RoutingRefused, plan
from llmroute_sidecar.routing.metrics import RoutingMetrics
from llmroute_sidecar.service import Hints, RouteMeta

from .routing_support import backend, chat, entry, hints, rule

TOOL = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        (chat(tools=TOOL), "chat and tools"),
        (chat(response_format={"type": "json_object"}), "chat and json_mode"),
        (chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), "chat and json_mode"),
        ({"model": "chat", "messages": [{"role": "user", "content": [IMAGE]}]}, "chat and vision"),
    ],
)
def test_backends_without_a_needed_capability_are_dropped_or_refused(
    body: dict[str, object], wanted: str
) -> None:
    able = entry([backend("plain", tools=False, json_mode=False), backend("all", vision=True)])
    decision = plan(able, body, hints())
    assert [b.name for b in decision.candidates] == ["all"]
    assert decision.excluded_for("capability") == ["plain"]
    unable = entry([backend("plain", tools=False, json_mode=False)])
    with pytest.raises(RoutingRefused) as caught:
        plan(unable, body, hints())
    assert (caught.value.status, caught.value.code, caught.value.reason) == (
        400,
        "unsupported_capability",
        "capability",
    )
    assert wanted in caught.value.message


def test_embeddings_need_the_embeddings_capability() -> None:
    model = entry([backend("chat-only"), backend("vec", embeddings=True, chat=False)], model="embed")
    decision = plan(model, {"model": "embed", "input": "hi"}, hints(), kind="embeddings")
    assert [b.name for b in decision.candidates] == ["vec"]
    none = entry([backend("chat-only")], model="embed")
    with pytest.raises(RoutingRefused) as caught:
        plan(none, {"model": "embed", "input": "hi"}, hints(), kind="embeddings")
    assert caught.value.code == "unsupported_model" and "serves embeddings" in caught.value.message


def test_chat_needs_the_chat_capability() -> None:
    model = entry([backend("vec", embeddings=True, chat=False), backend("talk")])
    assert [b.name for b in plan(model, chat(), hints()).candidates] == ["talk"]


def test_unavailable_backends_move_to_the_end_in_order() -> None:
    model = entry([backend("a"), backend("b"), backend("c"), backend("d")])
    decision = plan(model, chat(), hints(), health=lambda b: b.name in ("b", "d"))
    assert [b.name for b in decision.candidates] == ["b", "d", "a", "c"]
    assert decision.demoted == ("a", "c")


def test_when_every_backend_is_unavailable_the_order_is_kept() -> None:
    model = entry([backend("a"), backend("b")])
    decision = plan(model, chat(), hints(), health=lambda b: False)
    assert [b.name for b in decision.candidates] == ["a", "b"]
    assert decision.demoted == ()


def test_the_debug_trace_explains_the_decision_compactly() -> None:
    model = entry(
        [
            backend("big", tier="large", region="eu-west-1"),
            backend("tiny", tier="small", region="eu-west-1"),
            backend("us", region="us-east-1", tier="small"),
        ],
        strategy="complexity",
        allowed=["eu-west-1"],
        prefer_local=True,
        rules=[rule(["big"], name="never", task="never")],
    )
    decision = plan(model, chat("hi"), hints(), region="eu-west-1")
    headers = decision.response_headers(debug=True)
    trace = json.loads(headers[DECISION_HEADER])
    assert trace["strategy"] == "complexity" and trace["rule"] is None and trace["tier"] == "small"
    assert trace["candidates"] == ["tiny", "big"]
    assert trace["complexity"]["score"] < 0.3
    assert trace["region"] == {
        "own": "eu-west-1",
        "choice": "local",
        "preferLocal": True,
        "allowed": ["eu-west-1"],
    }
    assert trace["excluded"] == {"us": "residency"}
    assert headers[DECISION_HEADER].isascii() and len(headers[DECISION_HEADER]) < 1000
    assert decision.response_headers() == {}
    line = decision.explain()
    assert "strategy=complexity" in line and "order=tiny,big" in line and "excluded=us:residency" in line


def test_hints_carry_headers_and_debug_for_the_planner() -> None:
    parsed = Hints.from_headers({"x-llmroute-debug": "1", "x-team": "a"}, {"user": "body-user"})
    assert parsed.debug and parsed.headers["x-team"] == "a" and parsed.user == "body-user"
    assert not Hints.from_headers({}, {}).debug


def test_route_meta_adds_the_decision_headers() -> None:
    model = entry([backend("a", window=700)], overflow="truncate-oldest")
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "x" * 4000}, {"role": "user", "content": "hi"}],
        "max_tokens": 50,
    }
    decision = plan(model, body, hints())
    meta = RouteMeta("a", "us-east-1", 1, None, decision=decision, debug=True)
    headers = meta.headers()
    assert headers["x-llmroute-truncated"] == "1"
    assert json.loads(headers[DECISION_HEADER])["truncated"] == 1


def test_metrics_count_decisions_regions_exclusions_and_refusals() -> None:
    registry = CollectorRegistry()
    metrics = RoutingMetrics(registry)
    model = entry(
        [backend("eu", region="eu-west-1", window=500), backend("us", region="us-east-1")],
        allowed=["eu-west-1"],
        overflow="truncate-oldest",
        rules=[rule(["eu", "us"], name="ops", tier="ops")],
    )
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "x" * 4000}, {"role": "user", "content": "hi"}],
        "max_tokens": 50,
    }
    metrics.decided(plan(model, body, hints(tier="ops"), region="eu-west-1", health=_all_up))
    metrics.refused("chat", "residency")

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("llmroute_routing_decisions_total", model="chat", strategy="fallback", rule="ops") == 1
    assert value("llmroute_routing_region_choices_total", model="chat", choice="local") == 1
    assert value("llmroute_routing_region_choices_total", model="chat", choice="residency_filtered") == 1
    assert value("llmroute_routing_excluded_backends_total", model="chat", reason="residency") == 1
    assert value("llmroute_context_truncations_total", model="chat") == 1
    assert value("llmroute_context_truncated_messages_total", model="chat") == 1
    assert value("llmroute_routing_refusals_total", model="chat", reason="residency") == 1


def _all_up(backend: BackendEntry) -> bool:
    return True

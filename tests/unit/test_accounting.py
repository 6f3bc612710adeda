"""Pricing usage, estimates, relayed counts, tenant label bounds, workload names (accounting.py, ...)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.accounting import RelayCount, Usage, cost_micro, estimate_micro, usage_of
from llmroute_sidecar.config.snapshot import build_snapshot
from llmroute_sidecar.operator_settings import NodeInfo
from llmroute_sidecar.policy_metrics import TenantLabels

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=30), inner, max_size=3),
    max_leaves=10,
)


def _backend(input_price: float, output_price: float, cached: float | None = None) -> Any:
    pricing = pb.Pricing(input_per_million=input_price, output_per_million=output_price)
    if cached is not None:
        pricing.cached_input_per_million = cached
    route = pb.Route(
        name="r",
        namespace="ns",
        models=[pb.LogicalModel(name="m", backends=["b"])],
        backends=[
            pb.Backend(
                name="b",
                provider=pb.PROVIDER_OPENAI_COMPATIBLE,
                model="x",
                endpoint="http://127.0.0.1:1/v1",
                pricing=pricing,
            )
        ],
    )
    return build_snapshot(pb.RouterConfig(routes=[route])).models["m"].backends[0]


def test_cached_input_has_its_own_price() -> None:
    backend = _backend(2.5, 10.0, cached=1.25)
    usage = Usage(input_tokens=1_000, output_tokens=200, cached_tokens=400)
    # 600 x 2.5 + 400 x 1.25 + 200 x 10 micro-USD
    assert cost_micro(backend, usage) == 1_500 + 500 + 2_000
    assert cost_micro(_backend(2.5, 10.0), usage) == 2_500 + 2_000  # no cached price: input price


def test_usage_of_reads_openai_usage_and_caps_cached_at_the_prompt() -> None:
    usage = usage_of(
        {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}}
    )
    assert usage == Usage(10, 5, 10)
    assert usage_of(None) is None and usage_of([1, 2]) is None
    assert usage_of({"prompt_tokens": True, "completion_tokens": -3}) == Usage(0, 0, 0)


@given(JSON)
def test_usage_of_never_raises(value: Any) -> None:
    usage = usage_of(value)
    assert usage is None or (usage.input_tokens >= 0 and usage.output_tokens >= 0)


def test_estimates_round_up_and_free_backends_cost_nothing() -> None:
    assert estimate_micro(_backend(0.15, 0.6), 3, 1) == 2  # 0.45 + 0.6 -> 2
    assert estimate_micro(_backend(0.0, 0.0), 10_000, 10_000) == 0


def test_relay_count_counts_content_and_tool_arguments() -> None:
    relay = RelayCount()
    relay.feed({"choices": [{"delta": {"content": "abcd" * 5}}]})
    relay.feed({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": '{"a": 1}'}}]}}]})
    relay.feed({"choices": ["junk", {"delta": None}], "usage": {}})
    assert relay.tokens() == -(-(20 + 8) // 4)


def test_tenant_labels_are_bounded() -> None:
    labels = TenantLabels(max_tenants=2)
    assert [labels.label(t) for t in ("a", "b", "c", "a", "")] == ["a", "b", "other", "a", ""]
    allow = TenantLabels(allow=["gold"])
    assert allow.label("gold") == "gold" and allow.label("silver") == "other"


def test_workload_is_the_pod_name_without_generated_suffixes() -> None:
    assert NodeInfo(id="x", pod_name="chatbot-7d9f8c6b5-x2k4q").workload == "chatbot"
    assert NodeInfo(id="x", pod_name="db-2").workload == "db"
    assert NodeInfo(id="x", pod_name="p", workload_name="billing").workload == "billing"

"""Cache keys (``llmroute_sidecar.cache.keys``): canonical exact keys, partitions, and which requests
may be answered semantically (and with what text)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_sidecar.cache import exact_key, partition_of, semantic_partition, semantic_text

BODY: dict[str, Any] = {
    "model": "chat",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
    "temperature": 0,
}
SCOPE = {"namespace": "demo", "tenant": "acme", "route": "chat"}


def key(body: dict[str, Any], **scope: str) -> str:
    return exact_key(body, **{**SCOPE, **scope}).digest


def test_key_ignores_key_order_number_spelling_and_nulls() -> None:
    reordered = {"temperature": 0.0, "messages": [dict(reversed(m.items())) for m in BODY["messages"]]}
    reordered["model"] = "chat"
    assert key(reordered) == key(BODY)
    assert key({**BODY, "top_p": None}) == key(BODY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("user", "u-1"),
        ("metadata", {"team": "x"}),
        ("store", True),
        ("service_tier", "flex"),
        ("safety_identifier", "s"),
        ("prompt_cache_key", "k"),
    ],
)
def test_fields_that_cannot_change_the_answer_are_ignored(field: str, value: Any) -> None:
    assert key({**BODY, field: value}) == key(BODY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "other"),
        ("messages", [{"role": "user", "content": "Hi!"}]),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "required"),
        ("response_format", {"type": "json_object"}),
        ("temperature", 0.5),
        ("top_p", 0.9),
        ("n", 2),
        ("stop", ["\n"]),
        ("seed", 7),
        ("max_tokens", 10),
        ("max_completion_tokens", 10),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"50256": -100}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("parallel_tool_calls", False),
        ("reasoning_effort", "low"),
        ("some_future_parameter", 1),
    ],
)
def test_each_output_affecting_field_changes_the_key(field: str, value: Any) -> None:
    assert key({**BODY, field: value}) != key(BODY)


def test_partitions_differ_by_namespace_tenant_and_route() -> None:
    base = exact_key(BODY, **SCOPE)
    others = [exact_key(BODY, **{**SCOPE, part: "other"}) for part in SCOPE]
    assert len({base.partition, *(k.partition for k in others)}) == 4
    assert all(k.digest == base.digest for k in others)


def test_partition_parts_cannot_collide_or_break_redis_keys() -> None:
    assert partition_of(namespace="a/b", tenant="c", route="d") != partition_of(
        namespace="a", tenant="b/c", route="d"
    )
    assert ":" not in partition_of(namespace="a:b", tenant="{t}", route="r r")


def test_semantic_partition_separates_everything_but_the_turns() -> None:
    def part(body: dict[str, Any], backend: str = "embed-local") -> str:
        return semantic_partition(body, **SCOPE, embedding_backend=backend)

    other_question = {**BODY, "messages": [BODY["messages"][0], {"role": "user", "content": "Hello?"}]}
    assert part(other_question) == part(BODY)
    assert part({**BODY, "stream": True}) == part(BODY)
    assert part(BODY, "embed-big") != part(BODY)
    assert part({**BODY, "max_tokens": 5}) != part(BODY)
    assert part({**BODY, "model": "other"}) != part(BODY)
    other_system = {**BODY, "messages": [{"role": "system", "content": "Be verbose."}, BODY["messages"][1]]}
    assert part(other_system) != part(BODY)
    assert part(BODY).startswith(partition_of(**SCOPE) + "/")


def test_semantic_text_is_the_turns_without_the_system_prompt() -> None:
    assert semantic_text(BODY) == "Hi?"
    multi = {
        **BODY,
        "messages": [
            *BODY["messages"],
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "More"}]},
        ],
    }
    assert semantic_text(multi) == "user: Hi?\nassistant: Hello.\nuser: More"


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": None},  # absent: OpenAI's default is 1
        {"temperature": 0.2},
        {"temperature": False},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"functions": [{"name": "f"}]},
        {"n": 2},
        {"modalities": ["text", "audio"]},
        {"messages": []},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "tool", "tool_call_id": "c", "content": "r"},
            ]
        },
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}, {"role": "user", "content": "q"}]},
        {"messages": [{"role": "system", "content": "only a system prompt"}]},
        {"messages": [{"role": "user", "content": "   "}]},
    ],
)
def test_ineligible_requests_have_no_semantic_text(change: dict[str, Any]) -> None:
    body = {**BODY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert semantic_text(body) is None


def test_deterministic_only_can_be_lifted_by_the_route() -> None:
    warm = {**BODY, "temperature": 0.7}
    assert semantic_text(warm) is None
    assert semantic_text(warm, deterministic_only=False) == "Hi?"
    assert semantic_text({**warm, "tools": [{"type": "function"}]}, deterministic_only=False) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
fields = st.sampled_from(
    ["model", "messages", "temperature", "tools", "n", "stream", "modalities", "functions", "x"]
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(fields | st.text(max_size=6), json_values, max_size=8), deterministic=st.booleans()
)
def test_keys_and_semantic_text_never_raise(body: dict[str, Any], deterministic: bool) -> None:
    assert exact_key(body, **SCOPE) == exact_key(dict(reversed(body.items())), **SCOPE)
    semantic_partition(body, **SCOPE, embedding_backend="e")
    text = semantic_text(body, deterministic_only=deterministic)
    assert text is None or isinstance(text, str)


@settings(max_examples=100, deadline=None)
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system"]), "content": json_values}
        ),
        max_size=4,
    )
)
def test_semantic_text_never_raises_on_odd_messages(messages: list[dict[str, Any]]) -> None:
    semantic_text({"messages": messages, "temperature": 0})


def test_huge_integers_and_deep_nesting_still_key() -> None:
    deep: Any = 0
    for _ in range(2000):
        deep = [deep]
    assert exact_key({**BODY, "seed": 2**80}, **SCOPE) != exact_key({**BODY, "seed": 2**81}, **SCOPE)
    exact_key({**BODY, "x": deep}, **SCOPE)

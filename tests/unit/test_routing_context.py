"""Context windows: skipping small backends, min windows, reject with a 400, truncate-oldest."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute_sidecar.routing import TRUNCATED_HEADER, RoutingRefused, plan
from llmroute_sidecar.routing.context import truncate_oldest
from llmroute_sidecar.routing.tokens import estimate_chat

from .routing_support import backend, entry, hints


def say(role: str, chars: int, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": "x" * chars, **extra}


def body(*messages: dict[str, Any], max_tokens: int = 100) -> dict[str, Any]:
    return {"model": "chat", "messages": list(messages), "max_tokens": max_tokens}


def test_backends_too_small_for_the_request_are_skipped() -> None:
    model = entry([backend("small", window=1000), backend("big", window=100_000), backend("unknown")])
    decision = plan(model, body(say("user", 8000)), hints())  # ~2,000 input tokens
    assert [b.name for b in decision.candidates] == ["big", "unknown"]
    assert decision.excluded_for("context") == ["small"]
    assert decision.truncated == 0


def test_the_output_budget_counts_towards_the_fit() -> None:
    model = entry([backend("a", window=2000), backend("b", window=8000)])
    assert [b.name for b in plan(model, body(say("user", 40), max_tokens=1990), hints()).candidates] == ["b"]
    assert [b.name for b in plan(model, body(say("user", 40), max_tokens=100), hints()).candidates] == [
        "a",
        "b",
    ]


def test_min_context_window_skips_smaller_backends_whatever_the_request() -> None:
    model = entry([backend("small", window=4000), backend("big", window=64_000)], min_window=32_000)
    decision = plan(model, body(say("user", 10)), hints())
    assert [b.name for b in decision.candidates] == ["big"]
    assert decision.excluded_for("min_context") == ["small"]


def test_no_backend_with_the_minimum_window_is_a_503() -> None:
    model = entry([backend("small", window=4000)], min_window=32_000)
    with pytest.raises(RoutingRefused) as caught:
        plan(model, body(say("user", 10)), hints())
    assert (caught.value.status, caught.value.reason) == (503, "min_context")
    assert "minContextWindow" in caught.value.message


def test_reject_is_a_400_with_the_estimate_and_the_largest_window() -> None:
    model = entry([backend("a", window=1000), backend("b", window=2000)], overflow="reject")
    with pytest.raises(RoutingRefused) as caught:
        plan(model, body(say("user", 40_000)), hints())
    error = caught.value
    assert (error.status, error.code, error.param, error.reason) == (
        400,
        "context_length_exceeded",
        "messages",
        "context",
    )
    assert "2000 tokens" in error.message and "about 1" in error.message and "'chat'" in error.message


def test_truncate_oldest_keeps_the_system_prompt_and_the_newest_turns() -> None:
    model = entry([backend("a", window=1000)], overflow="truncate-oldest")
    messages = [
        say("system", 400),
        say("user", 1600, name="u1"),
        say("assistant", 1600, name="a1"),
        say("user", 1600, name="u2"),
        say("assistant", 400, name="a2"),
        say("user", 400, name="u3"),
    ]
    decision = plan(model, body(*messages, max_tokens=200), hints())
    kept = decision.body["messages"]
    assert kept[0]["role"] == "system"
    assert [m.get("name") for m in kept[1:]] == ["u2", "a2", "u3"]
    assert decision.truncated == 2
    assert decision.response_headers() == {TRUNCATED_HEADER: "2"}
    assert decision.estimate.total <= 1000
    assert decision.candidates[0].name == "a"


def test_truncation_never_separates_a_tool_call_from_its_results() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    messages = [
        say("user", 2000),  # 0
        call,  # 1
        say("tool", 1000, tool_call_id="c1"),  # 2
        say("tool", 1000, tool_call_id="c2"),  # 3
        say("assistant", 200),  # 4
        say("user", 200),  # 5
    ]
    per = estimate_chat(body(*messages)).per_message
    # A budget that the call and its results just fit after dropping the first user message:
    budget = sum(per[1:])
    kept = truncate_oldest(messages, per, budget)
    assert kept is not None
    # The leftover assistant units (the call with its results, then a reply) cannot open the
    # conversation, so they go whole: results are never kept without their call.
    assert kept == [5]
    # A budget that would fit the results without their call drops both all the same.
    assert truncate_oldest(messages, per, sum(per[2:])) == [5]


def test_tool_results_move_with_their_call_when_kept() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}
    messages = [say("user", 4000), say("user", 40), call, say("tool", 40, tool_call_id="c1"), say("user", 40)]
    per = estimate_chat(body(*messages)).per_message
    kept = truncate_oldest(messages, per, sum(per[1:]))
    assert kept == [1, 2, 3, 4]


def test_when_even_the_newest_turn_does_not_fit_it_is_a_400() -> None:
    model = entry([backend("a", window=1000)], overflow="truncate-oldest")
    with pytest.raises(RoutingRefused) as caught:
        plan(model, body(say("user", 100), say("user", 8000)), hints())
    assert caught.value.status == 400
    assert "truncate-oldest" in caught.value.message


def test_an_output_budget_larger_than_every_window_cannot_be_truncated_into_shape() -> None:
    model = entry([backend("a", window=1000)], overflow="truncate-oldest")
    with pytest.raises(RoutingRefused):
        plan(model, body(say("user", 10), max_tokens=5000), hints())


def test_truncation_fits_the_largest_window_and_keeps_only_backends_that_fit_then() -> None:
    model = entry([backend("small", window=500), backend("large", window=1500)], overflow="truncate-oldest")
    messages = [say("user", 4000), say("assistant", 400), say("user", 2000)]
    decision = plan(model, body(*messages, max_tokens=100), hints())
    assert decision.truncated == 2
    assert [b.name for b in decision.candidates] == ["large"]
    assert decision.excluded_for("context") == ["small"]


def test_the_original_body_is_not_modified() -> None:
    model = entry([backend("a", window=600)], overflow="truncate-oldest")
    request = body(say("user", 2000), say("assistant", 40), say("user", 40))
    decision = plan(model, request, hints())
    assert len(request["messages"]) == 3
    assert len(decision.body["messages"]) == 1

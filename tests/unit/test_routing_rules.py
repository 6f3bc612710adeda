"""Route rules: each match kind, first match wins, model restriction, strategy override, traces."""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.routing import plan
from llmroute_sidecar.routing.rules import header_value

from .routing_support import backend, chat, entry, hints, rule

POOL = [
    backend("default"),
    backend("coder"),
    backend("premium"),
    backend("thinker"),
    backend("embed", embeddings=True),
]


def routed(rules: list[pb.Rule], body: dict[str, Any] | None = None, **hint_fields: Any) -> list[str]:
    model = entry(POOL, names=["default"], rules=rules)
    decision = plan(model, body or chat(), hints(**hint_fields))
    return [b.name for b in decision.candidates]


def test_no_rule_matches_uses_the_model_candidates() -> None:
    assert routed([rule(["coder"], task="code_generation")]) == ["default"]


def test_task_rule() -> None:
    rules = [rule(["coder", "default"], task="code_generation")]
    assert routed(rules, task="code_generation") == ["coder", "default"]
    assert routed(rules, task="summarize") == ["default"]


def test_tier_rule() -> None:
    assert routed([rule(["premium"], tier="premium")], tier="premium") == ["premium"]
    assert routed([rule(["premium"], tier="premium")], tier="standard") == ["default"]


def test_header_rule_names_are_case_insensitive_and_values_exact() -> None:
    rules = [rule(["premium"], headers={"X-Team": "search"})]
    assert routed(rules, headers={"x-team": "search"}) == ["premium"]
    assert routed(rules, headers=CIMultiDict({"X-TEAM": "search"})) == ["premium"]
    assert routed(rules, headers={"x-team": "Search"}) == ["default"]
    assert routed(rules, headers={}) == ["default"]


def test_complexity_rule_matches_strictly_above() -> None:
    rules = [rule(["thinker"], complexity_above=0.25)]
    hard = chat("Prove step by step that this algorithm is optimal and derive the equation.")
    assert routed(rules, hard) == ["thinker"]
    assert routed(rules, chat("hi")) == ["default"]
    assert routed([rule(["thinker"], complexity_above=0.0)], chat("hi")) == ["default"]


def test_all_conditions_of_a_rule_must_hold() -> None:
    rules = [rule(["premium"], task="code_generation", tier="premium")]
    assert routed(rules, task="code_generation") == ["default"]
    assert routed(rules, task="code_generation", tier="premium") == ["premium"]


def test_the_first_matching_rule_wins() -> None:
    rules = [rule(["coder"], task="code_generation"), rule(["premium"], tier="premium")]
    assert routed(rules, task="code_generation", tier="premium") == ["coder"]
    assert routed(rules, tier="premium") == ["premium"]


def test_a_rule_for_another_model_is_skipped() -> None:
    rules = [rule(["premium"], model="other", tier="premium"), rule(["coder"], model="chat", tier="premium")]
    assert routed(rules, tier="premium") == ["coder"]


def test_the_decision_names_the_rule_and_its_strategy() -> None:
    rules = [
        rule(["coder"], task="nope"),
        rule(["premium", "coder"], name="cheap-code", strategy="cost", task="code_generation"),
    ]
    model = entry(
        [backend("default"), backend("coder", prices=(0.1, 0.1)), backend("premium", prices=(9, 9))],
        names=["default"],
        rules=rules,
    )
    decision = plan(model, chat(), hints(task="code_generation"))
    assert (decision.rule, decision.rule_index, decision.strategy) == ("cheap-code", 1, "cost")
    assert [b.name for b in decision.candidates] == ["coder", "premium"]
    unnamed = plan(model, chat(), hints(task="nope"))
    assert (unnamed.rule, unnamed.rule_label, unnamed.strategy) == ("rules[0]", "rules[0]", "fallback")
    none = plan(model, chat(), hints())
    assert (none.rule, none.rule_label) == (None, "none")


def test_complexity_is_scored_only_when_needed() -> None:
    model = entry(
        POOL, names=["default"], rules=[rule(["coder"], task="code_generation", complexity_above=0.9)]
    )
    assert plan(model, chat(), hints(task="other")).complexity is None
    assert plan(model, chat(), hints(task="code_generation")).complexity is not None


def test_embeddings_follow_only_rules_that_name_their_model() -> None:
    model = entry(
        POOL,
        model="embed",
        names=["embed"],
        rules=[
            rule(["coder"], task="code_generation"),
            rule(["embed", "default"], model="embed", tier="premium"),
        ],
    )
    body = {"model": "embed", "input": "hello"}
    assert [
        b.name for b in plan(model, body, hints(task="code_generation"), kind="embeddings").candidates
    ] == ["embed"]
    premium = plan(model, body, hints(tier="premium"), kind="embeddings")
    assert premium.rule == "rules[1]"
    assert [b.name for b in premium.candidates] == ["embed"]
    assert [e.backend for e in premium.excluded] == ["default"]


def test_header_lookup_is_case_insensitive_through_the_mapping() -> None:
    # aiohttp hands the planner a CIMultiDictProxy; gRPC metadata keys are lower case.
    assert header_value(CIMultiDict({"X-Team": "a"}), "x-TEAM") == "a"
    assert header_value({"x-team": "a"}, "X-Team") == "a"
    assert header_value({}, "x-team") is None

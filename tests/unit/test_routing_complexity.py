"""The complexity score: bounded, monotone in its evidence, explained feature by feature."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.routing import complexity
from llmroute_sidecar.routing.tokens import estimate_chat


def score(body: Mapping[str, Any]) -> complexity.Complexity:
    return complexity.score(body, estimate_chat(body).input_tokens)


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


CODE = """Refactor this Python function so it never raises and add unit tests:
```python
def parse(line):
    import json
    return json.loads(line)
```"""
MATHS = "Prove step by step that the integral of x^2 from 0 to 1 equals 1/3, and justify each equation."
CONSTRAINTS = """Write a summary. It must be exactly three sentences, must not mention prices,
should use only plain words, and never exceed 60 words.
- keep it formal
- at least one example"""


def test_a_trivial_prompt_scores_near_zero_and_says_so() -> None:
    result = score(user("hi"))
    assert result.score < 0.05
    assert result.top() == ()
    assert result.explain() == f"{result.score:.2f} = nothing"


@pytest.mark.parametrize(
    ("text", "feature"), [(CODE, "code"), (MATHS, "reasoning"), (CONSTRAINTS, "constraints")]
)
def test_each_marker_family_lands_in_its_feature(text: str, feature: str) -> None:
    result = score(user(text))
    contributions = dict(result.features)
    assert contributions[feature] >= 0.05
    assert result.top(1)[0][0] == feature
    assert feature in result.explain()


def test_score_is_the_sum_of_the_features_and_stays_in_bounds() -> None:
    earlier = [{"role": "user", "content": "earlier"}] * 12
    heavy = {
        "messages": [*earlier, {"role": "user", "content": (CODE + MATHS + CONSTRAINTS) * 200}],
        "tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(8)],
    }
    result = score(heavy)
    assert result.score == pytest.approx(min(1.0, sum(v for _, v in result.features)), abs=1e-3)
    assert 0.95 <= result.score <= 1.0
    assert [name for name, _ in result.features] == sorted(
        (name for name, _ in result.features), key=lambda n: -dict(result.features)[n]
    )


def test_depth_length_and_tools_raise_the_score() -> None:
    base = score(user("tell me about rivers")).score
    long = score(user("tell me about rivers. " * 400)).score
    deep = score({"messages": [{"role": "user", "content": "tell me about rivers"}] * 9}).score
    tools = score({**user("tell me about rivers"), "tools": [{"type": "function"}] * 3}).score
    assert base < long and base < deep and base < tools


def test_only_the_newest_user_turn_is_scanned_for_markers() -> None:
    old_code = {
        "messages": [
            {"role": "system", "content": CODE},
            {"role": "user", "content": CODE},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "thanks"},
        ]
    }
    assert dict(score(old_code).features)["code"] == 0


def test_text_parts_are_scanned_too() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": CODE}]}]}
    assert dict(score(body).features)["code"] > 0.1


def test_tiers_follow_the_thresholds_and_defaults() -> None:
    thresholds = pb.ComplexityThresholds(small=0.2, medium=0.5)
    assert complexity.tier_for(0.1, thresholds) == pb.TIER_SMALL
    assert complexity.tier_for(0.2, thresholds) == pb.TIER_MEDIUM
    assert complexity.tier_for(0.49, thresholds) == pb.TIER_MEDIUM
    assert complexity.tier_for(0.5, thresholds) == pb.TIER_LARGE
    assert complexity.tier_for(0.29, None) == pb.TIER_SMALL
    assert complexity.tier_for(0.69, pb.ComplexityThresholds()) == pb.TIER_MEDIUM
    assert complexity.tier_for(0.7, None) == pb.TIER_LARGE
    assert complexity.tier_name(pb.TIER_LARGE) == "large"

"""Semantic validation of routes and budgets (``llmroute_operator.validation``): the rules the
validating webhook and the ``Accepted`` condition share. Pure: no cluster, no kopf."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from llmroute_operator import validation as v
from llmroute_proto.api.budget import LLMBudget
from llmroute_proto.api.loader import load_paths
from llmroute_proto.api.route import LLMRoute

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {
    "openai": {"apiKey": "sk-1"},
    "anthropic": {"apiKey": "sk-ant"},
    "aws": {"awsAccessKeyId": "AKIA", "awsSecretAccessKey": "s"},
}


def _route(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "models": [{"name": "chat", "backends": ["big", "mid", "small"], "minContextWindow": 32000}],
        "backends": [
            {
                "name": "big",
                "provider": "openai",
                "model": "gpt-4o",
                "credentialsRef": {"name": "openai", "key": "apiKey"},
                "pricing": {"inputPerMillion": 2.5, "outputPerMillion": 10},
                "contextWindow": 128000,
                "tier": "large",
            },
            {
                "name": "mid",
                "provider": "anthropic",
                "model": "claude-haiku",
                "credentialsRef": {"name": "anthropic"},
                "pricing": {"inputPerMillion": 1, "outputPerMillion": 5},
                "contextWindow": 200000,
                "tier": "medium",
            },
            {
                "name": "small",
                "provider": "bedrock",
                "model": "llama",
                "credentialsRef": {"name": "aws"},
                "pricing": {"inputPerMillion": 0.2, "outputPerMillion": 0.2},
                "contextWindow": 64000,
                "tier": "small",
            },
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "chat", "namespace": "team-a", "generation": 3},
        "spec": spec,
    }


def _parsed(obj: dict[str, Any]) -> LLMRoute:
    route, problems = v.parse_route(obj)
    assert route is not None, problems
    return route


def _budget(on_soft_limit: dict[str, Any] | None, *, routes: list[str] | None = None) -> LLMBudget:
    spec: dict[str, Any] = {
        "scope": {"routes": routes or ["chat"]},
        "period": {"type": "monthly"},
        "limits": {"soft": "80", "hard": "100"},
    }
    if on_soft_limit is not None:
        spec["onSoftLimit"] = on_soft_limit
    budget, problems = v.parse_budget(
        {"apiVersion": "llmroute.io/v1alpha1", "kind": "LLMBudget", "metadata": {"name": "b"}, "spec": spec}
    )
    assert budget is not None, problems
    return budget


def test_a_valid_route_has_no_problems() -> None:
    assert v.validate_route(_parsed(_route()), secrets=SECRETS) == []


def test_every_example_is_valid() -> None:
    found = load_paths([ROOT / "examples"])
    for route in found.routes:
        namespace = route.metadata.get("namespace")
        secrets = {s.name: s.data for s in found.secrets if s.namespace == namespace}
        assert v.validate_route(route, secrets=secrets) == [], route.metadata["name"]
    for budget in found.budgets:
        namespace = budget.metadata.get("namespace")
        routes = [r for r in found.routes if r.metadata.get("namespace") == namespace]
        assert v.validate_budget(budget, routes=routes) == [], budget.metadata["name"]


def test_missing_secret_names_the_field() -> None:
    secrets = {k: val for k, val in SECRETS.items() if k != "anthropic"}
    problems = v.validate_route(_parsed(_route()), secrets=secrets)
    assert [str(p) for p in problems] == [
        'spec.backends[1].credentialsRef: Secret "anthropic" not found in namespace "team-a"'
    ]
    assert problems[0].reason == "SecretNotFound"


def test_secret_without_the_key() -> None:
    secrets = {**SECRETS, "openai": {"other": "x"}}
    problems = v.validate_route(_parsed(_route()), secrets=secrets)
    assert [str(p) for p in problems] == [
        'spec.backends[0].credentialsRef: Secret "openai" has no key "apiKey"'
    ]
    assert problems[0].reason == "SecretKeyNotFound"


def test_bedrock_secret_needs_both_aws_keys() -> None:
    secrets = {**SECRETS, "aws": {"awsAccessKeyId": "AKIA", "apiKey": "irrelevant"}}
    problems = v.validate_route(_parsed(_route()), secrets=secrets)
    assert len(problems) == 1
    assert problems[0].field == "spec.backends[2].credentialsRef"
    assert '"awsSecretAccessKey"' in problems[0].message and "bedrock" in problems[0].message


def test_secrets_none_skips_credential_checks() -> None:
    assert v.validate_route(_parsed(_route()), secrets=None) == []


def test_context_window_below_the_model_minimum() -> None:
    obj = _route()
    obj["spec"]["backends"][2]["contextWindow"] = 8192
    problems = v.validate_route(_parsed(obj), secrets=SECRETS)
    assert [p.field for p in problems] == ["spec.backends[2].contextWindow"]
    assert "8192 tokens is below spec.models[0].minContextWindow (32000)" in problems[0].message
    assert problems[0].reason == "ContextWindowTooSmall"


def test_context_window_counts_backends_of_rules_for_the_model() -> None:
    obj = _route(
        models=[{"name": "chat", "backends": ["big"], "minContextWindow": 100000}],
        rules=[{"match": {"task": "code"}, "backends": ["mid", "small"]}],
    )
    problems = v.validate_route(_parsed(obj), secrets=SECRETS)
    assert [p.field for p in problems] == ["spec.backends[2].contextWindow"]


def test_fallback_cycle_is_a_backend_listed_twice() -> None:
    obj = _route(models=[{"name": "chat", "backends": ["big", "mid", "big"]}])
    problems = v.validate_route(_parsed(obj), secrets=SECRETS)
    assert [p.field for p in problems] == ["spec.models[0].backends[2]"]
    assert problems[0].reason == "FallbackCycle"
    assert "big → mid → big" in problems[0].message


def test_fallback_cycle_in_a_rule() -> None:
    obj = _route(rules=[{"match": {"tier": "premium"}, "backends": ["mid", "mid"]}])
    problems = v.validate_route(_parsed(obj), secrets=SECRETS)
    assert [p.field for p in problems] == ["spec.rules[0].backends[1]"]


def test_unknown_backend_is_caught_defensively() -> None:
    route = _parsed(_route())
    # The model validator refuses this on parse; build past it to test the defensive rule.
    broken = route.model_copy(
        update={
            "spec": route.spec.model_copy(
                update={"models": [route.spec.models[0].model_copy(update={"backends": ["big", "nope"]})]}
            )
        }
    )
    problems = v.validate_route(broken, secrets=SECRETS)
    assert [p.field for p in problems] == ["spec.models[0].backends[1]"]
    assert 'backend "nope" is not declared' in problems[0].message


def test_parse_problems_name_the_field() -> None:
    obj = _route()
    del obj["spec"]["backends"][0]["model"]
    route, problems = v.parse_route(obj)
    assert route is None
    assert any(p.field == "spec.backends[0].model" for p in problems)


def test_summarize_takes_the_first_reason_and_every_message() -> None:
    problems = [v.Problem("a", "X", "one"), v.Problem("b", "Y", "two")]
    assert v.summarize(problems) == ("X", "a: one; b: two")
    assert v.summarize([]) == ("", "")


# -- budgets ------------------------------------------------------------------------------------------


def test_downgrade_to_a_cheaper_tier_is_fine() -> None:
    route = _parsed(_route())
    assert v.validate_budget(_budget({"downgradeTo": "medium"}), routes=[route]) == []
    assert v.validate_budget(_budget({"downgradeTo": "small"}), routes=[route]) == []


def test_downgrade_to_a_tier_that_replaces_nothing() -> None:
    problems = v.validate_budget(_budget({"downgradeTo": "large"}), routes=[_parsed(_route())])
    assert [p.field for p in problems] == ["spec.onSoftLimit.downgradeTo"]
    assert problems[0].reason == "DowngradeNotCheaper"
    assert "replaces nothing" in problems[0].message


def test_downgrade_backend_not_cheaper_than_what_it_replaces() -> None:
    obj = _route()
    obj["spec"]["backends"][1]["pricing"] = {"inputPerMillion": 5, "outputPerMillion": 20}
    problems = v.validate_budget(_budget({"downgradeTo": "mid"}), routes=[_parsed(obj)])
    assert [p.field for p in problems] == ["spec.onSoftLimit.downgradeTo"]
    assert problems[0].reason == "DowngradeNotCheaper"
    assert '"big"' in problems[0].message and '"mid"' in problems[0].message


def test_downgrade_tier_whose_backend_is_dearer() -> None:
    obj = _route()
    obj["spec"]["backends"][1]["pricing"] = {"inputPerMillion": 3, "outputPerMillion": 12}
    problems = v.validate_budget(_budget({"downgradeTo": "medium"}), routes=[_parsed(obj)])
    assert [p.reason for p in problems] == ["DowngradeNotCheaper"]


def test_unknown_downgrade_target() -> None:
    problems = v.validate_budget(_budget({"downgradeTo": "nope"}), routes=[_parsed(_route())])
    assert [p.reason for p in problems] == ["UnknownBackend"]
    assert "neither a tier" in problems[0].message


def test_ladder_that_goes_back_up_is_a_cycle() -> None:
    action = {"downgradeTo": "small", "ladder": [{"atPercent": 90, "downgradeTo": "medium"}]}
    problems = v.validate_budget(_budget(action), routes=[_parsed(_route())])
    assert [p.field for p in problems] == ["spec.onSoftLimit.ladder[0].downgradeTo"]
    assert problems[0].reason == "DowngradeCycle"


def test_ladder_repeating_a_target_is_a_cycle() -> None:
    action = {"downgradeTo": "mid", "ladder": [{"atPercent": 90, "downgradeTo": "mid"}]}
    problems = v.validate_budget(_budget(action), routes=[_parsed(_route())])
    assert [p.reason for p in problems] == ["DowngradeCycle"]


def test_ladder_that_only_goes_down() -> None:
    action = {
        "downgradeTo": "medium",
        "ladder": [{"atPercent": 90, "downgradeTo": "small"}],
    }
    assert v.validate_budget(_budget(action), routes=[_parsed(_route())]) == []


def test_budget_is_not_judged_before_its_routes_exist() -> None:
    assert v.validate_budget(_budget({"downgradeTo": "nope"}), routes=[]) == []


def test_blended_price_weights_input_three_to_one() -> None:
    route = _parsed(_route())
    assert v.blended_price(route.spec.backends[0]) == pytest.approx(0.75 * 2.5 + 0.25 * 10)
    free = copy.deepcopy(_route())
    del free["spec"]["backends"][0]["pricing"]
    assert v.blended_price(_parsed(free).spec.backends[0]) == 0.0

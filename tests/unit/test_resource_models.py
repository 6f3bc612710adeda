"""The models refuse what the CRDs' CEL rules refuse, with messages that name the field, and the
loader reports file, object and field for bad documents."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from llmroute_proto.api.common import parse_duration
from llmroute_proto.api.loader import ResourceError, load_text
from llmroute_proto.api.route import LLMRouteSpec


def _route(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "models": [{"name": "chat", "backends": ["a", "b"]}],
        "backends": [
            {"name": "a", "provider": "openai", "model": "gpt-4o", "credentialsRef": {"name": "openai"}},
            {
                "name": "b",
                "provider": "openai-compatible",
                "model": "llama",
                "endpoint": "http://vllm:8000/v1",
            },
        ],
    }
    spec.update(overrides)
    return spec


def _route_doc(spec: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(
        {"apiVersion": "llmroute.io/v1alpha1", "kind": "LLMRoute", "metadata": {"name": "r"}, "spec": spec}
    )


def test_minimal_route_gets_defaults() -> None:
    spec = LLMRouteSpec.model_validate(_route())
    assert spec.models[0].strategy == "fallback"
    assert spec.backends[0].credentials_ref is not None
    assert spec.backends[0].credentials_ref.key == "apiKey"
    assert spec.backends[0].capabilities.tools is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": [{"name": "chat", "backends": ["nope"]}]}, "names backend 'nope'"),
        (
            {"models": [{"name": "chat", "strategy": "weighted", "split": [{"backend": "a", "weight": 60}]}]},
            "weights must sum to 100",
        ),
        ({"models": [{"name": "chat", "strategy": "weighted", "backends": ["a"]}]}, "split is required"),
        ({"models": [{"name": "chat"}]}, "backends or split must list"),
        (
            {
                "backends": [
                    {"name": "a", "provider": "openai", "model": "m", "credentialsRef": {"name": "s"}},
                    {"name": "a", "provider": "openai", "model": "m", "credentialsRef": {"name": "s"}},
                ],
                "models": [{"name": "chat", "backends": ["a"]}],
            },
            "spec.backends[].name must be unique",
        ),
        (
            {
                "backends": [{"name": "a", "provider": "anthropic", "model": "m"}],
                "models": [{"name": "c", "backends": ["a"]}],
            },
            "credentialsRef is required",
        ),
        (
            {
                "backends": [
                    {"name": "a", "provider": "azure-openai", "model": "m", "credentialsRef": {"name": "s"}}
                ],
                "models": [{"name": "c", "backends": ["a"]}],
            },
            "endpoint is required",
        ),
        ({"resilience": {"timeout": {"perAttempt": "90s", "total": "1m"}}}, "perAttempt must not exceed"),
        ({"resilience": {"retries": {"backoff": {"base": "10s", "max": "1s"}}}}, "base must not exceed"),
        ({"rules": [{"match": {}, "backends": ["a"]}]}, "must set at least one of task"),
        ({"rules": [{"match": {"task": "x"}, "backends": ["zzz"]}]}, "rules[0].backends names 'zzz'"),
        (
            {"rules": [{"model": "other", "match": {"task": "x"}, "backends": ["a"]}]},
            "rules[0].model 'other'",
        ),
        ({"rateLimits": [{"key": "user"}]}, "requestsPerMinute or tokensPerMinute"),
        ({"cache": {"semantic": {"embeddingBackend": "nope"}}}, "embeddingBackend must name"),
        ({"memory": {"overflow": "summarize"}}, "summarizer is required"),
        ({"memory": {"overflow": "summarize", "summarizer": "nope"}}, "summarizer must name a model"),
        ({"memory": {"maxTokensPerTenant": 10}}, "greater than or equal to 1000"),
        ({"abuse": {"window": "2h"}}, "window must be shorter"),
        ({"abuse": {"spikeFactor": 1}}, "greater than or equal to 1.5"),
        (
            {
                "backends": [
                    {
                        "name": "a",
                        "provider": "bedrock",
                        "model": "m",
                        "credentialsRef": {"name": "aws"},
                        "pricing": {"inputPerMillion": 1, "outputPerMillion": 2, "batchDiscountPercent": 50},
                    }
                ]
            },
            "pricing.batchDiscountPercent applies only to openai, azure-openai and anthropic",
        ),
        (
            {
                "models": [
                    {
                        "name": "c",
                        "backends": ["a"],
                        "complexity": {"thresholds": {"small": 0.8, "medium": 0.5}},
                    }
                ]
            },
            "small must be below",
        ),
    ],
)
def test_route_rules_refuse_with_field_names(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ResourceError) as caught:
        load_text(_route_doc(_route(**overrides)), source="route.yaml", environ={})
    assert message in str(caught.value)
    assert "route.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"models": [{"name": "c", "backends": ["a"], "strategy": "random"}]}, "models[0].strategy"),
        (
            {"backends": [{"name": "a", "provider": "openai", "model": "m", "tier": "huge"}]},
            "backends[0].tier",
        ),
        ({"models": [{"name": "c", "split": [{"backend": "a", "weight": 101}]}]}, "split[0].weight"),
        ({"backends": [{"name": "Bad_Name", "provider": "openai", "model": "m"}]}, "backends[0].name"),
        ({"surprise": True}, "spec.surprise"),
        (
            {"backends": [{"name": "a", "provider": "openai", "model": "m", "batchApi": "always"}]},
            "backends[0].batchApi",
        ),
        (
            {
                "backends": [
                    {
                        "name": "a",
                        "provider": "openai",
                        "model": "m",
                        "pricing": {"inputPerMillion": 1, "outputPerMillion": 2, "batchDiscountPercent": 101},
                    }
                ]
            },
            "batchDiscountPercent",
        ),
        (
            {"backends": [{"name": "a", "provider": "openai", "model": "m", "contextWindow": "big"}]},
            "contextWindow",
        ),
    ],
)
def test_structural_errors_name_the_field(spec: dict[str, Any], message: str) -> None:
    base = _route()
    base.update(spec)
    with pytest.raises(ResourceError) as caught:
        load_text(_route_doc(base), environ={})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"limits": {"soft": "900", "hard": "100"}}, "soft must not exceed"),
        ({"limits": {"hard": "0"}}, "hard must be positive"),
        ({"limits": {"hard": "-5"}}, "limits.hard"),
        ({"scope": {"routes": ["a"], "tenant": "acme"}}, "exactly one of"),
        ({"scope": {}}, "exactly one of"),
        ({"onSoftLimit": {"downgradeTo": "small"}, "limits": {"hard": "10"}}, "onSoftLimit needs"),
        (
            {
                "limits": {"soft": "5", "hard": "10"},
                "onSoftLimit": {
                    "downgradeTo": "m",
                    "ladder": [{"atPercent": 90, "downgradeTo": "a"}, {"atPercent": 80, "downgradeTo": "b"}],
                },
            },
            "must increase",
        ),
        ({"alerts": [50, 150]}, "alerts[1]"),
        ({"period": {"type": "hourly"}}, "period.type"),
    ],
)
def test_budget_rules(spec: dict[str, Any], message: str) -> None:
    import yaml

    base: dict[str, Any] = {
        "scope": {"routes": ["chat"]},
        "period": {"type": "daily"},
        "limits": {"hard": "10"},
    }
    base.update(spec)
    doc = {"apiVersion": "llmroute.io/v1alpha1", "kind": "LLMBudget", "metadata": {"name": "b"}, "spec": base}
    with pytest.raises(ResourceError) as caught:
        load_text(yaml.safe_dump(doc), environ={})
    assert message in str(caught.value)


def test_secrets_decode_and_expand_environment() -> None:
    text = f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: team-a}}
data:
  encoded: {base64.b64encode(b"from-data").decode()}
stringData:
  apiKey: "${{OPENAI_KEY}}"
"""
    secret = load_text(text, environ={"OPENAI_KEY": "sk-123"}).secrets[0]
    assert (secret.namespace, secret.name) == ("team-a", "openai")
    assert dict(secret.data) == {"encoded": "from-data", "apiKey": "sk-123"}
    with pytest.raises(ResourceError, match="OPENAI_KEY is not set"):
        load_text(text, environ={})


def test_loader_rejects_garbage() -> None:
    with pytest.raises(ResourceError, match="not valid YAML"):
        load_text("a: [", source="x.yaml")
    with pytest.raises(ResourceError, match="expected a Kubernetes object"):
        load_text("- 1\n- 2\n")
    with pytest.raises(ResourceError, match="unknown kind"):
        load_text("apiVersion: llmroute.io/v1alpha1\nkind: LLMThing\nmetadata: {name: x}\n")


@pytest.mark.parametrize(
    ("text", "seconds"), [("200ms", 0.2), ("30s", 30), ("1m30s", 90), ("2h", 7200), ("1.5s", 1.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "5 s", "-1s", "1d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_loader_reads_a_kubectl_list() -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: s, namespace: ns, uid: abc, resourceVersion: "12"}
  data: {apiKey: c2stMQ==}
- apiVersion: llmroute.io/v1alpha1
  kind: LLMRoute
  metadata: {name: r, namespace: ns, generation: 2, managedFields: []}
  spec:
    models: [{name: chat, backends: [a]}]
    backends: [{name: a, provider: openai, model: m, credentialsRef: {name: s}}]
"""
    found = load_text(text, environ={})
    assert found.secrets[0].data == {"apiKey": "sk-1"}
    assert found.routes[0].metadata["generation"] == 2

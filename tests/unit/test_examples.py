"""Every file in ``examples/`` parses, validates against the models and the CRD schemas, references
Secrets that exist, and together the examples exercise every feature of the resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmroute_proto.api.loader import Resources, load_paths

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


@pytest.fixture(scope="module")
def resources() -> Resources:
    return load_paths([ROOT / "examples"], environ={})


def _crd_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"llmroute.io_{plural}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads_and_matches_crd_schema(path: Path) -> None:
    load_paths([path], environ={})  # raises ResourceError naming the field on any problem
    schemas = {"LLMRoute": _crd_schema("llmroutes"), "LLMBudget": _crd_schema("llmbudgets")}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") in schemas:
            # The structural part of the CRD (types, enums, bounds, patterns) as plain JSON Schema.
            jsonschema.validate(doc, schemas[doc["kind"]])


def test_credentials_refer_to_secrets_in_the_same_namespace(resources: Resources) -> None:
    secrets = {(s.namespace, s.name): s.data for s in resources.secrets}
    for route in resources.routes:
        namespace = str(route.metadata["namespace"])
        for backend in route.spec.backends:
            ref = backend.credentials_ref
            if ref is None:
                continue
            assert (namespace, ref.name) in secrets, (
                f"{route.metadata['name']}/{backend.name}: no Secret {ref.name}"
            )
            keys = secrets[(namespace, ref.name)]
            wanted = {"awsAccessKeyId", "awsSecretAccessKey"} if backend.provider == "bedrock" else {ref.key}
            assert wanted <= keys.keys(), f"{backend.name}: Secret {ref.name} lacks {wanted - keys.keys()}"


def test_budget_scopes_name_existing_routes(resources: Resources) -> None:
    routes = {(str(r.metadata["namespace"]), str(r.metadata["name"])) for r in resources.routes}
    for budget in resources.budgets:
        for name in budget.spec.scope.routes or []:
            assert (str(budget.metadata["namespace"]), name) in routes


def test_examples_cover_every_feature(resources: Resources) -> None:
    specs = [r.spec for r in resources.routes]
    providers = {b.provider for s in specs for b in s.backends}
    assert providers == {
        "openai",
        "azure-openai",
        "anthropic",
        "google",
        "bedrock",
        "cohere",
        "openai-compatible",
    }
    assert {m.strategy for s in specs for m in s.models} == {
        "fallback",
        "weighted",
        "cost",
        "latency",
        "complexity",
    }
    assert any(m.split for s in specs for m in s.models), "an A/B split"
    assert any(m.complexity for s in specs for m in s.models), "complexity thresholds"
    matches = [r.match for s in specs for r in s.rules or []]
    assert any(m.task for m in matches) and any(m.tier for m in matches)
    assert any(m.headers for m in matches) and any(m.complexity_above is not None for m in matches)
    assert any(s.regions and s.regions.allowed for s in specs), "an EU-only residency route"
    assert {s.privacy.pii.action for s in specs if s.privacy and s.privacy.pii} == {"redact", "block"}
    assert any(s.cache and s.cache.exact and s.cache.semantic for s in specs)
    assert any(s.rate_limits for s in specs) and any(s.resilience for s in specs)
    assert any(b.capabilities.embeddings for s in specs for b in s.backends)
    budgets = [b.spec for b in resources.budgets]
    assert any(b.on_soft_limit and b.on_soft_limit.ladder for b in budgets), "a downgrade ladder"
    assert {b.period.type for b in budgets} == {"daily", "weekly", "monthly"}
    assert any(b.scope.routes for b in budgets) and any(b.scope.tenant for b in budgets)
    assert any(b.scope.namespace for b in budgets) and any(b.scope.user for b in budgets)
    assert {b.failure_mode for b in budgets} == {"closed", "open"}
    assert any(s.privacy and s.privacy.pii and s.privacy.pii.restore for s in specs)
    assert any(s.audit is not None for s in specs)

"""The CRDs on a real kube-apiserver: they establish, explain themselves, accept every example and
refuse bad resources at ``kubectl apply`` with a message that names the offending field.

Each invalid case is checked by the API server itself (structural schema, CEL), never by our
Python models, so this proves what a platform team will see.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmroute_operator.devcluster.kubectl import Kubectl

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> Kubectl:
    kubectl.apply_crds(ROOT / "crds")
    # The aggregated OpenAPI (what kubectl explain reads) is published a moment after Established.
    deadline = time.monotonic() + 30
    while kubectl.run("explain", "llmroute.spec", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the CRD schemas never reached the OpenAPI document"
        time.sleep(0.5)
    return kubectl


def test_crds_establish_with_names_and_category(crds: Kubectl) -> None:
    resources = crds.run("api-resources", "--api-group=llmroute.io", "-o", "wide").stdout
    assert "llmroutes" in resources and "llmr" in resources
    assert "llmbudgets" in resources and "llmb" in resources
    assert resources.count("llm") >= 4
    for name in ("llmroutes.llmroute.io", "llmbudgets.llmroute.io"):
        crd = crds.json("get", "crd", name)
        assert crd["spec"]["names"]["categories"] == ["llm"]
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert established[0]["status"] == "True"


def test_explain_reads_like_documentation(crds: Kubectl) -> None:
    backends = crds.run("explain", "llmroute.spec.backends").stdout
    assert "Concrete provider models this route may call." in backends
    assert "credentialsRef" in backends and "contextWindow" in backends
    resilience = crds.run("explain", "llmroute.spec.resilience", "--recursive").stdout
    assert "perAttempt" in resilience and "circuitBreaker" in resilience
    timeout = crds.run("explain", "llmroute.spec.resilience.timeout.perAttempt").stdout
    assert "Limit for one upstream attempt" in timeout
    budget = crds.run("explain", "llmbudget.spec.onSoftLimit").stdout
    assert "downgrade" in budget.lower()
    batch_api = " ".join(crds.run("explain", "llmroute.spec.backends.batchApi").stdout.split())  # unwrapped
    assert "Anthropic Message Batches" in batch_api and "off: always live calls" in batch_api
    discount = " ".join(
        crds.run("explain", "llmroute.spec.backends.pricing.batchDiscountPercent").stdout.split()
    )
    assert "defaults to 50" in discount


def test_every_example_applies_with_server_dry_run(crds: Kubectl) -> None:
    # Namespaces must exist for a dry run of the objects in them; Namespace objects are harmless.
    crds.run("apply", "-f", str(ROOT / "examples" / "namespaces.yaml"))
    out = crds.run("apply", "--dry-run=server", "-f", str(ROOT / "examples")).stdout
    for kind_name in (
        "llmroute.llmroute.io/chat",
        "llmroute.llmroute.io/eu-chat",
        "llmroute.llmroute.io/assistant",
        "llmroute.llmroute.io/summarizer-ab",
        "llmbudget.llmroute.io/chat-monthly",
        "secret/openai",
    ):
        assert kind_name in out, out


def test_get_llm_lists_both_kinds_with_printer_columns(crds: Kubectl, namespace: str) -> None:
    route = _valid_route()
    budget = _valid_budget()
    crds.run(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [route, budget]}),
    )
    table = crds.run("get", "llm", "-n", namespace).stdout
    lines = table.splitlines()
    route_header = next(line for line in lines if line.startswith("NAME") and "MODELS" in line)
    for column in ("MODELS", "BACKENDS", "SYNCED", "READY", "AGE"):
        assert column in route_header
    budget_header = next(line for line in lines if line.startswith("NAME") and "LIMIT" in line)
    for column in ("LIMIT", "SPENT", "REMAINING", "FORECAST", "STATE", "AGE"):
        assert column in budget_header
    # MODELS/BACKENDS/SYNCED/READY come from status (a printer column shows only the first item of a
    # list, so the operator writes them as text); write the status the operator would.
    status = {
        "models": "chat",
        "backends": "a,b",
        "sidecars": {"matched": 3, "synced": 2, "summary": "2/3"},
        "conditions": [
            {
                "type": "Programmed",
                "status": "False",
                "reason": "SidecarsSyncing",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    crds.run(
        "patch",
        "llmroute",
        "r1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    crds.run(
        "patch",
        "llmbudget",
        "b1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"spent": "12.5", "remaining": "87.5", "forecast": "40", "state": "Normal"}}),
    )
    lines = crds.run("get", "llm", "-n", namespace).stdout.splitlines()
    route_row = next(line.split() for line in lines if line.startswith("llmroute.llmroute.io/r1"))
    assert route_row[1:5] == ["chat", "a,b", "2/3", "False"], lines
    budget_row = next(line.split() for line in lines if line.startswith("llmbudget.llmroute.io/b1"))
    assert budget_row[1:6] == ["100", "12.5", "87.5", "40", "Normal"], lines
    # Server-side defaults land, so `-o yaml` shows the effective values.
    stored = crds.json("get", "llmroute", "r1", "-n", namespace)
    assert stored["spec"]["models"][0]["strategy"] == "fallback"
    assert stored["spec"]["backends"][0]["capabilities"]["tools"] is True
    # spec and status are separate: a spec apply does not wipe status.
    crds.run("apply", "-n", namespace, "-f", "-", input=json.dumps(route))
    assert "2/3" in crds.run("get", "llmr", "r1", "-n", namespace).stdout


def _valid_route() -> dict[str, Any]:
    return {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "r1"},
        "spec": {
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
        },
    }


def _valid_budget() -> dict[str, Any]:
    return {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "b1"},
        "spec": {
            "scope": {"routes": ["r1"]},
            "period": {"type": "daily"},
            "limits": {"soft": "80", "hard": "100"},
        },
    }


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``doc`` with ``path`` (dots, [i] for list items) set to ``value``."""
    doc = copy.deepcopy(doc)
    node: Any = doc
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return doc


_DELETE = object()
_TWO_OPENAI = [
    {"name": "a", "provider": "openai", "model": "m", "credentialsRef": {"name": "s"}},
    {"name": "a", "provider": "openai", "model": "m", "credentialsRef": {"name": "s"}},
]

# (id, resource, what the API server's message must contain: the field and the reason)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    # CEL rules on LLMRoute
    (
        "split-weights-sum",
        _set(
            _valid_route(),
            "spec.models[0]",
            {
                "name": "chat",
                "strategy": "weighted",
                "split": [{"backend": "a", "weight": 60}, {"backend": "b", "weight": 30}],
            },
        ),
        ["spec.models[0].split", "weights must sum to 100"],
    ),
    (
        "weighted-needs-split",
        _set(_valid_route(), "spec.models[0].strategy", "weighted"),
        ["spec.models[0].strategy", "split is required"],
    ),
    (
        "model-without-backends",
        _set(_valid_route(), "spec.models[0]", {"name": "chat"}),
        ["spec.models[0]", "at least one backend"],
    ),
    (
        "unknown-backend-in-model",
        _set(_valid_route(), "spec.models[0].backends", ["a", "ghost"]),
        ["spec.models", "may only name backends declared in spec.backends"],
    ),
    (
        "unknown-backend-in-split",
        _set(_valid_route(), "spec.models[0].split", [{"backend": "ghost", "weight": 100}]),
        ["spec.models", "split[].backend may only name backends"],
    ),
    (
        "unknown-backend-in-rule",
        _set(_valid_route(), "spec.rules", [{"match": {"task": "code"}, "backends": ["ghost"]}]),
        ["spec.rules", "may only name backends declared"],
    ),
    (
        "unknown-model-in-rule",
        _set(_valid_route(), "spec.rules", [{"model": "nope", "match": {"task": "code"}, "backends": ["a"]}]),
        ["spec.rules", "model may only name a model"],
    ),
    (
        "empty-rule-match",
        _set(_valid_route(), "spec.rules", [{"match": {}, "backends": ["a"]}]),
        ["spec.rules[0].match", "at least one of task"],
    ),
    (
        "duplicate-backend-names",
        _set(_set(_valid_route(), "spec.backends", _TWO_OPENAI), "spec.models[0].backends", ["a"]),
        ["spec.backends", "name must be unique"],
    ),
    (
        "duplicate-model-names",
        _set(
            _valid_route(),
            "spec.models",
            [{"name": "x", "backends": ["a"]}, {"name": "x", "backends": ["b"]}],
        ),
        ["spec.models", "name must be unique"],
    ),
    (
        "per-attempt-above-total",
        _set(_valid_route(), "spec.resilience", {"timeout": {"perAttempt": "90s", "total": "1m"}}),
        ["spec.resilience.timeout.perAttempt", "must not exceed"],
    ),
    (
        "backoff-base-above-max",
        _set(_valid_route(), "spec.resilience", {"retries": {"backoff": {"base": "10s", "max": "2s"}}}),
        ["spec.resilience.retries.backoff.base", "must not exceed"],
    ),
    (
        "thresholds-out-of-order",
        _set(_valid_route(), "spec.models[0].complexity", {"thresholds": {"small": 0.8, "medium": 0.4}}),
        ["spec.models[0].complexity.thresholds.small", "must be below"],
    ),
    (
        "missing-credentials",
        _set(_valid_route(), "spec.backends[0].credentialsRef", _DELETE),
        ["spec.backends[0].credentialsRef", "required for this provider"],
    ),
    (
        "azure-without-endpoint",
        _set(_valid_route(), "spec.backends[0].provider", "azure-openai"),
        ["spec.backends[0].endpoint", "required for azure-openai"],
    ),
    (
        "batch-discount-on-a-provider-without-batch-api",
        _set(
            _valid_route(),
            "spec.backends[1].pricing",
            {"inputPerMillion": 1, "outputPerMillion": 1, "batchDiscountPercent": 50},
        ),
        [
            "spec.backends[1].pricing.batchDiscountPercent",
            "applies only to openai, azure-openai and anthropic",
        ],
    ),
    (
        "batch-discount-above-100",
        _set(
            _valid_route(),
            "spec.backends[0].pricing",
            {"inputPerMillion": 1, "outputPerMillion": 1, "batchDiscountPercent": 150},
        ),
        ["spec.backends[0].pricing.batchDiscountPercent", "less than or equal to 100"],
    ),
    (
        "enum-batch-api",
        _set(_valid_route(), "spec.backends[0].batchApi", "always"),
        ["spec.backends[0].batchApi", "Unsupported value"],
    ),
    (
        "empty-rate-limit",
        _set(_valid_route(), "spec.rateLimits", [{"key": "user"}]),
        ["spec.rateLimits[0]", "requestsPerMinute or tokensPerMinute"],
    ),
    (
        "unknown-embedding-backend",
        _set(_valid_route(), "spec.cache", {"semantic": {"embeddingBackend": "ghost"}}),
        ["spec.cache", "embeddingBackend must name a backend"],
    ),
    (
        "memory-summarize-without-summarizer",
        _set(_valid_route(), "spec.memory", {"overflow": "summarize"}),
        ["spec.memory", "summarizer is required"],
    ),
    (
        "abuse-window-not-shorter-than-baseline",
        _set(_valid_route(), "spec.abuse", {"window": "1h", "baseline": "30m"}),
        ["spec.abuse", "window must be shorter than abuse.baseline"],
    ),
    (
        "memory-unknown-summarizer",
        _set(_valid_route(), "spec.memory", {"overflow": "summarize", "summarizer": "ghost"}),
        ["spec.memory", "summarizer must name a model"],
    ),
    # Structural schema on LLMRoute: enums, bounds, patterns, required fields, types, unknown fields
    (
        "enum-strategy",
        _set(_valid_route(), "spec.models[0].strategy", "random"),
        ["spec.models[0].strategy", "Unsupported value", "fallback"],
    ),
    (
        "enum-provider",
        _set(_valid_route(), "spec.backends[0].provider", "openia"),
        ["spec.backends[0].provider", "Unsupported value"],
    ),
    (
        "bound-weight",
        _set(_valid_route(), "spec.models[0].split", [{"backend": "a", "weight": 150}]),
        ["spec.models[0].split[0].weight", "less than or equal to 100"],
    ),
    (
        "bound-failure-rate",
        _set(_valid_route(), "spec.resilience", {"circuitBreaker": {"failureRate": 1.5}}),
        ["spec.resilience.circuitBreaker.failureRate", "less than or equal to 1"],
    ),
    (
        "bound-threshold",
        _set(_valid_route(), "spec.models[0].complexity", {"thresholds": {"small": -0.1}}),
        ["spec.models[0].complexity.thresholds.small", "greater than or equal to 0"],
    ),
    (
        "bound-context-window",
        _set(_valid_route(), "spec.backends[0].contextWindow", 0),
        ["spec.backends[0].contextWindow", "greater than or equal to 1"],
    ),
    (
        "pattern-duration",
        _set(_valid_route(), "spec.resilience", {"timeout": {"perAttempt": "thirty seconds"}}),
        ["spec.resilience.timeout.perAttempt", "should match"],
    ),
    (
        "pattern-backend-name",
        _set(_valid_route(), "spec.backends[1].name", "Bad_Name"),
        ["spec.backends[1].name", "should match"],
    ),
    (
        "missing-backend-model",
        _set(_valid_route(), "spec.backends[0].model", _DELETE),
        ["spec.backends[0].model", "Required value"],
    ),
    ("missing-models", _set(_valid_route(), "spec.models", _DELETE), ["spec.models", "Required value"]),
    (
        "wrong-type-context-window",
        _set(_valid_route(), "spec.backends[0].contextWindow", "big"),
        ["spec.backends[0].contextWindow", "Invalid value", "integer"],
    ),
    ("wrong-type-backends", _set(_valid_route(), "spec.backends", "gpt4o"), ["spec.backends", "array"]),
    # LLMBudget: CEL and structural
    (
        "soft-above-hard",
        _set(_valid_budget(), "spec.limits", {"soft": "900", "hard": "100"}),
        ["spec.limits.soft", "must not exceed spec.limits.hard"],
    ),
    (
        "hard-zero",
        _set(_valid_budget(), "spec.limits", {"hard": "0"}),
        ["spec.limits.hard", "must be positive"],
    ),
    ("money-negative", _set(_valid_budget(), "spec.limits.hard", "-5"), ["spec.limits.hard", "should match"]),
    (
        "scope-two-kinds",
        _set(_valid_budget(), "spec.scope", {"routes": ["r1"], "tenant": "acme"}),
        ["spec.scope", "exactly one of routes"],
    ),
    ("scope-empty", _set(_valid_budget(), "spec.scope", {}), ["spec.scope", "exactly one of routes"]),
    (
        "soft-action-needs-soft",
        _set(
            _set(_valid_budget(), "spec.limits", {"hard": "10"}), "spec.onSoftLimit", {"downgradeTo": "small"}
        ),
        ["spec.onSoftLimit", "needs spec.limits.soft"],
    ),
    (
        "ladder-unsorted",
        _set(
            _valid_budget(),
            "spec.onSoftLimit",
            {
                "downgradeTo": "medium",
                "ladder": [
                    {"atPercent": 95, "downgradeTo": "small"},
                    {"atPercent": 90, "downgradeTo": "tiny"},
                ],
            },
        ),
        ["spec.onSoftLimit.ladder", "must increase"],
    ),
    (
        "enum-period",
        _set(_valid_budget(), "spec.period.type", "hourly"),
        ["spec.period.type", "Unsupported value"],
    ),
    (
        "bound-alert",
        _set(_valid_budget(), "spec.alerts", [50, 120]),
        ["spec.alerts[1]", "less than or equal to 100"],
    ),
    ("missing-limits", _set(_valid_budget(), "spec.limits", _DELETE), ["spec.limits", "Required value"]),
]


@pytest.mark.parametrize(
    ("resource", "expected"), [(r, e) for _, r, e in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_resource_is_refused_naming_the_field(
    crds: Kubectl, namespace: str, resource: dict[str, Any], expected: list[str]
) -> None:
    result = crds.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource), check=False)
    assert result.returncode != 0, f"the API server accepted an invalid resource:\n{result.stdout}"
    for fragment in expected:
        assert fragment in result.stderr, f"{fragment!r} missing from the refusal:\n{result.stderr}"


def test_the_valid_baselines_are_accepted(crds: Kubectl, namespace: str) -> None:
    """Each invalid case differs from an accepted resource by the one mistake it names."""
    for doc in (_valid_route(), _valid_budget()):
        crds.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))

"""What the watch handlers do to the cluster index (``handlers/routes.py``, ``budgets.py``,
``secrets.py``): only accepted routes reach it, deletions and missing Secrets take routes out, budgets
are judged against the routes of their namespace. No kopf, no cluster."""

from __future__ import annotations

import base64
from typing import Any

from llmroute_operator.handlers.budgets import BudgetBook
from llmroute_operator.handlers.routes import RouteBook
from llmroute_operator.handlers.secrets import decode_secret, is_indexed_secret
from llmroute_operator.index import ClusterIndex


def _route(generation: int = 1, *, secret: str = "openai") -> dict[str, Any]:
    return {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1", "generation": generation},
        "spec": {
            "models": [{"name": "chat", "backends": ["big", "small"]}],
            "backends": [
                {
                    "name": "big",
                    "provider": "openai",
                    "model": "gpt-4o",
                    "credentialsRef": {"name": secret},
                    "pricing": {"inputPerMillion": 2.5, "outputPerMillion": 10},
                    "tier": "large",
                },
                {
                    "name": "small",
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "credentialsRef": {"name": secret},
                    "pricing": {"inputPerMillion": 0.15, "outputPerMillion": 0.6},
                    "tier": "small",
                },
            ],
        },
    }


def _budget(target: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "b", "namespace": "ns", "uid": "b1", "generation": 1},
        "spec": {
            "scope": {"routes": ["chat"]},
            "period": {"type": "daily"},
            "limits": {"soft": "1", "hard": "2"},
            "onSoftLimit": {"downgradeTo": target},
        },
    }


def test_only_accepted_routes_reach_the_index() -> None:
    index = ClusterIndex()
    changes: list[str] = []
    index.subscribe(changes.append)
    marked: list[tuple[str, str]] = []
    book = RouteBook(index=index, on_change=lambda ns, name: marked.append((ns, name)))

    book.observe(_route())
    assert index.route("ns", "chat") is None  # its Secret is missing
    assert book.entry("ns", "chat").problems[0].reason == "SecretNotFound"  # type: ignore[union-attr]
    assert marked == [("ns", "chat")]

    index.put_secret("ns", "openai", {"apiKey": "sk"})
    book.secrets_changed("ns", "openai")
    assert index.route("ns", "chat") is not None

    index.put_secret("ns", "openai", None)
    book.secrets_changed("ns", "openai")
    assert index.route("ns", "chat") is None


def test_status_echoes_do_not_touch_the_index_and_deletion_removes() -> None:
    index = ClusterIndex()
    index.put_secret("ns", "openai", {"apiKey": "sk"})
    book = RouteBook(index=index)
    book.observe(_route())
    revision = index.view("ns").revision
    echoed = {**_route(), "status": {"observedGeneration": 1}}
    book.observe(echoed)
    assert index.view("ns").revision == revision
    assert book.entry("ns", "chat").status == {"observedGeneration": 1}  # type: ignore[union-attr]

    book.observe(_route(generation=2))
    assert index.route("ns", "chat").metadata["generation"] == 2  # type: ignore[union-attr]
    book.forget("ns", "chat")
    assert index.route("ns", "chat") is None and book.entry("ns", "chat") is None


def test_budget_problems_follow_the_routes_of_the_namespace() -> None:
    index = ClusterIndex()
    routes = RouteBook(index=index)
    budgets = BudgetBook(index=index, routes=routes)
    budgets.observe(_budget("large"))
    assert budgets.entry("ns", "b").problems == []  # type: ignore[union-attr]  # no route yet
    assert [b.metadata["name"] for b in index.view("ns").budgets] == ["b"]
    routes.observe(_route())
    assert [p.reason for p in budgets.entry("ns", "b").problems] == ["DowngradeNotCheaper"]  # type: ignore[union-attr]
    budgets.forget("ns", "b")
    assert index.view("ns").budgets == ()


def test_secret_filter_and_decoding() -> None:
    assert is_indexed_secret({"type": "Opaque"}) and is_indexed_secret({})
    assert not is_indexed_secret({"type": "kubernetes.io/service-account-token"})
    encoded = base64.b64encode(b"sk-1").decode()
    binary = base64.b64encode(b"\xff\xfe").decode()
    assert decode_secret({"data": {"apiKey": encoded, "blob": binary}}) == {"apiKey": "sk-1"}

"""The compiler turns the examples into RouterConfigs deterministically, selects routes by pod
labels, resolves credentials, and reports problems per route instead of failing whole."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from llmroute_proto.api.loader import Resources, SecretData, load_paths
from llmroute_proto.compiler import compile_config, config_version
from llmroute_proto.v1 import config_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def _examples() -> Resources:
    return load_paths([ROOT / "examples"], environ={})


def test_examples_compile_for_the_chatbot_pod() -> None:
    res = _examples()
    result = compile_config(
        namespace="team-a",
        routes=res.routes,
        secrets=res.secrets,
        budgets=res.budgets,
        pod_labels={"app": "chatbot"},
    )
    assert result.problems == {}
    assert result.included == ["team-a/chat"]
    route = result.config.routes[0]
    assert [m.name for m in route.models] == ["chat", "embed"]
    assert route.models[0].backends[:2] == ["gpt4o-us", "claude-us"]
    assert route.resilience.timeout.per_attempt.seconds == 20
    assert route.resilience.retries.budget_fraction == 0.2
    bedrock = next(b for b in route.backends if b.provider == pb.PROVIDER_BEDROCK)
    assert bedrock.WhichOneof("options") == "bedrock"
    assert bedrock.bedrock.aws_region == "us-east-1"
    creds = {c.id: c for c in result.config.credentials}
    assert creds["openai/apiKey"].api_key.key == "sk-placeholder-replace-me"
    assert creds["bedrock"].aws.access_key_id == "AKIAPLACEHOLDER"
    assert [b.name for b in result.config.budgets] == [
        "chat-monthly",
        "tenant-acme-daily",
        "user-trial-daily",
    ]


def test_the_memory_example_compiles_its_memory_and_abuse_policies() -> None:
    res = _examples()
    result = compile_config(
        namespace="team-a", routes=res.routes, secrets=res.secrets, budgets=[], pod_labels={"app": "support"}
    )
    assert result.problems == {}
    (route,) = [r for r in result.config.routes if r.name == "support-memory"]
    assert route.memory.ttl.seconds == 24 * 3600
    assert route.memory.max_tokens_per_tenant == 2_000_000
    assert route.memory.overflow == pb.MEMORY_OVERFLOW_SUMMARIZE
    assert route.memory.summarizer == "summarizer"
    assert (
        not route.abuse.by_tenant
        and route.abuse.window.seconds == 60
        and route.abuse.block_for.seconds == 900
    )
    assert (
        route.abuse.spike_factor == 10
        and route.abuse.min_requests == 30
        and route.abuse.max_policy_blocks == 5
    )
    assert route.abuse.min_cost_micro_usd == 5_000_000  # the default, in micro-USD


def test_no_labels_means_every_route_of_the_namespace() -> None:
    res = _examples()
    result = compile_config(namespace="team-a", routes=res.routes, secrets=res.secrets)
    assert result.included == ["team-a/assistant", "team-a/chat", "team-a/summarizer-ab"]
    eu = compile_config(namespace="team-eu", routes=res.routes, secrets=res.secrets)
    assert eu.included == ["team-eu/eu-chat"]
    assert list(eu.config.routes[0].regions.allowed) == ["westeurope", "eu-central-1", "eu-west-1"]


def test_match_expressions_select() -> None:
    res = _examples()
    canary = compile_config(
        namespace="team-a", routes=res.routes, secrets=res.secrets, pod_labels={"app": "assistant-canary"}
    )
    assert canary.included == ["team-a/assistant"]
    none = compile_config(
        namespace="team-a", routes=res.routes, secrets=res.secrets, pod_labels={"app": "other"}
    )
    assert none.included == []
    assert none.config.routes == []


def test_same_inputs_same_bytes_and_version() -> None:
    res = _examples()
    first = compile_config(
        namespace="team-a",
        routes=res.routes,
        secrets=res.secrets,
        generated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    second = compile_config(namespace="team-a", routes=list(reversed(res.routes)), secrets=res.secrets)
    assert first.config.version == second.config.version
    assert first.config.version == config_version(first.config)
    assert first.config.version.startswith("sha256:")
    rotated = [
        SecretData(s.namespace, s.name, {**s.data, "apiKey": "sk-rotated"}) if s.name == "openai" else s
        for s in res.secrets
    ]
    third = compile_config(namespace="team-a", routes=res.routes, secrets=rotated)
    assert third.config.version != first.config.version, "a rotated key must produce a new version"


def test_missing_secret_drops_only_that_route() -> None:
    res = _examples()
    secrets = [s for s in res.secrets if s.name != "google"]
    result = compile_config(namespace="team-a", routes=res.routes, secrets=secrets)
    assert "team-a/chat" in result.problems
    assert any("Secret 'google' not found" in p for p in result.problems["team-a/chat"])
    assert "team-a/summarizer-ab" in result.included


def test_a_logical_model_claimed_twice_is_a_problem() -> None:
    res = _examples()
    chat = next(r for r in res.routes if r.metadata["name"] == "chat")
    clone = chat.model_copy(update={"metadata": {**chat.metadata, "name": "chat-copy"}})
    result = compile_config(namespace="team-a", routes=[chat, clone], secrets=res.secrets)
    assert result.included == ["team-a/chat"]
    assert "already served by route team-a/chat" in result.problems["team-a/chat-copy"][0]


def test_provider_batch_apis_are_on_where_the_sidecar_has_one_unless_opted_out() -> None:
    res = _examples()
    chat = next(r for r in res.routes if r.metadata["name"] == "chat")
    as_written = {
        b.name: b
        for b in compile_config(namespace="team-a", routes=[chat], secrets=res.secrets)
        .config.routes[0]
        .backends
    }
    assert as_written["gpt4o-us"].batch_api == pb.BATCH_API_PROVIDER
    assert as_written["gpt4o-us"].pricing.batch_discount_percent == 50.0
    assert as_written["claude-us"].batch_api == pb.BATCH_API_OFF  # batchApi: "off" in the example
    backends = list(chat.spec.backends)
    openai_index = next(i for i, b in enumerate(backends) if b.provider == "openai")
    pricing = backends[openai_index].pricing
    assert pricing is not None
    backends[openai_index] = backends[openai_index].model_copy(
        update={"pricing": pricing.model_copy(update={"batch_discount_percent": 40.0})}
    )
    anthropic_index = next(i for i, b in enumerate(backends) if b.provider == "anthropic")
    backends[anthropic_index] = backends[anthropic_index].model_copy(update={"batch_api": "auto"})
    route = chat.model_copy(update={"spec": chat.spec.model_copy(update={"backends": backends})})
    result = compile_config(namespace="team-a", routes=[route], secrets=res.secrets)
    assert result.problems == {}
    compiled = {b.name: b for b in result.config.routes[0].backends}
    gpt = compiled[backends[openai_index].name]
    assert gpt.batch_api == pb.BATCH_API_PROVIDER and gpt.pricing.batch_discount_percent == 40.0
    claude = compiled[backends[anthropic_index].name]
    assert (
        claude.batch_api == pb.BATCH_API_PROVIDER and claude.pricing.batch_discount_percent == 50.0
    )  # default
    for backend in compiled.values():
        if backend.provider in (
            pb.PROVIDER_BEDROCK,
            pb.PROVIDER_GOOGLE,
            pb.PROVIDER_COHERE,
            pb.PROVIDER_OPENAI_COMPATIBLE,
        ):
            assert backend.batch_api == pb.BATCH_API_OFF and not backend.pricing.HasField(
                "batch_discount_percent"
            )

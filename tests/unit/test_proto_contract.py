"""The protobuf contract (proto/llmroute_proto/v1): fresh generated code, and the shapes others rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from llmroute_proto.v1 import (
    allowance_pb2,
    annotations_pb2,
    config_pb2,
    discovery_pb2,
    peers_pb2,
    router_pb2,
    usage_pb2,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GEN_PROTO = REPO_ROOT / "hack" / "gen_proto.py"
PACKAGE_DIR = REPO_ROOT / "proto" / "llmroute_proto" / "v1"
FILES = (allowance_pb2, annotations_pb2, config_pb2, discovery_pb2, peers_pb2, router_pb2, usage_pb2)


def run_gen_proto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN_PROTO), *args], capture_output=True, text=True, check=False, timeout=120
    )


def all_messages() -> Iterator[descriptor.Descriptor]:
    def walk(message: descriptor.Descriptor) -> Iterator[descriptor.Descriptor]:
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for module in FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(message)


# --- (a) generated code is fresh ----------------------------------------------------------------


def test_committed_generated_code_is_fresh() -> None:
    result = run_gen_proto("--check")
    assert result.returncode == 0, f"stale generated code:\n{result.stdout}{result.stderr}"


def test_every_proto_file_is_covered_by_these_tests() -> None:
    on_disk = {path.stem for path in PACKAGE_DIR.glob("*.proto")}
    assert on_disk == {module.__name__.rsplit(".", 1)[1].removesuffix("_pb2") for module in FILES}


def test_check_names_stale_missing_and_orphaned_files(tmp_path: Path) -> None:
    copy = tmp_path / "llmroute_proto" / "v1"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "config_pb2.py").write_text("# edited by hand\n")
    (copy / "router_pb2.pyi").unlink()
    (copy / "gone_pb2.py").write_text("# its .proto was deleted\n")

    result = run_gen_proto("--check", "--proto-root", str(tmp_path))

    assert result.returncode == 1
    assert re.search(r"differs\s+\S*config_pb2\.py", result.stderr)
    assert re.search(r"missing\s+\S*router_pb2\.pyi", result.stderr)
    assert re.search(r"orphaned\s+\S*gone_pb2\.py", result.stderr)
    assert "make proto" in result.stderr

    # Regenerating repairs all three, and the check passes again.
    assert run_gen_proto("--proto-root", str(tmp_path)).returncode == 0
    assert not (copy / "gone_pb2.py").exists()
    assert run_gen_proto("--check", "--proto-root", str(tmp_path)).returncode == 0


# --- documentation: every declaration has a comment ---------------------------------------------

# Messages, enums, services, oneofs, extensions, rpcs, fields (`type name = N`) and enum values (`NAME = N`).
DECLARATION = re.compile(
    r"^\s*(?:(?:message|enum|service|oneof|extend)\s+[\w.]+\s*\{|rpc\s+\w+"
    r"|[\w.<>, ]+\s+\w+\s*=\s*\d+|[A-Z][A-Z0-9_]*\s*=\s*\d+)"
)


@pytest.mark.parametrize("proto", sorted(PACKAGE_DIR.glob("*.proto")), ids=lambda path: path.name)
def test_every_declaration_is_documented(proto: Path) -> None:
    undocumented = []
    previous = ""
    for number, line in enumerate(proto.read_text().splitlines(), start=1):
        if DECLARATION.match(line) and not previous.startswith("//"):
            undocumented.append(f"{proto.name}:{number}: {line.strip()}")
        if line.strip():
            previous = line.strip()
    assert not undocumented, "declarations without a comment:\n" + "\n".join(undocumented)


# --- (b) round trips and service shapes ---------------------------------------------------------


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def representative_config() -> config_pb2.RouterConfig:
    """A config that sets every kind of field: scalars, enums, maps, oneofs, optionals, durations."""
    return config_pb2.RouterConfig(
        version="sha256:4f2a",
        generated_at=Timestamp(seconds=1_750_000_000, nanos=5),
        namespace="team-a",
        region="eu-west-1",
        routes=[
            config_pb2.Route(
                name="chat",
                namespace="team-a",
                generation=3,
                models=[
                    config_pb2.LogicalModel(
                        name="chat",
                        strategy=config_pb2.STRATEGY_WEIGHTED,
                        backends=["gpt4o-us", "claude-eu", "llama-local"],
                        split=[
                            config_pb2.WeightedBackend(backend="gpt4o-us", weight=90),
                            config_pb2.WeightedBackend(backend="claude-eu", weight=10),
                        ],
                    ),
                    config_pb2.LogicalModel(
                        name="smart",
                        strategy=config_pb2.STRATEGY_COMPLEXITY,
                        backends=["llama-local", "claude-eu"],
                        complexity=config_pb2.ComplexityThresholds(small=0.3, medium=0.7),
                        min_context_window=32_000,
                        context_overflow=config_pb2.CONTEXT_OVERFLOW_POLICY_TRUNCATE_OLDEST,
                    ),
                ],
                rules=[
                    config_pb2.Rule(
                        match=config_pb2.RuleMatch(task="code_generation", headers={"x-team": "infra"}),
                        backends=["gpt4o-us", "claude-eu"],
                    ),
                    config_pb2.Rule(match=config_pb2.RuleMatch(complexity_above=0.0), backends=["claude-eu"]),
                ],
                regions=config_pb2.RegionPolicy(allowed=["eu-west-1", "us-east-1"], prefer_local=True),
                resilience=config_pb2.Resilience(
                    timeout=config_pb2.Timeouts(per_attempt=seconds(30), total=seconds(60)),
                    retries=config_pb2.RetryPolicy(
                        attempts=2,
                        backoff=config_pb2.Backoff(base=seconds(0.2), max=seconds(5)),
                        retry_on=["429", "5xx", "connect", "timeout"],
                        budget_fraction=0.2,
                    ),
                    circuit_breaker=config_pb2.CircuitBreaker(
                        consecutive_failures=5,
                        failure_rate=0.5,
                        window=seconds(30),
                        cooldown=seconds(30),
                        max_ejected_percent=50,
                    ),
                ),
                cache=config_pb2.CachePolicy(
                    exact=config_pb2.ExactCache(ttl=seconds(600)),
                    semantic=config_pb2.SemanticCache(threshold=0.95, embedding_backend="embed-local"),
                ),
                privacy=config_pb2.PrivacyPolicy(
                    pii=config_pb2.PiiPolicy(
                        action=config_pb2.PII_ACTION_REDACT,
                        types=[config_pb2.PII_TYPE_EMAIL, config_pb2.PII_TYPE_IBAN],
                    )
                ),
                rate_limits=[
                    config_pb2.RateLimit(
                        key=config_pb2.RATE_LIMIT_KEY_USER, requests_per_minute=60, tokens_per_minute=100_000
                    )
                ],
                backends=[
                    config_pb2.Backend(
                        name="claude-eu",
                        provider=config_pb2.PROVIDER_BEDROCK,
                        model="anthropic.claude-3-5-sonnet-20240620-v1:0",
                        region="eu-central-1",
                        credential_id="aws-eu",
                        pricing=config_pb2.Pricing(input_per_million=3.0, output_per_million=15.0),
                        context_window=200_000,
                        tier=config_pb2.TIER_LARGE,
                        bedrock=config_pb2.BedrockOptions(aws_region="eu-central-1"),
                    ),
                    config_pb2.Backend(
                        name="gpt4o-us",
                        provider=config_pb2.PROVIDER_AZURE_OPENAI,
                        model="gpt-4o",
                        endpoint="https://example.openai.azure.com",
                        region="us-east-1",
                        credential_id="azure",
                        pricing=config_pb2.Pricing(input_per_million=2.5, output_per_million=10.0),
                        context_window=128_000,
                        tier=config_pb2.TIER_LARGE,
                        max_concurrency=64,
                        azure_openai=config_pb2.AzureOpenAIOptions(
                            api_version="2024-10-21", deployment="gpt4o"
                        ),
                    ),
                    config_pb2.Backend(
                        name="llama-local",
                        provider=config_pb2.PROVIDER_OPENAI_COMPATIBLE,
                        model="llama-3.1-8b",
                        endpoint="http://llama.team-a:8000/v1",
                        region="eu-west-1",
                        tier=config_pb2.TIER_SMALL,
                    ),
                ],
            )
        ],
        credentials=[
            config_pb2.Credential(
                id="aws-eu",
                aws=config_pb2.AwsCredentials(
                    access_key_id="AKIAEXAMPLE", secret_access_key="secret", session_token="token"
                ),
            ),
            config_pb2.Credential(id="azure", api_key=config_pb2.ApiKey(key="sk-test")),
        ],
        budgets=[
            config_pb2.Budget(
                name="chat-daily",
                state=config_pb2.BUDGET_STATE_SOFT_LIMITED,
                downgrade_tier=config_pb2.TIER_SMALL,
                scope=config_pb2.BudgetScope(routes=["chat"]),
                period_start=Timestamp(seconds=1_749_945_600),
                period_end=Timestamp(seconds=1_750_032_000),
                requires_allowance=True,
            ),
            config_pb2.Budget(
                name="acme",
                state=config_pb2.BUDGET_STATE_NORMAL,
                downgrade_backend="llama-local",
                scope=config_pb2.BudgetScope(tenants=["acme"]),
            ),
        ],
    )


def test_router_config_round_trips() -> None:
    config = representative_config()
    parsed = config_pb2.RouterConfig.FromString(config.SerializeToString())
    assert parsed == config
    assert parsed.routes[0].rules[1].match.HasField("complexity_above")  # 0.0 survives as "set"
    assert not parsed.routes[0].rules[0].match.HasField("complexity_above")
    assert parsed.routes[0].backends[0].WhichOneof("options") == "bedrock"
    assert parsed.budgets[1].WhichOneof("downgrade_to") == "downgrade_backend"
    assert parsed.routes[0].resilience.retries.backoff.base.ToMilliseconds() == 200


def test_deterministic_serialization_ignores_map_insertion_order() -> None:
    """The config version is a hash of the deterministic serialization: map order must not matter."""
    first, second = representative_config(), representative_config()
    first.routes[0].rules[0].match.headers.clear()
    first.routes[0].rules[0].match.headers.update({"a": "1", "b": "2"})
    second.routes[0].rules[0].match.headers.clear()
    second.routes[0].rules[0].match.headers.update({"b": "2", "a": "1"})
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)


def test_router_service_shape() -> None:
    service = router_pb2.DESCRIPTOR.services_by_name["Router"]
    assert service.full_name == "llmroute.v1.Router"
    shapes = {
        method.name: (
            method.input_type.name,
            method.output_type.name,
            method.client_streaming,
            method.server_streaming,
        )
        for method in service.methods
    }
    assert shapes == {
        "Chat": ("ChatRequest", "ChatResponse", False, False),
        "ChatStream": ("ChatRequest", "ChatChunk", False, True),
        "Embed": ("EmbedRequest", "EmbedResponse", False, False),
        "ListModels": ("ListModelsRequest", "ListModelsResponse", False, False),
    }


@pytest.mark.parametrize(
    ("file", "service", "method"),
    [
        (discovery_pb2.DESCRIPTOR, "ConfigDiscovery", "StreamConfig"),
        (usage_pb2.DESCRIPTOR, "UsageReporting", "ReportUsage"),
    ],
)
def test_control_streams_are_bidirectional(
    file: descriptor.FileDescriptor, service: str, method: str
) -> None:
    methods = file.services_by_name[service].methods_by_name
    assert set(methods) == {method}
    assert methods[method].client_streaming
    assert methods[method].server_streaming


def test_allowance_service_shape() -> None:
    methods = allowance_pb2.DESCRIPTOR.services_by_name["Allowances"].methods_by_name
    assert {name: method.output_type.name for name, method in methods.items()} == {
        "Lease": "LeaseGrant",
        "Renew": "LeaseGrant",
        "Return": "ReturnResponse",
    }
    assert not any(method.client_streaming or method.server_streaming for method in methods.values())


def test_discovery_messages_round_trip() -> None:
    response = discovery_pb2.ConfigResponse(
        version_info="sha256:4f2a", nonce="n-1", config=representative_config()
    )
    assert discovery_pb2.ConfigResponse.FromString(response.SerializeToString()) == response
    nack = discovery_pb2.ConfigRequest(
        node=discovery_pb2.Node(id="sc-1", pod_name="chatbot-0", namespace="team-a", region="eu-west-1"),
        version_info="sha256:0001",
        response_nonce="n-1",
        error_detail=discovery_pb2.ErrorDetail(code=3, message="backend 'x' unknown"),
    )
    parsed = discovery_pb2.ConfigRequest.FromString(nack.SerializeToString())
    assert parsed.HasField("error_detail")  # presence is what marks a NACK
    assert not discovery_pb2.ConfigRequest(version_info="v").HasField("error_detail")


def test_usage_and_chat_messages_round_trip() -> None:
    batch = usage_pb2.UsageBatch(
        sidecar_id="sc-1",
        sequence=7,
        records=[
            usage_pb2.UsageRecord(
                request_id="r-1",
                route="chat",
                logical_model="chat",
                backend="gpt4o-us",
                provider=config_pb2.PROVIDER_AZURE_OPENAI,
                user_sha256="ab" * 32,
                input_tokens=1200,
                output_tokens=300,
                cost_micro_usd=6000,
                outcome=usage_pb2.USAGE_OUTCOME_SUCCESS,
                cache=config_pb2.CACHE_STATUS_MISS,
                started_at=Timestamp(seconds=1_750_000_000),
                latency=seconds(0.8),
            )
        ],
    )
    assert usage_pb2.UsageBatch.FromString(batch.SerializeToString()) == batch

    request = router_pb2.ChatRequest(
        model="chat",
        messages=[
            router_pb2.ChatMessage(role=router_pb2.ROLE_SYSTEM, content="Be brief."),
            router_pb2.ChatMessage(
                role=router_pb2.ROLE_USER,
                content_parts=[
                    router_pb2.ContentPart(text="What is this?"),
                    router_pb2.ContentPart(
                        image_data=router_pb2.ImageData(data=b"\x89PNG", media_type="image/png")
                    ),
                ],
            ),
            router_pb2.ChatMessage(
                role=router_pb2.ROLE_ASSISTANT,
                tool_calls=[
                    router_pb2.ToolCall(
                        id="call-1", function=router_pb2.FunctionCall(name="lookup", arguments='{"q": 1}')
                    )
                ],
            ),
        ],
        tools=[
            router_pb2.Tool(
                function=router_pb2.FunctionDefinition(name="lookup", parameters_json='{"type": "object"}')
            )
        ],
        tool_choice=router_pb2.ToolChoice(mode=router_pb2.TOOL_CHOICE_MODE_AUTO),
        temperature=0.0,
        routing=router_pb2.RoutingHints(task="code_generation", tenant="acme", no_cache=True),
    )
    parsed = router_pb2.ChatRequest.FromString(request.SerializeToString())
    assert parsed == request
    assert parsed.HasField("temperature")  # 0.0 was sent, and is not "unset"
    assert not parsed.HasField("top_p")
    assert not parsed.messages[2].HasField("content")  # null content: a tool-calls-only turn


# --- (c) no Kubernetes types, and secrets are marked ----------------------------------------------

KUBERNETES_TYPE_NAMES = {
    "ObjectMeta",
    "TypeMeta",
    "ListMeta",
    "OwnerReference",
    "LabelSelector",
    "Condition",
    "Secret",
    "SecretKeySelector",
    "ConfigMap",
    "Pod",
    "PodSpec",
    "Namespace",
    "ServiceAccount",
    "LLMRoute",
    "LLMBudget",
}


def test_no_kubernetes_types_leak_in() -> None:
    names = {message.name for message in all_messages()}
    assert not names & KUBERNETES_TYPE_NAMES
    for message in all_messages():
        assert message.full_name.startswith("llmroute.v1."), message.full_name
        for field in message.fields:
            if field.message_type is not None:
                package = field.message_type.full_name.rsplit(".", 1)[0]
                assert (
                    package in {"llmroute.v1", "google.protobuf"} or field.message_type.GetOptions().map_entry
                )


def test_dependencies_are_only_well_known_types_and_our_own() -> None:
    allowed = re.compile(
        r"google/protobuf/(duration|timestamp|descriptor)\.proto|llmroute_proto/v1/\w+\.proto"
    )
    for module in FILES:
        for dependency in module.DESCRIPTOR.dependencies:
            assert allowed.fullmatch(dependency.name), f"{module.__name__} imports {dependency.name}"


def test_secret_fields_are_marked_sensitive() -> None:
    """The sidecar's /config_dump redacts fields by this option; these and only these are secret."""
    sensitive = {
        field.full_name
        for message in all_messages()
        for field in message.fields
        if field.GetOptions().Extensions[annotations_pb2.sensitive]
    }
    assert sensitive == {
        "llmroute.v1.ApiKey.key",
        "llmroute.v1.AwsCredentials.access_key_id",
        "llmroute.v1.AwsCredentials.secret_access_key",
        "llmroute.v1.AwsCredentials.session_token",
    }

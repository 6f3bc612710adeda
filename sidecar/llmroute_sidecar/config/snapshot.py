"""A validated, indexed view of one ``RouterConfig``: what the request path reads.

:func:`build_snapshot` checks a config before the sidecar swaps to it (every reference resolves, every
provider is known, every credential exists) and raises :class:`ConfigError` otherwise, so a bad push is
rejected (NACKed) while the last good snapshot keeps serving. Snapshots are immutable; ``store.py``
swaps whole snapshots, so an in-flight request finishes on the one it started with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from llmroute_proto.v1 import config_pb2 as pb

from ..adapters.base import AwsKeys, Target
from ..adapters.registry import PROVIDERS

__all__ = ["BackendEntry", "ConfigError", "ModelEntry", "RoutingFacts", "Snapshot", "build_snapshot"]

_PROVIDER_NAMES = {
    pb.PROVIDER_OPENAI: "openai",
    pb.PROVIDER_AZURE_OPENAI: "azure-openai",
    pb.PROVIDER_ANTHROPIC: "anthropic",
    pb.PROVIDER_GOOGLE: "google",
    pb.PROVIDER_BEDROCK: "bedrock",
    pb.PROVIDER_COHERE: "cohere",
    pb.PROVIDER_OPENAI_COMPATIBLE: "openai-compatible",
}


# Providers whose batch API the sidecar speaks (batch/provider_client.py); the compiler only asks for
# these, and a config that asks for another runs its lines live.
_BATCH_API_PROVIDERS = frozenset({"openai", "azure-openai", "anthropic"})
_DEFAULT_BATCH_DISCOUNT = 50.0


class ConfigError(ValueError):
    """A config the sidecar refuses to run; the message says what is wrong."""


@dataclass(frozen=True)
class BackendEntry:
    """One backend of one route, ready to call."""

    name: str
    route: str
    provider: str
    target: Target
    region: str
    input_per_million: float
    output_per_million: float
    context_window: int
    tier: int
    max_concurrency: int
    capabilities: pb.Capabilities
    cached_input_per_million: float | None = None  # None: cached input tokens cost the input price
    # Batch lines routed here go through the provider's own batch API (batch/), at this discount.
    batch_api: bool = False
    batch_discount_percent: float = 0.0

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1_000_000

    @property
    def free(self) -> bool:
        """Priced 0 (a self-hosted model): it never needs budget allowance."""
        return self.input_per_million <= 0 and self.output_per_million <= 0


@dataclass(frozen=True)
class RoutingFacts:
    """What the planner reads of a model's route on every request, read out of the protobuf once per
    snapshot: a protobuf field access builds a wrapper object each time, and the default candidates'
    residency and capability filters depend on the config alone. ``routing/planner.py`` reads it."""

    route_name: str  # "namespace/name"
    name: str  # the route's name
    namespace: str
    strategy: pb.Strategy.ValueType  # of the model; 0 when unset
    has_rules: bool
    allowed_regions: tuple[str, ...]  # regions.allowed; () means every region
    prefer_local: bool
    in_region: tuple[BackendEntry, ...]  # the model's backends inside allowed_regions, in order
    outside: tuple[BackendEntry, ...]  # the others (residency keeps them out)
    chat: tuple[BackendEntry, ...]  # of in_region: those that serve plain chat
    no_chat: tuple[BackendEntry, ...]
    embeddings: tuple[BackendEntry, ...]  # of in_region: those that serve embeddings
    no_embeddings: tuple[BackendEntry, ...]

    @classmethod
    def of(cls, route: pb.Route, model: pb.LogicalModel, backends: tuple[BackendEntry, ...]) -> RoutingFacts:
        allowed = tuple(route.regions.allowed)
        inside = tuple(b for b in backends if not allowed or b.region in allowed)
        outside = tuple(b for b in backends if allowed and b.region not in allowed)
        return cls(
            route_name=f"{route.namespace}/{route.name}",
            name=route.name,
            namespace=route.namespace,
            strategy=model.strategy,
            has_rules=len(route.rules) > 0,
            allowed_regions=allowed,
            prefer_local=route.regions.prefer_local,
            in_region=inside,
            outside=outside,
            chat=tuple(b for b in inside if b.capabilities.chat),
            no_chat=tuple(b for b in inside if not b.capabilities.chat),
            embeddings=tuple(b for b in inside if b.capabilities.embeddings),
            no_embeddings=tuple(b for b in inside if not b.capabilities.embeddings),
        )


@dataclass(frozen=True)
class ModelEntry:
    """A logical model with its route and the backends it may use, in preference order."""

    name: str
    route: pb.Route
    model: pb.LogicalModel
    backends: tuple[BackendEntry, ...]
    backends_by_name: Mapping[str, BackendEntry]
    facts: RoutingFacts  # what the request path reads of the route, out of the protobuf once


@dataclass(frozen=True)
class Snapshot:
    """The running config and its indexes."""

    config: pb.RouterConfig
    models: Mapping[str, ModelEntry]
    region: str = ""  # config.region, read once (the sidecar's own region when the operator sets it)

    @property
    def version(self) -> str:
        return self.config.version

    def model_names(self) -> list[str]:
        return sorted(self.models)


def build_snapshot(config: pb.RouterConfig) -> Snapshot:
    """Validate ``config`` and index it; raises :class:`ConfigError` naming the first problem."""
    credentials = {c.id: c for c in config.credentials}
    models: dict[str, ModelEntry] = {}
    for route in config.routes:
        where = f"route {route.namespace}/{route.name}"
        backends: dict[str, BackendEntry] = {}
        for backend in route.backends:
            if backend.name in backends:
                raise ConfigError(f"{where}: backend {backend.name!r} is declared twice")
            backends[backend.name] = _backend(backend, route.name, credentials, where)
        for model in route.models:
            if model.name in models:
                raise ConfigError(
                    f"{where}: logical model {model.name!r} is also served by route {models[model.name].route.name}"
                )
            names = list(model.backends) or [s.backend for s in model.split]
            if not names:
                raise ConfigError(f"{where}: model {model.name!r} has no backends")
            missing = [n for n in names if n not in backends]
            if missing:
                raise ConfigError(f"{where}: model {model.name!r} names unknown backends {missing}")
            ordered = tuple(backends[n] for n in names)
            facts = RoutingFacts.of(route, model, ordered)
            models[model.name] = ModelEntry(
                model.name, route, model, ordered, MappingProxyType(backends), facts
            )
        for index, rule in enumerate(route.rules):
            missing = [n for n in rule.backends if n not in backends]
            if missing:
                raise ConfigError(f"{where}: rules[{index}] names unknown backends {missing}")
    return Snapshot(config=config, models=MappingProxyType(models), region=config.region)


def _backend(
    backend: pb.Backend, route: str, credentials: Mapping[str, pb.Credential], where: str
) -> BackendEntry:
    provider = _PROVIDER_NAMES.get(backend.provider)
    if provider is None or provider not in PROVIDERS:
        raise ConfigError(f"{where}: backend {backend.name!r} has an unknown provider ({backend.provider})")
    api_key, aws = "", None
    if backend.credential_id:
        credential = credentials.get(backend.credential_id)
        if credential is None:
            raise ConfigError(
                f"{where}: backend {backend.name!r} needs credential {backend.credential_id!r}, which is missing"
            )
        if credential.WhichOneof("secret") == "aws":
            aws = AwsKeys(
                credential.aws.access_key_id, credential.aws.secret_access_key, credential.aws.session_token
            )
        else:
            api_key = credential.api_key.key
    elif provider not in ("openai-compatible",):
        raise ConfigError(f"{where}: backend {backend.name!r} ({provider}) has no credentials")
    if provider == "bedrock" and aws is None:
        raise ConfigError(f"{where}: backend {backend.name!r} (bedrock) needs AWS credentials")
    if provider in ("azure-openai", "openai-compatible") and not backend.endpoint:
        raise ConfigError(f"{where}: backend {backend.name!r} ({provider}) needs an endpoint")
    target = Target(
        provider=provider,
        model=backend.model,
        endpoint=backend.endpoint,
        region=backend.bedrock.aws_region if backend.HasField("bedrock") else backend.region,
        api_key=api_key,
        aws=aws,
        azure_api_version=backend.azure_openai.api_version or "2024-10-21",
        azure_deployment=backend.azure_openai.deployment,
    )
    caps = (
        backend.capabilities
        if backend.HasField("capabilities")
        else pb.Capabilities(chat=True, tools=True, json_mode=True)
    )
    return BackendEntry(
        name=backend.name,
        route=route,
        provider=provider,
        target=target,
        region=backend.region,
        input_per_million=backend.pricing.input_per_million,
        output_per_million=backend.pricing.output_per_million,
        context_window=backend.context_window,
        tier=backend.tier,
        max_concurrency=backend.max_concurrency,
        capabilities=caps,
        cached_input_per_million=(
            backend.pricing.cached_input_per_million
            if backend.pricing.HasField("cached_input_per_million")
            else None
        ),
        batch_api=backend.batch_api == pb.BATCH_API_PROVIDER and provider in _BATCH_API_PROVIDERS,
        batch_discount_percent=(
            min(100.0, max(0.0, backend.pricing.batch_discount_percent))
            if backend.pricing.HasField("batch_discount_percent")
            else _DEFAULT_BATCH_DISCOUNT
        ),
    )
